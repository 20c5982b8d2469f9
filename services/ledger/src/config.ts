/**
 * The ledger process's configuration: the shared settings (packages/common/src/config.ts), the
 * webhook endpoint settings WebhookService shares with the webhook worker
 * (packages/webhooks-core/src/settings.ts), and the ledger's own variables below.
 *
 * | variable | default | meaning |
 * |---|---|---|
 * | `HOLDFAST_PORT` | `8080` | TCP port for gRPC, gRPC-Web and Connect (HTTP/2 cleartext and HTTP/1.1 on the same port); `0` picks a free port. |
 * | `HOLDFAST_CORS_ORIGINS` | empty | Comma-separated browser origins allowed to call the API (`https://app.example.com`); `*` allows any origin; empty allows none. |
 * | `HOLDFAST_READ_MAX_BYTES` | `1048576` (1 MiB) | Largest request message accepted, in bytes. |
 * | `HOLDFAST_MAX_TIMEOUT_MS` | `30000` | Longest deadline a client may ask for; longer ones are refused. |
 * | `HOLDFAST_DEFAULT_TIMEOUT_MS` | `10000` | Deadline applied to unary calls that send none; at most `HOLDFAST_MAX_TIMEOUT_MS`. |
 * | `HOLDFAST_DRAIN_TIMEOUT_MS` | `15000` | How long a stopping ledger lets in-flight calls finish before closing connections. |
 * | `HOLDFAST_MAX_IN_FLIGHT` | `1024` | Most concurrent calls; calls beyond it get RESOURCE_EXHAUSTED (`OVERLOADED`). |
 * | `HOLDFAST_AUTH_CACHE_MS` | `5000` | How long a verified API key is cached; a revoked key stops working within this time. |
 * | `HOLDFAST_IDEMPOTENCY_RETENTION_HOURS` | `24` | How long idempotency records are kept; at least 24. |
 * | `HOLDFAST_DEFAULT_HOLD_TTL_SECONDS` | `300` | Hold lifetime when Reserve sends no `ttl_seconds`. |
 * | `HOLDFAST_GROUP_COMMIT` | `on` | `on` commits the queued commands of one wallet together in one transaction (group commit); `off` runs each alone. |
 * | `HOLDFAST_GROUP_COMMIT_BATCH_MAX` | `64` | Most commands of one wallet in one transaction. |
 * | `HOLDFAST_GROUP_COMMIT_QUEUE_MAX` | `4096` | Most commands waiting for one wallet; more get RESOURCE_EXHAUSTED. |
 *
 * @module
 */
import { readHostConfig, readStreamProcessConfig, type HostConfig, type StreamProcessConfig } from "@holdfast/common/config";
import { readInteger, readOrigins, readSwitch, type Env, type IntegerSpec } from "@holdfast/common/env";
import { readEndpointSettings, type EndpointSettings } from "@holdfast/webhooks-core/settings";

const MIB = 1024 * 1024;
const HOUR_MS = 60 * 60 * 1000;

// The upper bounds are not tuning advice: they only catch typos (an extra zero, seconds given
// as milliseconds) that would otherwise turn a limit into no limit at all.
const PORT: IntegerSpec = { fallback: 8080, min: 0, max: 65_535 };
const READ_BYTES_MAX: IntegerSpec = { fallback: 1 * MIB, min: 1024, max: 64 * MIB };
const TIMEOUT_MS_MAX: IntegerSpec = { fallback: 30_000, min: 100, max: HOUR_MS };
const TIMEOUT_MS_DEFAULT: IntegerSpec = { fallback: 10_000, min: 100, max: HOUR_MS };
const DRAIN_TIMEOUT_MS: IntegerSpec = { fallback: 15_000, min: 0, max: 10 * 60_000 };
const IN_FLIGHT_MAX: IntegerSpec = { fallback: 1024, min: 1, max: 1_000_000 };
const AUTH_CACHE_MS: IntegerSpec = { fallback: 5000, min: 0, max: 5 * 60_000 };
// docs/architecture.md ("Domain model") promises idempotency records live at least 24 hours.
const IDEMPOTENCY_RETENTION_HOURS: IntegerSpec = { fallback: 24, min: 24, max: 24 * 366 };
const HOLD_TTL_SECONDS_DEFAULT: IntegerSpec = { fallback: 300, min: 1, max: 7 * 24 * 3600 };
const GROUP_COMMIT_BATCH_MAX: IntegerSpec = { fallback: 64, min: 1, max: 1000 };
const GROUP_COMMIT_QUEUE_MAX: IntegerSpec = { fallback: 4096, min: 1, max: 1_000_000 };

