/**
 * Readers of environment variables, one per kind of value. Each process's config module (the
 * ledger's and each worker's src/config.ts, and packages/billing-core/src/config.ts for the
 * billing-stream worker) declares its own variables with these, so that every variable is
 * parsed the same way and reports a bad value the same way.
 *
 * The rules every reader follows: an empty or blank value counts as unset, so that a blank
 * line in a compose file or a Helm value does not turn into a surprising zero; a value that is
 * set but malformed or out of range throws an Error whose message starts with the variable's
 * name, because a process that silently falls back to a default limit is harder to operate
 * than one that refuses to start. A message never repeats a URL's value, since URLs may carry
 * passwords.
 *
 * @module
 */
import { isIP } from "node:net";

/** The environment shape the readers take; `process.env` fits it. */
export type Env = Readonly<Record<string, string | undefined>>;

/** Inclusive bounds and default of one integer setting. */
export interface IntegerSpec {
  readonly fallback: number;
  readonly min: number;
  readonly max: number;
}

/** The pino log levels a process accepts in `LOG_LEVEL`. */
export const LOG_LEVELS = ["fatal", "error", "warn", "info", "debug", "trace", "silent"] as const;

/** One of {@link LOG_LEVELS}. */
export type LogLevel = (typeof LOG_LEVELS)[number];

/** The log level of a process whose environment names none. */
export const LOG_LEVEL_DEFAULT: LogLevel = "info";
/**
 * The bind address of a process whose environment names none: this host only, so that a
 * development process never offers its cleartext port to the network by accident. The
 * container image sets HOLDFAST_HOST=0.0.0.0 (docs/security.md, "TLS and mTLS").
 */
export const HOST_DEFAULT = "127.0.0.1";

const HOST_LENGTH_MAX = 253;
const ORIGINS_COUNT_MAX = 100;
const PATH_LENGTH_MAX = 4096;
const NETWORKS_COUNT_MAX = 100;
const DURATION_UNITS_MS: Readonly<Record<string, number>> = { h: 3_600_000, m: 60_000, s: 1000, ms: 1 };

/** Returns the trimmed value, or undefined when the variable is unset or blank. */
export function readRaw(env: Env, name: string): string | undefined {
  const value = env[name]?.trim();
  return value === undefined || value === "" ? undefined : value;
}

/** A decimal integer within `spec`'s bounds; `spec.fallback` when unset. */
export function readInteger(env: Env, name: string, spec: IntegerSpec): number {
  const raw = readRaw(env, name);
  if (raw === undefined) {
    return spec.fallback;
  }
  // Only plain decimal digits: Number() would also accept "1e3", "0x10" and " 12 ".
  const value = /^\d{1,16}$/.test(raw) ? Number(raw) : Number.NaN;
  if (!Number.isSafeInteger(value) || value < spec.min || value > spec.max) {
    throw new Error(`${name} must be an integer from ${spec.min} to ${spec.max}, got "${raw}"`);
  }
  return value;
}

