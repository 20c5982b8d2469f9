/**
 * Typed configuration for every Holdfast process, read from environment variables.
 *
 * Every variable is optional; an empty value counts as unset so that a blank line in a compose
 * file or a Helm value does not turn into a surprising zero. A value that is set but malformed
 * or out of range stops the process at start with an error naming the variable, because a
 * ledger that silently falls back to a default limit is harder to operate than one that refuses
 * to start.
 *
 * | variable | default | meaning |
 * |---|---|---|
 * | `DATABASE_URL` | `postgres://postgres@127.0.0.1:5432/holdfast` | PostgreSQL connection URL (`postgres://` or `postgresql://`). |
 * | `NATS_URL` | `nats://127.0.0.1:4222` | NATS server URL (`nats://`, `tls://`, `ws://` or `wss://`). |
 * | `HOLDFAST_PORT` | `8080` | TCP port for gRPC, gRPC-Web and Connect (HTTP/2 cleartext and HTTP/1.1 on the same port); `0` picks a free port. |
 * | `HOLDFAST_HOST` | `0.0.0.0` | Address to bind. |
 * | `HOLDFAST_CORS_ORIGINS` | empty | Comma-separated browser origins allowed to call the API (`https://app.example.com`); `*` allows any origin; empty allows none. |
 * | `HOLDFAST_READ_MAX_BYTES` | `1048576` (1 MiB) | Largest request message accepted, in bytes. |
 * | `HOLDFAST_MAX_TIMEOUT_MS` | `30000` | Longest deadline a client may ask for; longer ones are refused. |
 * | `HOLDFAST_DEFAULT_TIMEOUT_MS` | `10000` | Deadline applied to unary calls that send none; at most `HOLDFAST_MAX_TIMEOUT_MS`. |
 * | `HOLDFAST_DRAIN_TIMEOUT_MS` | `15000` | How long a stopping process lets in-flight calls finish before closing connections. |
 * | `HOLDFAST_PG_POOL_MAX` | `20` | Most PostgreSQL connections one process opens. |
 * | `HOLDFAST_PG_CONNECT_TIMEOUT_MS` | `5000` | How long to wait for a PostgreSQL connection. |
 * | `HOLDFAST_PG_STATEMENT_TIMEOUT_MS` | `5000` | Server-side limit on one SQL statement. |
 * | `HOLDFAST_MAX_IN_FLIGHT` | `1024` | Most concurrent calls; calls beyond it get RESOURCE_EXHAUSTED (`OVERLOADED`). |
 * | `HOLDFAST_AUTH_CACHE_MS` | `5000` | How long a verified API key is cached; a revoked key stops working within this time. |
 * | `HOLDFAST_IDEMPOTENCY_RETENTION_HOURS` | `24` | How long idempotency records are kept; at least 24. |
 * | `HOLDFAST_DEFAULT_HOLD_TTL_SECONDS` | `300` | Hold lifetime when Reserve sends no `ttl_seconds`. |
 * | `HOLDFAST_STREAM_NAME` | `HOLDFAST_EVENTS` | JetStream stream the ledger publishes events to (created or updated at start). |
 * | `HOLDFAST_STREAM_MAX_AGE_HOURS` | `168` (7 days) | How long the stream keeps events. |
 * | `HOLDFAST_STREAM_DUPLICATE_WINDOW_SECONDS` | `600` | How long the stream drops a re-published event id. |
 * | `HOLDFAST_STREAM_REPLICAS` | `1` | Stream replicas (3 on a NATS cluster). |
 * | `HOLDFAST_GROUP_COMMIT` | `on` | `on` commits the queued commands of one wallet together in one transaction (group commit); `off` runs each alone. |
 * | `HOLDFAST_GROUP_COMMIT_BATCH_MAX` | `64` | Most commands of one wallet in one transaction. |
 * | `HOLDFAST_GROUP_COMMIT_QUEUE_MAX` | `4096` | Most commands waiting for one wallet; more get RESOURCE_EXHAUSTED. |
 * | `LOG_LEVEL` | `info` | One of `fatal`, `error`, `warn`, `info`, `debug`, `trace`, `silent`. |
 *
 * @module
 */

/** The pino log levels a process accepts in `LOG_LEVEL`. */
export const LOG_LEVELS = ["fatal", "error", "warn", "info", "debug", "trace", "silent"] as const;

/** One of {@link LOG_LEVELS}. */
export type LogLevel = (typeof LOG_LEVELS)[number];

/** The configuration of one Holdfast process; see the module comment for each variable. */
export interface Config {
  readonly databaseUrl: string;
  readonly natsUrl: string;
  readonly port: number;
  readonly host: string;
  /** Allowed browser origins, normalised (`https://a.example`); `["*"]` allows any. */
  readonly corsOrigins: readonly string[];
  readonly readMaxBytes: number;
  readonly maxTimeoutMs: number;
  readonly defaultTimeoutMs: number;
  readonly drainTimeoutMs: number;
  readonly pgPoolMax: number;
  readonly pgConnectTimeoutMs: number;
  readonly pgStatementTimeoutMs: number;
  readonly maxInFlight: number;
  readonly authCacheMs: number;
  readonly idempotencyRetentionHours: number;
  readonly defaultHoldTtlSeconds: number;
  readonly streamName: string;
  readonly streamMaxAgeHours: number;
  readonly streamDuplicateWindowSeconds: number;
  readonly streamReplicas: number;
  readonly groupCommit: boolean;
  readonly groupCommitBatchMax: number;
  readonly groupCommitQueueMax: number;
  readonly logLevel: LogLevel;
}

