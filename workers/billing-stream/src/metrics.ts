/**
 * The billing-stream worker's Prometheus metrics: every sink's counters under the names the
 * worker has always served (`holdfast_billing_sent_total{sink}` and the rest, see
 * docs/billing-engines.md), the events it set aside for unknown tenants, and the process
 * metrics. docs/operations.md lists them.
 *
 * @module
 */
import type { SinkMetrics } from "@holdfast/billing-core/metrics";
import { Counter, Gauge, labelledCounterOf, type Registry } from "@holdfast/common/metrics";
import type { BillingWorker } from "./worker.js";

/** Each per-sink figure: its field, whether it only grows, its name and its help. */
const SINK_FIGURES: readonly [keyof SinkMetrics, "counter" | "gauge", string, string][] = [
  ["sent", "counter", "holdfast_billing_sent_total", "Usage records accepted by the billing engine"],
  ["retried", "counter", "holdfast_billing_retried_total", "Usage records sent again after a transient failure"],
  ["deadLettered", "counter", "holdfast_billing_dead_lettered_total", "Usage records refused for good and dead-lettered"],
  ["skipped", "counter", "holdfast_billing_skipped_total", "Events not routed to the sink"],
  ["failed", "counter", "holdfast_billing_failed_total", "Usage records returned to JetStream after exhausting retries"],
  ["lagMs", "gauge", "holdfast_billing_lag_ms", "Age in milliseconds of the newest usage record delivered"],
  ["pending", "gauge", "holdfast_billing_pending", "Events waiting in the sink's JetStream consumer"],
  ["ackPending", "gauge", "holdfast_billing_ack_pending", "Events delivered to the worker and not yet settled"],
];

/** Registers the worker's metrics in `registry`; the consumer figures are refreshed per scrape. */
export function registerBillingMetrics(registry: Registry, worker: BillingWorker): void {
  for (const [field, type, name, help] of SINK_FIGURES) {
    const read = (metric: Counter<"sink"> | Gauge<"sink">): void => {
      for (const [sink, figures] of worker.metrics) {
        if (metric instanceof Counter) metric.inc({ sink }, figures[field]);
        else metric.set({ sink }, figures[field]);
      }
    };
    const spec = { name, help, labelNames: ["sink"] as const, registers: [registry] };
    if (type === "counter") {
      new Counter({ ...spec, collect() { this.reset(); read(this); } });
    } else {
      new Gauge({ ...spec, collect() { read(this); } });
    }
  }
  labelledCounterOf(
    registry,
    { name: "holdfast_events_unattributed_total", help: "Events of tenants this deployment's database does not know, set aside", labelNames: ["consumer"] },
    () => [...worker.unknownTenantEvents()].map(([sink, count]) => [{ consumer: `billing:${sink}` }, count]),
  );
}
