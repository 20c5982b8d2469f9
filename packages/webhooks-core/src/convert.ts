/**
 * Mapping between webhook rows and the holdfast.v1 webhook messages. Shared by the RPC layer
 * and the worker, which puts the disabled endpoint into its endpoint_disabled event.
 *
 * @module
 */
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import {
  DeliveryStatus,
  DisabledReason,
  WebhookEndpointSchema,
  type WebhookDeliverySchema,
  type WebhookEndpoint,
} from "@holdfast/gen/holdfast/v1/webhooks_pb";
import type * as store from "./store.js";

export const disabled_reasons: Record<store.DisabledReason, DisabledReason> = {
  manual: DisabledReason.MANUAL,
  gone: DisabledReason.GONE,
  failing: DisabledReason.FAILING,
};

export const delivery_statuses: Record<store.DeliveryStatus, DeliveryStatus> = {
  pending: DeliveryStatus.PENDING,
  succeeded: DeliveryStatus.SUCCEEDED,
  failed: DeliveryStatus.FAILED,
};

const stamp = (at: Date | null) => (at === null ? undefined : timestampFromDate(at));

export function toEndpoint(row: store.EndpointRow): WebhookEndpoint {
  return create(WebhookEndpointSchema, {
    endpointId: row.endpoint_id,
    url: row.url,
    eventTypes: row.event_types,
    description: row.description,
    enabled: row.enabled,
    disabledReason: row.disabled_reason === null ? DisabledReason.UNSPECIFIED : disabled_reasons[row.disabled_reason],
    disabledAt: stamp(row.disabled_at),
    failingSince: stamp(row.failing_since),
    createdAt: stamp(row.created_at),
    updatedAt: stamp(row.updated_at),
    secretRotatedAt: stamp(row.secret_rotated_at),
    previousSecretExpiresAt: stamp(row.previous_secret_expires_at),
  });
}

export function toDelivery(row: store.DeliveryRow): MessageInitShape<typeof WebhookDeliverySchema> {
  return {
    deliveryId: row.delivery_id,
    endpointId: row.endpoint_id,
    eventId: row.event_id,
    eventType: row.event_type,
    status: delivery_statuses[row.status],
    attempts: row.attempts,
    lastHttpStatus: row.last_http_status ?? 0,
    lastError: row.last_error ?? "",
    lastLatencyMs: row.last_latency_ms ?? 0,
    createdAt: stamp(row.created_at),
    lastAttemptAt: stamp(row.last_attempt_at),
    nextAttemptAt: row.status === "pending" ? stamp(row.next_attempt_at) : undefined,
    finishedAt: stamp(row.finished_at),
  };
}
