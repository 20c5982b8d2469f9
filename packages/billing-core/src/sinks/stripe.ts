/**
 * Stripe Billing meter events (API v1).
 *
 * Docs: https://docs.stripe.com/api/billing/meter-event/create and
 * https://docs.stripe.com/billing/subscriptions/usage-based/recording-usage-api
 *
 * - `POST {endpoint}/v1/billing/meter_events`, form-encoded: `event_name`,
 *   `payload[<customer key>]` (default `stripe_customer_id`), `payload[<value key>]` (default
 *   `value`), `identifier`, `timestamp` (Unix seconds; Stripe takes the past 35 days and up to
 *   5 minutes ahead). Auth: `Authorization: Bearer <secret key>`.
 * - `identifier` is the meter event's idempotency key ("uniqueness within a rolling period of
 *   at least 24 hours"): the transfer id. Stripe answers a re-sent identifier with
 *   `400 invalid_request_error` "An event already exists with identifier ..."; that means the
 *   usage is already recorded, so it counts as delivered.
 * - Values are whole numbers and may be negative ("If the overall cycle usage is negative,
 *   Stripe reports the invoice line item usage quantity as 0"), so refunds default to negative.
 * - One event per request; 1000 calls per second in live mode and "one concurrent call per
 *   customer per meter": requests run `concurrency` at a time, and never two at once for the
 *   same (customer, event name).
 *
 * Settings (`"stripe": {...}` in the sink): `api_version` (Stripe-Version header),
 * `customer_key`, `value_key`.
 *
 * @module
 */
import type { SinkConfig } from "../config.js";
import type { BillableUsage } from "../mapping.js";
import { classify, post, unixSeconds, type ItemResult, type Sink } from "./sink.js";

const DUPLICATE_IDENTIFIER = /already exists with identifier/i;

export function createStripeSink(config: SinkConfig): Sink {
  const customerKey = config.options["customer_key"] ?? "stripe_customer_id";
  const valueKey = config.options["value_key"] ?? "value";
  const url = `${config.endpoint}/v1/billing/meter_events`;
  const headers: Record<string, string> = { "content-type": "application/x-www-form-urlencoded" };
  if (config.secret !== null) headers["authorization"] = `Bearer ${config.secret}`;
  if (config.options["api_version"] !== undefined) headers["stripe-version"] = config.options["api_version"];

  function form(usage: BillableUsage): Record<string, string> {
    const fields: Record<string, string> = {
      event_name: usage.eventName,
      identifier: usage.key,
      timestamp: String(unixSeconds(usage.record.occurredAt)),
      [`payload[${customerKey}]`]: usage.customer,
      [`payload[${valueKey}]`]: usage.value.toString(),
    };
    for (const [key, value] of Object.entries(usage.properties)) {
      if (key !== customerKey && key !== valueKey) fields[`payload[${key}]`] = value;
    }
    return fields;
  }

  async function sendOne(usage: BillableUsage, signal: AbortSignal): Promise<ItemResult> {
    const outcome = await post(url, headers, new URLSearchParams(form(usage)).toString(), config.requestTimeoutMs, signal);
    if (outcome.kind === "answer" && outcome.status === 400 && DUPLICATE_IDENTIFIER.test(outcome.body)) {
      return { status: "accepted" };
    }
    const result = classify(outcome);
    // One event per request: a refusal is about this event alone.
    return result.status === "batch_rejected" ? { ...result, status: "rejected" } : result;
  }

  return {
    config,
    describe: (usage) => ({ method: "POST", url, form: form(usage) }),
    async send(batch, signal) {
      const results: ItemResult[] = new Array(batch.length);
      // Events of one (customer, meter) go one after another; different ones run in parallel.
      const lanes = new Map<string, number[]>();
      batch.forEach((usage, index) => {
        const lane = `${usage.customer}\u0000${usage.eventName}`;
        const list = lanes.get(lane) ?? [];
        list.push(index);
        lanes.set(lane, list);
      });
      const queue = [...lanes.values()];
      const workers = Array.from({ length: Math.min(config.concurrency, queue.length) }, async () => {
        for (let lane = queue.shift(); lane !== undefined; lane = queue.shift()) {
          for (const index of lane) results[index] = await sendOne(batch[index]!, signal);
        }
      });
      await Promise.all(workers);
      return results;
    },
  };
}