/** Everything the ledger process reads from its environment. */
export interface LedgerConfig extends StreamProcessConfig, HostConfig {
  readonly port: number;
  /** Allowed browser origins, normalised (`https://a.example`); `["*"]` allows any. */
  readonly corsOrigins: readonly string[];
  readonly readMaxBytes: number;
  readonly maxTimeoutMs: number;
  readonly defaultTimeoutMs: number;
  readonly drainTimeoutMs: number;
  readonly maxInFlight: number;
  readonly authCacheMs: number;
  readonly idempotencyRetentionHours: number;
  readonly defaultHoldTtlSeconds: number;
  readonly groupCommit: boolean;
  readonly groupCommitBatchMax: number;
  readonly groupCommitQueueMax: number;
  /** What WebhookService needs to know about endpoints. */
  readonly webhooks: EndpointSettings;
}

/**
 * Reads and validates the ledger's configuration. Throws an Error naming the first bad
 * variable; main.ts turns it into one line and exit code 2.
 */
export function loadLedgerConfig(env: Env = process.env): LedgerConfig {
  const maxTimeoutMs = readInteger(env, "HOLDFAST_MAX_TIMEOUT_MS", TIMEOUT_MS_MAX);
  return {
    ...readStreamProcessConfig(env),
    ...readHostConfig(env),
    port: readInteger(env, "HOLDFAST_PORT", PORT),
    corsOrigins: readOrigins(env, "HOLDFAST_CORS_ORIGINS"),
    readMaxBytes: readInteger(env, "HOLDFAST_READ_MAX_BYTES", READ_BYTES_MAX),
    maxTimeoutMs,
    defaultTimeoutMs: readInteger(env, "HOLDFAST_DEFAULT_TIMEOUT_MS", { ...TIMEOUT_MS_DEFAULT, max: maxTimeoutMs }),
    drainTimeoutMs: readInteger(env, "HOLDFAST_DRAIN_TIMEOUT_MS", DRAIN_TIMEOUT_MS),
    maxInFlight: readInteger(env, "HOLDFAST_MAX_IN_FLIGHT", IN_FLIGHT_MAX),
    authCacheMs: readInteger(env, "HOLDFAST_AUTH_CACHE_MS", AUTH_CACHE_MS),
    idempotencyRetentionHours: readInteger(env, "HOLDFAST_IDEMPOTENCY_RETENTION_HOURS", IDEMPOTENCY_RETENTION_HOURS),
    defaultHoldTtlSeconds: readInteger(env, "HOLDFAST_DEFAULT_HOLD_TTL_SECONDS", HOLD_TTL_SECONDS_DEFAULT),
    groupCommit: readSwitch(env, "HOLDFAST_GROUP_COMMIT", true),
    groupCommitBatchMax: readInteger(env, "HOLDFAST_GROUP_COMMIT_BATCH_MAX", GROUP_COMMIT_BATCH_MAX),
    groupCommitQueueMax: readInteger(env, "HOLDFAST_GROUP_COMMIT_QUEUE_MAX", GROUP_COMMIT_QUEUE_MAX),
    webhooks: readEndpointSettings(env),
  };
}
