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
 * | `HOLDFAST_AUTH_CACHE_MS` | `5000` | How long a verified API key is cached; a revoked key stops working within this time, and its open streams end within twice this time (at least 1 s). |
 * | `HOLDFAST_RATE_LIMIT_KEY_PER_SECOND` | `1000` | Calls per second each API key may make (token bucket, per replica); `0` turns the per-key limit off. A key's own `rate_limit` (CreateApiKey) replaces it. |
 * | `HOLDFAST_RATE_LIMIT_KEY_BURST` | twice the rate | Calls a key may make at once before the rate applies. |
 * | `HOLDFAST_RATE_LIMIT_TENANT_PER_SECOND` | `5000` | Calls per second all keys of one tenant may make together (per replica); `0` turns the per-tenant limit off. |
 * | `HOLDFAST_RATE_LIMIT_TENANT_BURST` | twice the rate | Calls a tenant may make at once before the rate applies. |
 * | `HOLDFAST_TENANT_STREAMS_MAX` | `100` | Most server streams (WatchWallet) one tenant may hold open per replica. |
 * | `HOLDFAST_IDEMPOTENCY_RETENTION_HOURS` | `24` | How long idempotency records are kept; at least 24. |
 * | `HOLDFAST_EVENT_RETENTION_HOURS` | `168` (7 days) | How long published events stay in the outbox (the events table) after they were published; `0` keeps them. Unpublished events are never deleted. |
 * | `HOLDFAST_DEFAULT_HOLD_TTL_SECONDS` | `300` | Hold lifetime when Reserve sends no `ttl_seconds`. |
 * | `HOLDFAST_GROUP_COMMIT` | `on` | `on` commits the queued commands of one wallet together in one transaction (group commit); `off` runs each alone. |
 * | `HOLDFAST_GROUP_COMMIT_BATCH_MAX` | `64` | Most commands of one wallet in one transaction. |
 * | `HOLDFAST_GROUP_COMMIT_QUEUE_MAX` | `4096` | Most commands waiting for one wallet; more get RESOURCE_EXHAUSTED. |
 * | `HOLDFAST_TLS_CERT_FILE` | unset | PEM certificate chain; with `HOLDFAST_TLS_KEY_FILE`, the port serves TLS (ALPN h2 and http/1.1) instead of cleartext. |
 * | `HOLDFAST_TLS_KEY_FILE` | unset | PEM private key of `HOLDFAST_TLS_CERT_FILE`; set both or neither. |
 * | `HOLDFAST_TLS_CLIENT_CA_FILE` | unset | PEM CA certificates; when set, every client must present a certificate they sign (mTLS). Needs the two above. |
 * | `HOLDFAST_TLS_WATCH_INTERVAL_MS` | `10000` | How often the TLS files are checked for changes (they are also reloaded on SIGHUP); `0` turns the check off. |
 * | `HOLDFAST_HTTP2_MAX_CONCURRENT_STREAMS` | `100` | Most concurrent HTTP/2 streams on one connection (1-1000). |
 * | `HOLDFAST_BODY_READ_TIMEOUT_MS` | `30000` | Longest a client may take to send a request body; then the stream is reset (HTTP/2) or answered 408 (HTTP/1.1). |
 * | `HOLDFAST_CONNECTION_BODY_MAX_BYTES` | `8388608` (8 MiB) | Most request-body bytes the calls in progress on one connection may hold; at least `HOLDFAST_READ_MAX_BYTES`. |
 * | `HOLDFAST_MAX_CONNECTIONS_PER_ADDRESS` | `256` | Most open connections from one remote address (raise it behind a proxy that funnels many clients). |
 * | `HOLDFAST_HEALTH_WATCH_MAX` | `256` | Most open `grpc.health.v1.Health/Watch` streams in the process (outside `HOLDFAST_MAX_IN_FLIGHT`). |
 * | `HOLDFAST_HEALTH_WATCH_PER_CONNECTION_MAX` | `8` | Most open health Watch streams on one connection. |
 * | `HOLDFAST_STREAM_MAX_LIFETIME_MS` | `1800000` (30 min) | Longest a server stream (Health.Watch, WatchWallet) stays open; then it ends cleanly and the client reconnects. |
 * | `HOLDFAST_METRICS_TOKEN` | unset | When set (16-256 visible ASCII characters), `GET /metrics` on `HOLDFAST_PORT` answers only `Authorization: Bearer <token>`; unset serves the metrics to every caller (docs/operations.md). |
 *
 * @module
 */
