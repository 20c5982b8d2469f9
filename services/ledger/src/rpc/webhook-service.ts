import type { ServiceImpl } from "@connectrpc/connect";
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type pg from "pg";
import { InvalidFieldError } from "@holdfast/common/errors";
import { uuidV7, type IdGenerator } from "@holdfast/common/ids";
import { DeliveryStatus, WebhookService, WebhookTestEventSchema } from "@holdfast/gen/holdfast/v1/webhooks_pb";
import { recordAudit, type AuditRecordInput } from "../audit-log.js";
import { callerOf } from "./auth.js";
import * as v from "./validate.js";
import { toDelivery, toEndpoint } from "@holdfast/webhooks-core/convert";
import { checkEventTypeFilters, TEST_EVENT_TYPE } from "@holdfast/webhooks-core/event-types";
import { envelope } from "@holdfast/webhooks-core/messages";
import { newSigningSecret } from "@holdfast/webhooks-core/secrets";
import * as store from "@holdfast/webhooks-core/store";
import { SECRET_OVERLAP_SECONDS_MAX } from "@holdfast/webhooks-core/settings";
import { createUrlPolicy, type Resolver } from "@holdfast/webhooks-core/url-policy";

/** What WebhookService needs to know beyond the database. */
export interface WebhookServiceSettings {
  /** HOLDFAST_WEBHOOK_ALLOWED_NETWORKS (webhooks-core/settings): where endpoints may be non-public or plain http. */
  allowedNetworks: readonly string[];
  /** HOLDFAST_WEBHOOK_SECRET_OVERLAP_SECONDS (webhooks-core/settings): the default overlap of a rotation. */
  secretOverlapSeconds: number;
  /** How URLs' host names are resolved; the system resolver by default. */
  resolve?: Resolver;
}

export interface WebhookServiceDeps {
  pool: pg.Pool;
  webhooks: WebhookServiceSettings;
  newId?: IdGenerator;
}

/** Re-exported so the route table registers the service with one import. */
export { WebhookService };

const DESCRIPTION_LENGTH_MAX = 512;
const OVERLAP_SECONDS_MAX = SECRET_OVERLAP_SECONDS_MAX;

const STATUS_FILTERS: Partial<Record<DeliveryStatus, store.DeliveryStatus>> = {
  [DeliveryStatus.PENDING]: "pending",
  [DeliveryStatus.SUCCEEDED]: "succeeded",
  [DeliveryStatus.FAILED]: "failed",
};

type Handlers = ServiceImpl<typeof WebhookService>;

/** What the handlers share: the pool, the settings, the id generator and the URL policy. */
interface WebhookContext {
  pool: pg.Pool;
  settings: WebhookServiceSettings;
  newId: IdGenerator;
  checkedUrl(url: string): Promise<string>;
}

/**
 * WebhookService handlers: the caller's tenant's endpoints and deliveries. Sending is the
 * webhook worker's job (workers/webhooks); these handlers only read and write the tables it
 * works from, so they answer without waiting for any receiver. What they or the store throw
 * (invalid fields, not found, a disabled endpoint, the endpoint limit) is answered by the
 * routes' error interceptor.
 */
export function webhookService(deps: WebhookServiceDeps): Handlers {
  const policy = createUrlPolicy(deps.webhooks.allowedNetworks, deps.webhooks.resolve);
  const context: WebhookContext = {
    pool: deps.pool,
    settings: deps.webhooks,
    newId: deps.newId ?? uuidV7,
    async checkedUrl(url) {
      const check = await policy.checkUrl(url);
      if (!check.ok) {
        throw new InvalidFieldError("url", check.why);
      }
      return check.url.toString();
    },
  };
  return { ...endpointHandlers(context), ...deliveryHandlers(context) };
}

type EndpointMethods = "createEndpoint" | "listEndpoints" | "updateEndpoint" | "deleteEndpoint" | "rotateEndpointSecret";

