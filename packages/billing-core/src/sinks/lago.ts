/**
 * Lago events, batch endpoint.
 *
 * Docs: https://getlago.com/docs/api-reference/events/batch and
 * https://getlago.com/docs/guide/events/ingesting-usage
 *
 * - `POST {endpoint}/api/v1/events/batch`, JSON `{"events": [...]}`, up to 100 events per
 *   request, each `{transaction_id, external_subscription_id, code, timestamp, properties}`
 *   (`timestamp` in Unix seconds). Auth: `Authorization: Bearer <api key>`.
 * - `transaction_id` is Lago's idempotency key: the transfer id. The customer field is
 *   `external_subscription_id` unless `lago.customer_field` says `external_customer_id`.
 * - Lago refuses a batch that holds a transaction id it already stored with
 *   `422 {"code": "validation_errors", "error_details": {"<index>": {"transaction_id":
 *   ["value_already_exist"]}}}` and stores none of the batch (getlago/lago-api#3049, #4772).
 *   Such records are already delivered; the others of the batch are sent again at once, and a
 *   record with any other error detail is refused for good.
 * - The value goes in `properties.<lago.value_property>` (default `value`), a decimal string;
 *   SUM metrics accept negative values (getlago/lago-api#1555), so refunds default to negative.
 *
 * @module
 */
import type { SinkConfig } from "../config.js";
import type { BillableUsage } from "../mapping.js";
import { bearer, classify, forAll, post, unixSeconds, type ItemResult, type Sink } from "./sink.js";

const DUPLICATE = "value_already_exist";

export function createLagoSink(config: SinkConfig): Sink {
  const url = `${config.endpoint}/api/v1/events/batch`;
  const customerField = config.options["customer_field"] ?? "external_subscription_id";
  const valueProperty = config.options["value_property"] ?? "value";
  const headers = { "content-type": "application/json", ...bearer(config) };

  const toEvent = (usage: BillableUsage) => ({
    transaction_id: usage.key,
    [customerField]: usage.customer,
    code: usage.eventName,
    timestamp: unixSeconds(usage.record.occurredAt),
    properties: { ...usage.properties, [valueProperty]: usage.value.toString() },
  });

  return {
    config,
    describe: (usage) => ({ method: "POST", url, event: toEvent(usage) }),
    async send(batch, signal) {
      const outcome = await post(url, headers, JSON.stringify({ events: batch.map(toEvent) }), config.requestTimeoutMs, signal);
      if (outcome.kind === "answer" && outcome.status === 422) {
        const perItem = readErrorDetails(outcome.body, batch.length);
        if (perItem !== null) return perItem;
      }
      const result = classify(outcome);
      if (result.status === "batch_rejected" && batch.length === 1) return [{ ...result, status: "rejected" }];
      return forAll(batch.length, result);
    },
  };
}

/** Per-record results from a 422's `error_details`, or null when it names no record. */
function readErrorDetails(body: string, count: number): ItemResult[] | null {
  let details: unknown;
  try {
    details = (JSON.parse(body) as { error_details?: unknown }).error_details;
  } catch {
    return null;
  }
  if (typeof details !== "object" || details === null) return null;
  const entries = Object.entries(details as Record<string, unknown>).filter(([index]) => /^\d+$/.test(index) && Number(index) < count);
  if (entries.length === 0) return null;
  const results: ItemResult[] = forAll(count, { status: "resend" });
  for (const [index, errors] of entries) {
    results[Number(index)] = isOnlyDuplicate(errors)
      ? { status: "accepted" }
      : { status: "rejected", httpStatus: 422, answer: JSON.stringify(errors) };
  }
  return results;
}

function isOnlyDuplicate(errors: unknown): boolean {
  if (typeof errors !== "object" || errors === null) return false;
  const fields = Object.entries(errors as Record<string, unknown>);
  return fields.length === 1 && fields[0]![0] === "transaction_id" && Array.isArray(fields[0]![1]) && fields[0]![1].every((e) => e === DUPLICATE);
}