import { readHostConfig, readStreamProcessConfig, type HostConfig, type StreamProcessConfig } from "@holdfast/common/config";
import { readInteger, readOrigins, readPath, readRaw, readSwitch, type Env, type IntegerSpec } from "@holdfast/common/env";
import {
  SERVER_LIMIT_SPECS,
  TLS_WATCH_INTERVAL_MS_DEFAULT,
  TLS_WATCH_INTERVAL_MS_MAX,
  TLS_WATCH_INTERVAL_MS_MIN,
  type ServerLimits,
  type TlsOptions,
} from "@holdfast/common/server";
import type { RateLimit } from "./auth/api-keys.js";
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
// 0 keeps events; otherwise at least an hour, longer than a WatchWallet stream can lag.
const EVENT_RETENTION_HOURS: IntegerSpec = { fallback: 7 * 24, min: 0, max: 24 * 3660 };
const HOLD_TTL_SECONDS_DEFAULT: IntegerSpec = { fallback: 300, min: 1, max: 7 * 24 * 3600 };
const GROUP_COMMIT_BATCH_MAX: IntegerSpec = { fallback: 64, min: 1, max: 1000 };
const GROUP_COMMIT_QUEUE_MAX: IntegerSpec = { fallback: 4096, min: 1, max: 1_000_000 };
// Long enough not to be guessed, short enough for a header; no spaces, so it is one header token.
const METRICS_TOKEN_PATTERN = /^[\x21-\x7e]{16,256}$/;
const RATE_LIMIT_KEY_PER_SECOND: IntegerSpec = { fallback: 1000, min: 0, max: 1_000_000 };
const RATE_LIMIT_TENANT_PER_SECOND: IntegerSpec = { fallback: 5000, min: 0, max: 1_000_000 };
const RATE_LIMIT_BURST_MAX = 1_000_000;
const TENANT_STREAMS_MAX: IntegerSpec = { fallback: 100, min: 1, max: 100_000 };

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
  /** Hours published events are kept in the outbox; 0 keeps them. */
  readonly eventRetentionHours: number;
  readonly defaultHoldTtlSeconds: number;
  readonly groupCommit: boolean;
  readonly groupCommitBatchMax: number;
  readonly groupCommitQueueMax: number;
  /** What WebhookService needs to know about endpoints. */
  readonly webhooks: EndpointSettings;
  /** Transport limits of the RPC server (docs/security.md, "Transport limits"). */
  readonly serverLimits: ServerLimits;
  /** TLS on the port; null serves cleartext (docs/security.md, "TLS and mTLS"). */
  readonly tls: TlsOptions | null;
  /** The bearer token `/metrics` wants; null serves the metrics to every caller. */
  readonly metricsToken: string | null;
  /** Each key's token bucket unless the key has its own; null: no per-key limit (docs/security.md, "Rate limits"). */
  readonly rateLimitKey: RateLimit | null;
  /** Each tenant's token bucket, shared by its keys; null: no per-tenant limit. */
  readonly rateLimitTenant: RateLimit | null;
  /** Most server streams one tenant may hold open in this process. */
  readonly tenantStreamsMax: number;
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
    eventRetentionHours: readInteger(env, "HOLDFAST_EVENT_RETENTION_HOURS", EVENT_RETENTION_HOURS),
    defaultHoldTtlSeconds: readInteger(env, "HOLDFAST_DEFAULT_HOLD_TTL_SECONDS", HOLD_TTL_SECONDS_DEFAULT),
    groupCommit: readSwitch(env, "HOLDFAST_GROUP_COMMIT", true),
    groupCommitBatchMax: readInteger(env, "HOLDFAST_GROUP_COMMIT_BATCH_MAX", GROUP_COMMIT_BATCH_MAX),
    groupCommitQueueMax: readInteger(env, "HOLDFAST_GROUP_COMMIT_QUEUE_MAX", GROUP_COMMIT_QUEUE_MAX),
    webhooks: readEndpointSettings(env),
    serverLimits: readServerLimits(env),
    tls: readTls(env),
    metricsToken: readMetricsToken(env),
    rateLimitKey: readRateLimit(env, "HOLDFAST_RATE_LIMIT_KEY", RATE_LIMIT_KEY_PER_SECOND),
    rateLimitTenant: readRateLimit(env, "HOLDFAST_RATE_LIMIT_TENANT", RATE_LIMIT_TENANT_PER_SECOND),
    tenantStreamsMax: readInteger(env, "HOLDFAST_TENANT_STREAMS_MAX", TENANT_STREAMS_MAX),
  };
}

