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
 * | `HOLDFAST_BILLING_CONFIG` | unset | Path of the billing-stream worker's sink configuration (JSON, see docs/billing-engines.md); the worker refuses to start without it. |
 * | `HOLDFAST_WEBHOOK_ALLOWED_NETWORKS` | empty | Comma-separated networks (`127.0.0.0/8`, `::1/128`, `10.1.2.3`) where webhook endpoints may be private, loopback or link-local and may use plain http; everywhere else endpoints must be https on public addresses (see docs/webhooks.md). |
 * | `HOLDFAST_WEBHOOK_RETRY_SCHEDULE` | `5s,5m,30m,2h,5h,10h,10h` | Delays before each webhook retry (units `ms`, `s`, `m`, `h`; 1-20 entries, each at most 24h), each with ±20% jitter; attempts = entries + 1. The default spans about 27.6 hours. |
 * | `HOLDFAST_WEBHOOK_TIMEOUT_MS` | `15000` | Longest a webhook request may take, connection to last response byte. |
 * | `HOLDFAST_WEBHOOK_CONCURRENCY` | `64` | Most webhook requests in flight in one worker process. |
 * | `HOLDFAST_WEBHOOK_ENDPOINT_CONCURRENCY` | `4` | Most requests in flight to one endpoint, across all worker replicas. |
 * | `HOLDFAST_WEBHOOK_DISABLE_AFTER_SECONDS` | `432000` (5 days) | An endpoint whose attempts all fail for this long is disabled and a `holdfast.webhook.endpoint_disabled` event is sent. |
 * | `HOLDFAST_WEBHOOK_SECRET_OVERLAP_SECONDS` | `86400` | How long an old webhook secret keeps signing after RotateEndpointSecret (unless the call says otherwise). |
 * | `HOLDFAST_WEBHOOK_RETENTION_HOURS` | `720` (30 days) | How long finished webhook deliveries (succeeded or failed) are kept. |
 *
 * @module
 */
import { isIP } from "node:net";

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
  /** Path of the billing-stream configuration file; null when unset. */
  readonly billingConfigPath: string | null;
  /** Networks where webhook endpoints may be non-public and plain http, normalised CIDRs (`127.0.0.0/8`). */
  readonly webhookAllowedNetworks: readonly string[];
  /** Delay before each webhook retry, in ms; attempts = length + 1. */
  readonly webhookRetryScheduleMs: readonly number[];
  readonly webhookTimeoutMs: number;
  readonly webhookConcurrency: number;
  readonly webhookEndpointConcurrency: number;
  readonly webhookDisableAfterSeconds: number;
  readonly webhookSecretOverlapSeconds: number;
  readonly webhookRetentionHours: number;
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
// docs/architecture.md ("Domain model") promises idempotency records live at least 24 hours.
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
    billingConfigPath: readPath(env, "HOLDFAST_BILLING_CONFIG"),
    webhookAllowedNetworks: readNetworks(env, "HOLDFAST_WEBHOOK_ALLOWED_NETWORKS"),
    webhookRetryScheduleMs: readSchedule(env, "HOLDFAST_WEBHOOK_RETRY_SCHEDULE"),
    webhookTimeoutMs: readInteger(env, "HOLDFAST_WEBHOOK_TIMEOUT_MS", WEBHOOK_TIMEOUT_MS),
    webhookConcurrency: readInteger(env, "HOLDFAST_WEBHOOK_CONCURRENCY", WEBHOOK_CONCURRENCY),
    webhookEndpointConcurrency: readInteger(env, "HOLDFAST_WEBHOOK_ENDPOINT_CONCURRENCY", WEBHOOK_ENDPOINT_CONCURRENCY),
    webhookDisableAfterSeconds: readInteger(env, "HOLDFAST_WEBHOOK_DISABLE_AFTER_SECONDS", WEBHOOK_DISABLE_AFTER_SECONDS),
    webhookSecretOverlapSeconds: readInteger(env, "HOLDFAST_WEBHOOK_SECRET_OVERLAP_SECONDS", WEBHOOK_SECRET_OVERLAP_SECONDS),
    webhookRetentionHours: readInteger(env, "HOLDFAST_WEBHOOK_RETENTION_HOURS", WEBHOOK_RETENTION_HOURS),
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