function endpointHandlers({ pool, settings, newId, checkedUrl }: WebhookContext): Pick<Handlers, EndpointMethods> {
  return {
    async createEndpoint(req, ctx) {
      const { tenantId, keyId } = callerOf(ctx);
      const url = await checkedUrl(req.url);
      const secret = newSigningSecret();
      const created = await store.createEndpoint(pool, {
        tenantId,
        endpointId: newId(),
        url,
        eventTypes: eventTypes(req.eventTypes),
        description: description(req.description),
        secret,
      });
      const details = { url: created.url, event_types: created.event_types, description: created.description };
      await audit(pool, { tenantId, keyId, action: "webhook_endpoint.created", target: created.endpoint_id, details });
      // No other response carries the secret: this is the only time it is shown.
      return { endpoint: toEndpoint(created), secret };
    },

    async listEndpoints(req, ctx) {
      const { tenantId } = callerOf(ctx);
      const page = await store.listEndpoints(pool, tenantId, v.pageSize(req.pageSize), req.pageToken);
      return { endpoints: page.items.map(toEndpoint), nextPageToken: page.nextPageToken };
    },

    async updateEndpoint(req, ctx) {
      const { tenantId, keyId } = callerOf(ctx);
      const id = endpointId(req.endpointId);
      const patch: store.EndpointPatch = {
        url: req.url === undefined ? null : await checkedUrl(req.url),
        eventTypes: req.eventTypes === undefined ? null : eventTypes(req.eventTypes.eventTypes, "event_types.event_types"),
        description: req.description === undefined ? null : description(req.description),
        enabled: req.enabled ?? null,
      };
      const updated = await store.updateEndpoint(pool, tenantId, id, patch);
      const details = { url: patch.url, event_types: patch.eventTypes, description: patch.description, enabled: patch.enabled };
      await audit(pool, { tenantId, keyId, action: "webhook_endpoint.updated", target: id, details });
      return { endpoint: toEndpoint(updated) };
    },

    async deleteEndpoint(req, ctx) {
      const { tenantId, keyId } = callerOf(ctx);
      const id = endpointId(req.endpointId);
      await store.deleteEndpoint(pool, tenantId, id);
      await audit(pool, { tenantId, keyId, action: "webhook_endpoint.deleted", target: id });
      return {};
    },

    async rotateEndpointSecret(req, ctx) {
      const { tenantId, keyId } = callerOf(ctx);
      const overlap = req.overlapSeconds ?? settings.secretOverlapSeconds;
      if (overlap > OVERLAP_SECONDS_MAX) {
        throw new InvalidFieldError("overlap_seconds", `must be at most ${OVERLAP_SECONDS_MAX}`);
      }
      const secret = newSigningSecret();
      const row = await store.rotateSecret(pool, tenantId, endpointId(req.endpointId), secret, overlap);
      const details = { overlap_seconds: overlap };
      await audit(pool, { tenantId, keyId, action: "webhook_endpoint.secret_rotated", target: row.endpoint_id, details });
      return { endpoint: toEndpoint(row), secret };
    },
  };
}

function deliveryHandlers({ pool, newId }: WebhookContext): Pick<Handlers, "listDeliveries" | "retryDelivery" | "sendTestEvent"> {
  return {
    async listDeliveries(req, ctx) {
      const { tenantId } = callerOf(ctx);
      const id = endpointId(req.endpointId);
      const status = req.status === DeliveryStatus.UNSPECIFIED ? null : STATUS_FILTERS[req.status];
      if (status === undefined) {
        throw new InvalidFieldError("status", "must be a DeliveryStatus value");
      }
      const page = await store.listDeliveries(pool, tenantId, id, status, v.pageSize(req.pageSize), req.pageToken);
      return { deliveries: page.items.map(toDelivery), nextPageToken: page.nextPageToken };
    },

    async retryDelivery(req, ctx) {
      const { tenantId } = callerOf(ctx);
      const delivery = await store.retryDelivery(pool, tenantId, v.uuid(req.deliveryId, "delivery_id", "a delivery id"));
      return { delivery: toDelivery(delivery) };
    },

    async sendTestEvent(req, ctx) {
      const { tenantId } = callerOf(ctx);
      const id = endpointId(req.endpointId);
      const eventId = newId();
      const now = new Date();
      const data = create(WebhookTestEventSchema, { eventId, tenantId, endpointId: id, occurredAt: timestampFromDate(now) });
      const message = envelope(tenantId, eventId, TEST_EVENT_TYPE, now, WebhookTestEventSchema, data);
      return { delivery: toDelivery(await store.queueTestEvent(pool, id, message)) };
    },
  };
}

const endpointId = (value: string) => v.uuid(value, "endpoint_id", "an endpoint id");

/**
 * Records an endpoint change in the audit log once it succeeded. Never the secret: rotations
 * record only the overlap.
 */
function audit(pool: pg.Pool, entry: Omit<AuditRecordInput, "keyId"> & { keyId: string | null | undefined }): Promise<void> {
  return recordAudit(pool, { ...entry, keyId: entry.keyId ?? null });
}

function eventTypes(filters: string[], field = "event_types"): string[] {
  const problem = checkEventTypeFilters(filters);
  if (problem !== null) {
    throw new InvalidFieldError(field, problem);
  }
  return filters;
}

function description(value: string): string {
  return value === "" ? value : v.label(value, "description", DESCRIPTION_LENGTH_MAX);
}
