/**
 * The billing-stream worker's environment: what packages/billing-core/src/config.ts reads for it
 * (the shared settings and HOLDFAST_BILLING_CONFIG), and the metrics port every worker reads.
 *
 * | variable | default | meaning |
 * |---|---|---|
 * | `HOLDFAST_METRICS_PORT` | unset | Port of the worker's `GET /metrics` (Prometheus) and `GET /healthz`, bound on `HOLDFAST_HOST`; unset or `0` leaves it to the sink file's `metrics_port` (docs/billing-engines.md), and with neither none is served. |
 *
 * @module
 */
import type { Env } from "@holdfast/common/env";
import { readMetricsPortConfig, type MetricsPortConfig } from "@holdfast/common/metrics";
import { loadBillingWorkerConfig, type BillingWorkerConfig } from "@holdfast/billing-core/config";

/** Everything the billing-stream worker reads from its environment. */
export interface BillingStreamConfig extends BillingWorkerConfig, MetricsPortConfig {}

/** Reads and validates the worker's environment. Throws an Error naming the first bad variable. */
export function loadBillingStreamConfig(env: Env = process.env): BillingStreamConfig {
  return { ...loadBillingWorkerConfig(env), ...readMetricsPortConfig(env) };
}