/** The environment shape `loadConfig` reads; `process.env` fits it. */
export type Env = Readonly<Record<string, string | undefined>>;

/** Inclusive bounds and default of one integer setting. */
interface IntegerSpec {
  readonly fallback: number;
  readonly min: number;
  readonly max: number;
}

const MIB = 1024 * 1024;
const HOUR_MS = 60 * 60 * 1000;

// The upper bounds are not tuning advice: they only catch typos (an extra zero, seconds given
// as milliseconds) that would otherwise turn a limit into no limit at all.
const PORT: IntegerSpec = { fallback: 8080, min: 0, max: 65_535 };
const READ_MAX_BYTES: IntegerSpec = { fallback: 1 * MIB, min: 1024, max: 64 * MIB };
const MAX_TIMEOUT_MS: IntegerSpec = { fallback: 30_000, min: 100, max: HOUR_MS };
const DEFAULT_TIMEOUT_MS: IntegerSpec = { fallback: 10_000, min: 100, max: HOUR_MS };
const DRAIN_TIMEOUT_MS: IntegerSpec = { fallback: 15_000, min: 0, max: 10 * 60_000 };
const PG_POOL_MAX: IntegerSpec = { fallback: 20, min: 1, max: 1000 };
const PG_CONNECT_TIMEOUT_MS: IntegerSpec = { fallback: 5000, min: 100, max: 120_000 };
const PG_STATEMENT_TIMEOUT_MS: IntegerSpec = { fallback: 5000, min: 100, max: 10 * 60_000 };
const MAX_IN_FLIGHT: IntegerSpec = { fallback: 1024, min: 1, max: 1_000_000 };
const AUTH_CACHE_MS: IntegerSpec = { fallback: 5000, min: 0, max: 5 * 60_000 };
// DESIGN.md section 2 promises idempotency records live at least 24 hours.
const IDEMPOTENCY_RETENTION_HOURS: IntegerSpec = { fallback: 24, min: 24, max: 24 * 366 };
const DEFAULT_HOLD_TTL_SECONDS: IntegerSpec = { fallback: 300, min: 1, max: 7 * 24 * 3600 };

const STREAM_MAX_AGE_HOURS: IntegerSpec = { fallback: 7 * 24, min: 1, max: 24 * 3660 };
const STREAM_DUPLICATE_WINDOW_SECONDS: IntegerSpec = { fallback: 600, min: 10, max: 24 * 3600 };
const STREAM_REPLICAS: IntegerSpec = { fallback: 1, min: 1, max: 5 };
const GROUP_COMMIT_BATCH_MAX: IntegerSpec = { fallback: 64, min: 1, max: 1000 };
const GROUP_COMMIT_QUEUE_MAX: IntegerSpec = { fallback: 4096, min: 1, max: 1_000_000 };
const STREAM_NAME_PATTERN = /^[A-Za-z0-9_-]{1,64}$/;

const DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/holdfast";
const DEFAULT_NATS_URL = "nats://127.0.0.1:4222";
const DEFAULT_HOST = "0.0.0.0";
const DATABASE_PROTOCOLS = ["postgres:", "postgresql:"];
const NATS_PROTOCOLS = ["nats:", "tls:", "ws:", "wss:"];
const HOST_LENGTH_MAX = 253;
const CORS_ORIGINS_COUNT_MAX = 100;

/**
 * Reads and validates the configuration. Throws an Error naming the first bad variable; the
 * message never repeats a URL's value, since URLs may carry passwords.
 */
