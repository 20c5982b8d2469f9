/**
 * Two sinks that speak CloudEvents JSON: OpenMeter, and a generic HTTP endpoint.
 *
 * OpenMeter — docs: https://openmeter.io/docs/concepts/usage-events and
 * https://openmeter.io/docs/metering/events/overview
 * - `POST {endpoint}/api/v1/events` with `Content-Type: application/cloudevents-batch+json`
 *   and a JSON array of CloudEvents (`specversion`, `id`, `source`, `type`, `subject`, `time`,
 *   `data`). `type` matches a meter's event type, `subject` is the customer, and the meter's
 *   value property reads `data` (`data.value` here, a decimal string so int64 survives).
 *   Auth: `Authorization: Bearer <token>` (OpenMeter Cloud; a self-hosted instance may need
 *   none).
 * - OpenMeter deduplicates on `id` + `source`: `id` is the transfer id and `source` a stable
 *   per-tenant URI (`/holdfast/tenants/<tenant_id>` unless the sink's `openmeter.source`
 *   template says otherwise), so a re-send is dropped.
 * - SUM meters add negative values, so refunds default to negative.
 *
 * Generic HTTP — the CloudEvents JSON batch format
 * (https://github.com/cloudevents/spec/blob/v1.0.2/cloudevents/formats/json-format.md#4-json-batch-format)
 * in structured mode over HTTP
 * (https://github.com/cloudevents/spec/blob/v1.0.2/cloudevents/bindings/http-protocol-binding.md#33-batched-content-mode):
 * `POST {endpoint}` with `Content-Type: application/cloudevents-batch+json`; each event's `id`
 * is the transfer id (the receiver's dedupe key) and `data` carries the whole usage record.
 * Auth: `Authorization: Bearer <secret>` when `secret_env` is set, or the header named by
 * `http.auth_header` with the secret as its whole value.
 *
 * @module
 */
import type { SinkConfig } from "../config.js";
import type { BillableUsage } from "../mapping.js";
import { bearer, classify, forAll, post, rfc3339, type Sink } from "./sink.js";

const BATCH_CONTENT_TYPE = "application/cloudevents-batch+json";

function source(config: SinkConfig, usage: BillableUsage): string {
  return (config.options["source"] ?? "/holdfast/tenants/{tenant_id}").replaceAll("{tenant_id}", usage.record.tenantId);
}

/** A usage record as a CloudEvent whose `data` is `data`: the attributes both sinks share. */
function cloudEvent(config: SinkConfig, usage: BillableUsage, data: object) {
  return {
    specversion: "1.0",
    id: usage.key,
    source: source(config, usage),
    type: usage.eventName,
    subject: usage.customer,
    time: rfc3339(usage.record.occurredAt),
    datacontenttype: "application/json",
    data,
  };
}

function openMeterEvent(config: SinkConfig, usage: BillableUsage) {
  const valueProperty = config.options["value_property"] ?? "value";
  return cloudEvent(config, usage, { ...usage.properties, [valueProperty]: usage.value.toString() });
}

function httpEvent(config: SinkConfig, usage: BillableUsage) {
  const r = usage.record;
  return cloudEvent(config, usage, {
    tenant_id: r.tenantId,
    wallet_id: r.walletId,
    transfer_id: r.transferId,
    kind: r.kind,
    asset: r.asset,
    amount: r.amount.toString(),
    value: usage.value.toString(),
    customer: usage.customer,
    refund_of: r.refundOf,
    properties: usage.properties,
  });
}

function createCloudEventsSink(config: SinkConfig, url: string, headers: Record<string, string>, toEvent: (config: SinkConfig, usage: BillableUsage) => object): Sink {
  return {
    config,
    describe: (usage) => ({ method: "POST", url, event: toEvent(config, usage) }),
    async send(batch, signal) {
      const body = JSON.stringify(batch.map((usage) => toEvent(config, usage)));
      const outcome = await post(url, { "content-type": BATCH_CONTENT_TYPE, ...headers }, body, config.requestTimeoutMs, signal);
      const result = classify(outcome);
      if (result.status === "batch_rejected" && batch.length === 1) return [{ ...result, status: "rejected" }];
      return forAll(batch.length, result);
    },
  };
}

export function createOpenMeterSink(config: SinkConfig): Sink {
  return createCloudEventsSink(config, `${config.endpoint}/api/v1/events`, bearer(config), openMeterEvent);
}

export function createHttpSink(config: SinkConfig): Sink {
  const header = config.options["auth_header"];
  const headers = config.secret === null ? {} : header === undefined ? bearer(config) : { [header.toLowerCase()]: config.secret };
  return createCloudEventsSink(config, config.endpoint, headers, httpEvent);
}
