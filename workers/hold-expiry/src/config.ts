/**
 * The hold-expiry worker's configuration: the shared database, log and host settings
 * (packages/common/src/config.ts) and the metrics port every worker reads. Its loop bounds are
 * constants in main.ts, because they are not worth a knob: a pass is one short statement, and
 * replicas share the work.
 *
 * | variable | default | meaning |
 * |---|---|---|
 * | `HOLDFAST_METRICS_PORT` | unset | Port of the worker's `GET /metrics` (Prometheus) and `GET /healthz`, bound on `HOLDFAST_HOST`; unset or `0` serves none (packages/common/src/metrics.ts). |
 *
 * @module
 */
import {
  readDatabaseConfig,
  readHostConfig,
  readLogConfig,
  type DatabaseConfig,
  type HostConfig,
  type LogConfig,
} from "@holdfast/common/config";
import type { Env } from "@holdfast/common/env";
import { readMetricsPortConfig, type MetricsPortConfig } from "@holdfast/common/metrics";

/** Everything the hold-expiry worker reads from its environment. */
export interface HoldExpiryConfig extends DatabaseConfig, LogConfig, HostConfig, MetricsPortConfig {}

/** Reads and validates the worker's configuration. Throws an Error naming the first bad variable. */
export function loadHoldExpiryConfig(env: Env = process.env): HoldExpiryConfig {
  return { ...readDatabaseConfig(env), ...readLogConfig(env), ...readHostConfig(env), ...readMetricsPortConfig(env) };
}