export function loadConfig(env: Env = process.env): Config {
  const maxTimeoutMs = readInteger(env, "HOLDFAST_MAX_TIMEOUT_MS", MAX_TIMEOUT_MS);
  const defaultTimeoutMs = readInteger(env, "HOLDFAST_DEFAULT_TIMEOUT_MS", {
    ...DEFAULT_TIMEOUT_MS,
    max: maxTimeoutMs,
  });
  return {
    databaseUrl: readUrl(env, "DATABASE_URL", DEFAULT_DATABASE_URL, DATABASE_PROTOCOLS),
    natsUrl: readUrl(env, "NATS_URL", DEFAULT_NATS_URL, NATS_PROTOCOLS),
    port: readInteger(env, "HOLDFAST_PORT", PORT),
    host: readHost(env, "HOLDFAST_HOST"),
    corsOrigins: readOrigins(env, "HOLDFAST_CORS_ORIGINS"),
    readMaxBytes: readInteger(env, "HOLDFAST_READ_MAX_BYTES", READ_MAX_BYTES),
    maxTimeoutMs,
    defaultTimeoutMs,
    drainTimeoutMs: readInteger(env, "HOLDFAST_DRAIN_TIMEOUT_MS", DRAIN_TIMEOUT_MS),
    pgPoolMax: readInteger(env, "HOLDFAST_PG_POOL_MAX", PG_POOL_MAX),
    pgConnectTimeoutMs: readInteger(env, "HOLDFAST_PG_CONNECT_TIMEOUT_MS", PG_CONNECT_TIMEOUT_MS),
    pgStatementTimeoutMs: readInteger(env, "HOLDFAST_PG_STATEMENT_TIMEOUT_MS", PG_STATEMENT_TIMEOUT_MS),
    maxInFlight: readInteger(env, "HOLDFAST_MAX_IN_FLIGHT", MAX_IN_FLIGHT),
    authCacheMs: readInteger(env, "HOLDFAST_AUTH_CACHE_MS", AUTH_CACHE_MS),
    idempotencyRetentionHours: readInteger(
      env,
      "HOLDFAST_IDEMPOTENCY_RETENTION_HOURS",
      IDEMPOTENCY_RETENTION_HOURS,
    ),
    defaultHoldTtlSeconds: readInteger(env, "HOLDFAST_DEFAULT_HOLD_TTL_SECONDS", DEFAULT_HOLD_TTL_SECONDS),
    streamName: readStreamName(env, "HOLDFAST_STREAM_NAME"),
    streamMaxAgeHours: readInteger(env, "HOLDFAST_STREAM_MAX_AGE_HOURS", STREAM_MAX_AGE_HOURS),
    streamDuplicateWindowSeconds: readInteger(
      env,
      "HOLDFAST_STREAM_DUPLICATE_WINDOW_SECONDS",
      STREAM_DUPLICATE_WINDOW_SECONDS,
    ),
    streamReplicas: readInteger(env, "HOLDFAST_STREAM_REPLICAS", STREAM_REPLICAS),
    groupCommit: readSwitch(env, "HOLDFAST_GROUP_COMMIT", true),
    groupCommitBatchMax: readInteger(env, "HOLDFAST_GROUP_COMMIT_BATCH_MAX", GROUP_COMMIT_BATCH_MAX),
    groupCommitQueueMax: readInteger(env, "HOLDFAST_GROUP_COMMIT_QUEUE_MAX", GROUP_COMMIT_QUEUE_MAX),
    logLevel: readLogLevel(env, "LOG_LEVEL"),
  };
}

function readStreamName(env: Env, name: string): string {
  const value = readRaw(env, name) ?? "HOLDFAST_EVENTS";
  if (!STREAM_NAME_PATTERN.test(value)) {
    throw new Error(`${name} must be 1-64 characters of A-Z, a-z, 0-9, _ or -`);
  }
  return value;
}

/** Returns the trimmed value, or undefined when the variable is unset or blank. */
function readRaw(env: Env, name: string): string | undefined {
  const value = env[name]?.trim();
  return value === undefined || value === "" ? undefined : value;
}

function readInteger(env: Env, name: string, spec: IntegerSpec): number {
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

function readUrl(env: Env, name: string, fallback: string, protocols: readonly string[]): string {
  const raw = readRaw(env, name);
  if (raw === undefined) {
    return fallback;
  }
  if (!URL.canParse(raw) || !protocols.includes(new URL(raw).protocol)) {
    throw new Error(`${name} must be a URL starting with ${protocols.map((p) => `${p}//`).join(" or ")}`);
  }
  return raw;
}

function readHost(env: Env, name: string): string {
  const raw = readRaw(env, name) ?? DEFAULT_HOST;
  if (raw.length > HOST_LENGTH_MAX || !/^[A-Za-z0-9.:_-]+$/.test(raw)) {
    throw new Error(`${name} must be a host name or IP address, got "${raw}"`);
  }
  return raw;
}

function readOrigins(env: Env, name: string): string[] {
  const raw = readRaw(env, name);
  if (raw === undefined) {
    return [];
  }
  const items = raw.split(",").map((item) => item.trim()).filter((item) => item !== "");
  if (items.length > CORS_ORIGINS_COUNT_MAX) {
    throw new Error(`${name} lists ${items.length} origins; at most ${CORS_ORIGINS_COUNT_MAX} are allowed`);
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

function readSwitch(env: Env, name: string, fallback: boolean): boolean {
  const raw = readRaw(env, name);
  if (raw === undefined) {
    return fallback;
  }
  if (raw !== "on" && raw !== "off") {
    throw new Error(`${name} must be on or off`);
  }
  return raw === "on";
}

function readLogLevel(env: Env, name: string): LogLevel {
  const raw = readRaw(env, name) ?? "info";
  const level = LOG_LEVELS.find((candidate) => candidate === raw);
  if (level === undefined) {
    throw new Error(`${name} must be one of ${LOG_LEVELS.join(", ")}, got "${raw}"`);
  }
  return level;
}