/** A URL with one of `protocols` (`"nats:"`); the message never repeats the value. */
export function readUrl(env: Env, name: string, fallback: string, protocols: readonly string[]): string {
  const raw = readRaw(env, name);
  if (raw === undefined) {
    return fallback;
  }
  if (!URL.canParse(raw) || !protocols.includes(new URL(raw).protocol)) {
    throw new Error(`${name} must be a URL starting with ${protocols.map((p) => `${p}//`).join(" or ")}`);
  }
  return raw;
}

/** A host name or IP address to bind. */
export function readHost(env: Env, name: string, fallback = HOST_DEFAULT): string {
  const raw = readRaw(env, name) ?? fallback;
  if (raw.length > HOST_LENGTH_MAX || !/^[A-Za-z0-9.:_-]+$/.test(raw)) {
    throw new Error(`${name} must be a host name or IP address, got "${raw}"`);
  }
  return raw;
}

/** A name matching `pattern`, such as a JetStream stream; `rule` says what the pattern allows. */
export function readName(env: Env, name: string, fallback: string, pattern: RegExp, rule: string): string {
  const value = readRaw(env, name) ?? fallback;
  if (!pattern.test(value)) {
    throw new Error(`${name} must be ${rule}`);
  }
  return value;
}

/**
 * Comma-separated browser origins, normalised (`https://a.example`); `*` allows any origin and
 * an unset variable allows none.
 */
export function readOrigins(env: Env, name: string): string[] {
  const items = readList(env, name);
  if (items.length > ORIGINS_COUNT_MAX) {
    throw new Error(`${name} lists ${items.length} origins; at most ${ORIGINS_COUNT_MAX} are allowed`);
  }
  return items.map((item) => normaliseOrigin(name, item));
}

/** Accepts `*` or a bare origin (scheme, host, optional port) and returns it normalised. */
function normaliseOrigin(name: string, item: string): string {
  if (item === "*") {
    return item;
  }
  const url = URL.canParse(item) ? new URL(item) : undefined;
  const bare = url !== undefined && (url.protocol === "http:" || url.protocol === "https:") &&
    url.pathname === "/" && url.search === "" && url.hash === "" && url.username === "";
  if (url === undefined || !bare) {
    throw new Error(`${name} entries must be "*" or an origin like https://app.example.com, got "${item}"`);
  }
  return url.origin;
}

/** `on` or `off`. */
export function readSwitch(env: Env, name: string, fallback: boolean): boolean {
  const raw = readRaw(env, name);
  if (raw === undefined) {
    return fallback;
  }
  if (raw !== "on" && raw !== "off") {
    throw new Error(`${name} must be on or off`);
  }
  return raw === "on";
}

/** One of {@link LOG_LEVELS}. */
export function readLogLevel(env: Env, name: string, fallback: LogLevel = LOG_LEVEL_DEFAULT): LogLevel {
  const raw = readRaw(env, name) ?? fallback;
  const level = LOG_LEVELS.find((candidate) => candidate === raw);
  if (level === undefined) {
    throw new Error(`${name} must be one of ${LOG_LEVELS.join(", ")}, got "${raw}"`);
  }
  return level;
}

/** A file path; null when unset. */
export function readPath(env: Env, name: string): string | null {
  const raw = readRaw(env, name);
  if (raw === undefined) {
    return null;
  }
  if (raw.length > PATH_LENGTH_MAX || raw.includes("\0")) {
    throw new Error(`${name} must be a file path of at most ${PATH_LENGTH_MAX} characters`);
  }
  return raw;
}

/**
 * Comma-separated networks, CIDRs or bare addresses (a bare address is its own /32 or /128),
 * returned as normalised CIDRs (`127.0.0.0/8`, `10.1.2.3/32`); empty when unset.
 */
export function readNetworks(env: Env, name: string): string[] {
  const items = readList(env, name);
  if (items.length > NETWORKS_COUNT_MAX) {
    throw new Error(`${name} lists ${items.length} networks; at most ${NETWORKS_COUNT_MAX} are allowed`);
  }
  return items.map((item) => {
    const [address = "", prefix, extra] = item.split("/");
    const family = isIP(address);
    const bits = family === 4 ? 32 : 128;
    const length = prefix === undefined ? bits : /^\d{1,3}$/.test(prefix) ? Number(prefix) : Number.NaN;
    if (family === 0 || extra !== undefined || !(length >= 0 && length <= bits)) {
      throw new Error(`${name} entries must be an IP address or a CIDR like 127.0.0.0/8 or ::1/128, got "${item}"`);
    }
    return `${address}/${length}`;
  });
}

/** Bounds and default of a list of durations. */
export interface DurationListSpec {
  /** The list's text when the variable is unset, such as `5s,5m,2h`. */
  readonly fallback: string;
  readonly countMax: number;
  /** The longest entry; the shortest is 1 ms. */
  readonly durationMsMax: number;
}

/** A comma-separated list of durations such as `5s,5m,2h` (units ms, s, m, h), in milliseconds. */
export function readDurationList(env: Env, name: string, spec: DurationListSpec): number[] {
  const raw = readRaw(env, name) ?? spec.fallback;
  const items = raw.split(",").map((item) => item.trim());
  if (items.length > spec.countMax) {
    throw new Error(`${name} lists ${items.length} delays; at most ${spec.countMax} are allowed`);
  }
  return items.map((item) => {
    const match = /^(\d{1,9})(ms|s|m|h)$/.exec(item);
    const ms = match ? Number(match[1]) * DURATION_UNITS_MS[match[2]!]! : Number.NaN;
    if (!(ms >= 1 && ms <= spec.durationMsMax)) {
      throw new Error(`${name} must be a comma-separated list of delays from 1ms to ${formatDuration(spec.durationMsMax)} such as 5s,5m,2h, got "${item}"`);
    }
    return ms;
  });
}

/** A duration in the largest unit that divides it: 86400000 → `24h`. */
function formatDuration(ms: number): string {
  const [unit, size] = Object.entries(DURATION_UNITS_MS).find(([, size]) => ms % size === 0) ?? ["ms", 1];
  return `${ms / size}${unit}`;
}

/** The non-blank items of a comma-separated variable; empty when unset. */
function readList(env: Env, name: string): string[] {
  const raw = readRaw(env, name);
  return raw === undefined ? [] : raw.split(",").map((item) => item.trim()).filter((item) => item !== "");
}
