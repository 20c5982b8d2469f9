/**
 * The webhook worker's configuration: the shared settings (packages/common/src/config.ts), the
 * allowed networks it shares with the ledger (packages/webhooks-core/src/settings.ts), and the
 * worker's own variables below.
 *
 * | variable | default | meaning |
 * |---|---|---|
 * | `HOLDFAST_WEBHOOK_RETRY_SCHEDULE` | `5s,5m,30m,2h,5h,10h,10h` | Delays before each webhook retry (units `ms`, `s`, `m`, `h`; 1-20 entries, each at most 24h), each with ±20% jitter; attempts = entries + 1. The default spans about 27.6 hours. |
 * | `HOLDFAST_WEBHOOK_TIMEOUT_MS` | `15000` | Longest a webhook request may take, connection to last response byte. |
 * | `HOLDFAST_WEBHOOK_CONCURRENCY` | `64` | Most webhook requests in flight in one worker process. |
 * | `HOLDFAST_WEBHOOK_ENDPOINT_CONCURRENCY` | `4` | Most requests in flight to one endpoint, across all worker replicas. |
 * | `HOLDFAST_WEBHOOK_DISABLE_AFTER_SECONDS` | `432000` (5 days) | An endpoint whose attempts all fail for this long is disabled and a `holdfast.webhook.endpoint_disabled` event is sent. |
 * | `HOLDFAST_WEBHOOK_RETENTION_HOURS` | `720` (30 days) | How long finished webhook deliveries (succeeded or failed) are kept. |
 * | `HOLDFAST_METRICS_PORT` | unset | Port of the worker's `GET /metrics` (Prometheus) and `GET /healthz`, bound on `HOLDFAST_HOST`; unset or `0` serves none (packages/common/src/metrics.ts). |
 *
 * @module
 */
import { readHostConfig, readStreamProcessConfig, type HostConfig, type StreamProcessConfig } from "@holdfast/common/config";
import { readMetricsPortConfig, type MetricsPortConfig } from "@holdfast/common/metrics";
import { readDurationList, readInteger, type DurationListSpec, type Env, type IntegerSpec } from "@holdfast/common/env";
import { readAllowedNetworks } from "@holdfast/webhooks-core/settings";

// The schedule's default follows the Standard Webhooks reference implementations: quick retries
// for blips, then hours apart for outages, about a day in all.
const RETRY_SCHEDULE: DurationListSpec = { fallback: "5s,5m,30m,2h,5h,10h,10h", countMax: 20, durationMsMax: 24 * 3_600_000 };
const TIMEOUT_MS: IntegerSpec = { fallback: 15_000, min: 100, max: 120_000 };
const CONCURRENCY: IntegerSpec = { fallback: 64, min: 1, max: 10_000 };
const ENDPOINT_CONCURRENCY: IntegerSpec = { fallback: 4, min: 1, max: 1000 };
const DISABLE_AFTER_SECONDS: IntegerSpec = { fallback: 5 * 24 * 3600, min: 1, max: 366 * 24 * 3600 };
const RETENTION_HOURS: IntegerSpec = { fallback: 30 * 24, min: 1, max: 24 * 3660 };

/** How the worker sends: where it may, how often it retries, and how much at once. */
export interface WebhookSettings {
  /** Networks where endpoints may be non-public and plain http, normalised CIDRs (`127.0.0.0/8`). */
  readonly allowedNetworks: readonly string[];
  /** Delay before each retry, in ms; attempts = length + 1. */
  readonly retryScheduleMs: readonly number[];
  readonly timeoutMs: number;
  readonly concurrency: number;
  readonly endpointConcurrency: number;
  readonly disableAfterSeconds: number;
  readonly retentionHours: number;
}

/** Everything the webhook worker reads from its environment. */
export interface WebhookWorkerConfig extends StreamProcessConfig, HostConfig, MetricsPortConfig {
  readonly webhooks: WebhookSettings;
}

/** The HOLDFAST_WEBHOOK_* variables the worker reads. Throws naming the first bad variable. */
export function readWebhookSettings(env: Env): WebhookSettings {
  return {
    allowedNetworks: readAllowedNetworks(env),
    retryScheduleMs: readDurationList(env, "HOLDFAST_WEBHOOK_RETRY_SCHEDULE", RETRY_SCHEDULE),
    timeoutMs: readInteger(env, "HOLDFAST_WEBHOOK_TIMEOUT_MS", TIMEOUT_MS),
    concurrency: readInteger(env, "HOLDFAST_WEBHOOK_CONCURRENCY", CONCURRENCY),
    endpointConcurrency: readInteger(env, "HOLDFAST_WEBHOOK_ENDPOINT_CONCURRENCY", ENDPOINT_CONCURRENCY),
    disableAfterSeconds: readInteger(env, "HOLDFAST_WEBHOOK_DISABLE_AFTER_SECONDS", DISABLE_AFTER_SECONDS),
    retentionHours: readInteger(env, "HOLDFAST_WEBHOOK_RETENTION_HOURS", RETENTION_HOURS),
  };
}

/** Reads and validates the worker's configuration. Throws an Error naming the first bad variable. */
export function loadWebhookWorkerConfig(env: Env = process.env): WebhookWorkerConfig {
  return { ...readStreamProcessConfig(env), ...readHostConfig(env), ...readMetricsPortConfig(env), webhooks: readWebhookSettings(env) };
}