/** `<prefix>_PER_SECOND` and `<prefix>_BURST` (twice the rate by default); a rate of 0 is no limit. */
function readRateLimit(env: Env, prefix: string, perSecondSpec: IntegerSpec): RateLimit | null {
  const perSecond = readInteger(env, `${prefix}_PER_SECOND`, perSecondSpec);
  if (perSecond === 0) {
    return null;
  }
  const burst = readInteger(env, `${prefix}_BURST`, { fallback: Math.min(2 * perSecond, RATE_LIMIT_BURST_MAX), min: 1, max: RATE_LIMIT_BURST_MAX });
  return { perSecond, burst };
}

/** HOLDFAST_METRICS_TOKEN, or null when unset. */
function readMetricsToken(env: Env): string | null {
  const token = readRaw(env, "HOLDFAST_METRICS_TOKEN");
  if (token === undefined) return null;
  if (!METRICS_TOKEN_PATTERN.test(token)) {
    throw new Error("HOLDFAST_METRICS_TOKEN must be 16-256 visible ASCII characters (no spaces)");
  }
  return token;
}

/** The server's transport limits; their defaults and bounds are the server's own. */
function readServerLimits(env: Env): ServerLimits {
  const readMaxBytes = readInteger(env, "HOLDFAST_READ_MAX_BYTES", READ_BYTES_MAX);
  return {
    http2StreamsPerConnectionMax: readInteger(env, "HOLDFAST_HTTP2_MAX_CONCURRENT_STREAMS", SERVER_LIMIT_SPECS.http2StreamsPerConnectionMax),
    bodyReadTimeoutMs: readInteger(env, "HOLDFAST_BODY_READ_TIMEOUT_MS", SERVER_LIMIT_SPECS.bodyReadTimeoutMs),
    connectionBodyBytesMax: readInteger(env, "HOLDFAST_CONNECTION_BODY_MAX_BYTES", {
      ...SERVER_LIMIT_SPECS.connectionBodyBytesMax,
      min: Math.max(SERVER_LIMIT_SPECS.connectionBodyBytesMax.min, readMaxBytes),
    }),
    connectionsPerAddressMax: readInteger(env, "HOLDFAST_MAX_CONNECTIONS_PER_ADDRESS", SERVER_LIMIT_SPECS.connectionsPerAddressMax),
    healthWatchersMax: readInteger(env, "HOLDFAST_HEALTH_WATCH_MAX", SERVER_LIMIT_SPECS.healthWatchersMax),
    healthWatchersPerConnectionMax: readInteger(env, "HOLDFAST_HEALTH_WATCH_PER_CONNECTION_MAX", SERVER_LIMIT_SPECS.healthWatchersPerConnectionMax),
    streamLifetimeMsMax: readInteger(env, "HOLDFAST_STREAM_MAX_LIFETIME_MS", SERVER_LIMIT_SPECS.streamLifetimeMsMax),
  };
}

/** TLS when both the certificate and the key are given; a half-given setting is refused. */
function readTls(env: Env): TlsOptions | null {
  const certFile = readPath(env, "HOLDFAST_TLS_CERT_FILE");
  const keyFile = readPath(env, "HOLDFAST_TLS_KEY_FILE");
  const clientCaFile = readPath(env, "HOLDFAST_TLS_CLIENT_CA_FILE");
  if (certFile === null || keyFile === null) {
    if (certFile !== null || keyFile !== null || clientCaFile !== null) {
      const missing = certFile === null ? "HOLDFAST_TLS_CERT_FILE" : "HOLDFAST_TLS_KEY_FILE";
      throw new Error(`${missing} must be set too: TLS needs both HOLDFAST_TLS_CERT_FILE and HOLDFAST_TLS_KEY_FILE`);
    }
    return null;
  }
  const watchIntervalMs = readInteger(env, "HOLDFAST_TLS_WATCH_INTERVAL_MS", {
    fallback: TLS_WATCH_INTERVAL_MS_DEFAULT,
    min: 0,
    max: TLS_WATCH_INTERVAL_MS_MAX,
  });
  if (watchIntervalMs !== 0 && watchIntervalMs < TLS_WATCH_INTERVAL_MS_MIN) {
    throw new Error(`HOLDFAST_TLS_WATCH_INTERVAL_MS must be 0 or from ${TLS_WATCH_INTERVAL_MS_MIN} to ${TLS_WATCH_INTERVAL_MS_MAX}`);
  }
  return { certFile, keyFile, clientCaFile, watchIntervalMs };
}