const PATH_LENGTH_MAX = 4096;

function readPath(env: Env, name: string): string | null {
  const raw = readRaw(env, name);
  if (raw === undefined) {
    return null;
  }
  if (raw.length > PATH_LENGTH_MAX || raw.includes("\0")) {
    throw new Error(`${name} must be a file path of at most ${PATH_LENGTH_MAX} characters`);
  }
  return raw;
}

// Webhooks (workers/webhooks and WebhookService). The schedule's default follows the Standard
// Webhooks reference implementations: quick retries for blips, then hours apart for outages,
// about a day in all.
const WEBHOOK_RETRY_SCHEDULE_DEFAULT = "5s,5m,30m,2h,5h,10h,10h";
const WEBHOOK_RETRY_ENTRIES_MAX = 20;
const WEBHOOK_RETRY_DELAY_MS_MAX = 24 * HOUR_MS;
const WEBHOOK_TIMEOUT_MS: IntegerSpec = { fallback: 15_000, min: 100, max: 120_000 };
const WEBHOOK_CONCURRENCY: IntegerSpec = { fallback: 64, min: 1, max: 10_000 };
const WEBHOOK_ENDPOINT_CONCURRENCY: IntegerSpec = { fallback: 4, min: 1, max: 1000 };
const WEBHOOK_DISABLE_AFTER_SECONDS: IntegerSpec = { fallback: 5 * 24 * 3600, min: 1, max: 366 * 24 * 3600 };
const WEBHOOK_SECRET_OVERLAP_SECONDS: IntegerSpec = { fallback: 24 * 3600, min: 0, max: 7 * 24 * 3600 };
const WEBHOOK_RETENTION_HOURS: IntegerSpec = { fallback: 30 * 24, min: 1, max: 24 * 3660 };
const WEBHOOK_NETWORKS_COUNT_MAX = 100;
const DURATION_UNITS_MS: Readonly<Record<string, number>> = { ms: 1, s: 1000, m: 60_000, h: HOUR_MS };

/** A comma-separated list of CIDRs or bare addresses (a bare address is its own /32 or /128). */
function readNetworks(env: Env, name: string): string[] {
  const raw = readRaw(env, name);
  if (raw === undefined) {
    return [];
  }
  const items = raw.split(",").map((item) => item.trim()).filter((item) => item !== "");
  if (items.length > WEBHOOK_NETWORKS_COUNT_MAX) {
    throw new Error(`${name} lists ${items.length} networks; at most ${WEBHOOK_NETWORKS_COUNT_MAX} are allowed`);
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

/** A comma-separated list of durations such as `5s,5m,2h`, returned in milliseconds. */
function readSchedule(env: Env, name: string): number[] {
  const raw = readRaw(env, name) ?? WEBHOOK_RETRY_SCHEDULE_DEFAULT;
  const items = raw.split(",").map((item) => item.trim());
  if (items.length > WEBHOOK_RETRY_ENTRIES_MAX) {
    throw new Error(`${name} lists ${items.length} delays; at most ${WEBHOOK_RETRY_ENTRIES_MAX} are allowed`);
  }
  return items.map((item) => {
    const match = /^(\d{1,9})(ms|s|m|h)$/.exec(item);
    const ms = match ? Number(match[1]) * DURATION_UNITS_MS[match[2]!]! : Number.NaN;
    if (!(ms >= 1 && ms <= WEBHOOK_RETRY_DELAY_MS_MAX)) {
      throw new Error(`${name} must be a comma-separated list of delays from 1ms to 24h such as 5s,5m,2h, got "${item}"`);
    }
    return ms;
  });
}
