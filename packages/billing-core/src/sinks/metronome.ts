/**
 * Metronome usage ingest.
 *
 * Docs: https://docs.metronome.com/api-reference/usage/ingest-events and
 * https://docs.metronome.com/guides/events/send-usage-events
 *
 * - `POST {endpoint}/v1/ingest` with a JSON array of 1 to 100 events, each
 *   `{transaction_id, customer_id, event_type, timestamp, properties}`; `timestamp` is RFC 3339
 *   and property values are strings ("This prevents the loss of precision"). Auth:
 *   `Authorization: Bearer <token>`.
 * - `transaction_id` is Metronome's idempotency key, deduplicated for 34 days: the transfer
 *   id. A duplicate is accepted and ignored.
 * - `customer_id` is a Metronome customer id or an ingest alias.
 * - Usage is corrected "by passing an event that negates the original usage ... a negative
 *   value" (https://docs.metronome.com/guides/invoices/invoice-optimization/issue-credit-memos),
 *   so refunds default to negative. The value goes in `properties.<metronome.value_property>`
 *   (default `value`).
 *
 * @module
 */
import type { SinkConfig } from "../config.js";
import type { BillableUsage } from "../mapping.js";
import { bearer, classify, forAll, post, rfc3339, type Sink } from "./sink.js";

export function createMetronomeSink(config: SinkConfig): Sink {
  const url = `${config.endpoint}/v1/ingest`;
  const valueProperty = config.options["value_property"] ?? "value";
  const headers = { "content-type": "application/json", ...bearer(config) };

  const toEvent = (usage: BillableUsage) => ({
    transaction_id: usage.key,
    customer_id: usage.customer,
    event_type: usage.eventName,
    timestamp: rfc3339(usage.record.occurredAt),
    properties: { ...usage.properties, [valueProperty]: usage.value.toString() },
  });

  return {
    config,
    describe: (usage) => ({ method: "POST", url, event: toEvent(usage) }),
    async send(batch, signal) {
      const outcome = await post(url, headers, JSON.stringify(batch.map(toEvent)), config.requestTimeoutMs, signal);
      const result = classify(outcome);
      if (result.status === "batch_rejected" && batch.length === 1) return [{ ...result, status: "rejected" }];
      return forAll(batch.length, result);
    },
  };
}
