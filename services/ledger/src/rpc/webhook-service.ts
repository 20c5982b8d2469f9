import { Code, type ServiceImpl } from "@connectrpc/connect";
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type pg from "pg";
import { invalidArgument, ledgerError } from "@holdfast/common/errors";
import { uuidV7, type IdGenerator } from "@holdfast/common/ids";
import { DeliveryStatus, WebhookService, WebhookTestEventSchema } from "@holdfast/gen/holdfast/v1/webhooks_pb";
import { callerOf } from "./auth.js";
import * as v from "./validate.js";
import { toDelivery, toEndpoint } from "@holdfast/webhooks-core/convert";
import { checkEventTypeFilters, test_event_type } from "@holdfast/webhooks-core/event-types";
import { envelope } from "@holdfast/webhooks-core/messages";
import { newSigningSecret } from "@holdfast/webhooks-core/secrets";
import * as store from "@holdfast/webhooks-core/store";
import { createUrlPolicy, type Resolver } from "@holdfast/webhooks-core/url-policy";

/** What WebhookService needs to know beyond the database. */
export interface WebhookServiceSettings {
  /** Config.webhookAllowedNetworks: where endpoints may be non-public or plain http. */
  allowedNetworks: readonly string[];
  /** Config.webhookSecretOverlapSeconds: the default overlap of a rotation. */
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

const description_length_max = 512;
const overlap_seconds_max = 7 * 24 * 3600;

const status_filters: Partial<Record<DeliveryStatus, store.DeliveryStatus>> = {
  [DeliveryStatus.PENDING]: "pending",
  [DeliveryStatus.SUCCEEDED]: "succeeded",
  [DeliveryStatus.FAILED]: "failed",
};

const endpointNotFound = () => ledgerError(Code.NotFound, "WEBHOOK_ENDPOINT_NOT_FOUND", "webhook endpoint not found");
const endpointDisabled = () =>
  ledgerError(Code.FailedPrecondition, "WEBHOOK_ENDPOINT_DISABLED", "the webhook endpoint is disabled; enable it with UpdateEndpoint first");

/**
 * WebhookService handlers: the caller's tenant's endpoints and deliveries. Sending is the
 * webhook worker's job (workers/webhooks); these handlers only read and write the tables it
 * works from, so they answer without waiting for any receiver.
 */
export function webhookService(deps: WebhookServiceDeps): ServiceImpl<typeof WebhookService> {
  const { pool } = deps;
  const settings = deps.webhooks;
  const newId = deps.newId ?? uuidV7;
  const policy = createUrlPolicy(settings.allowedNetworks, settings.resolve);

  async function checkedUrl(url: string): Promise<string> {
    const check = await policy.checkUrl(url);
    if (!check.ok) {
      throw invalidArgument("url", check.why);
    }
    return check.url.toString();
  }

  return {
    async createEndpoint(req, ctx) {
      const { tenantId } = callerOf(ctx);
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
      if (created === "limit") {
        throw ledgerError(Code.ResourceExhausted, "WEBHOOK_ENDPOINT_LIMIT", `a tenant may have at most ${store.endpoints_per_tenant_max} webhook endpoints`);
      }
      // No other response carries the secret: this is the only time it is shown.
      return { endpoint: toEndpoint(created), secret };
    },

    async listEndpoints(req, ctx) {
      const { tenantId } = callerOf(ctx);
      const page = await store.listEndpoints(pool, tenantId, v.pageSize(req.pageSize), pageToken(req.pageToken));
      return { endpoints: page.items.map(toEndpoint), nextPageToken: store.encodePageToken(page.nextBefore) };
    },

    async updateEndpoint(req, ctx) {
      const { tenantId } = callerOf(ctx);
      const id = endpointId(req.endpointId);
      const patch: store.EndpointPatch = {
        url: req.url === undefined ? null : await checkedUrl(req.url),
        eventTypes: req.eventTypes === undefined ? null : eventTypes(req.eventTypes.eventTypes, "event_types.event_types"),
        description: req.description === undefined ? null : description(req.description),
        enabled: req.enabled ?? null,
      };
      const row = await store.updateEndpoint(pool, tenantId, id, patch);
      if (row === null) {
        throw endpointNotFound();
      }
      return { endpoint: toEndpoint(row) };
    },

    async deleteEndpoint(req, ctx) {
      const { tenantId } = callerOf(ctx);
      if (!(await store.deleteEndpoint(pool, tenantId, endpointId(req.endpointId)))) {
        throw endpointNotFound();
      }
      return {};
    },

    async rotateEndpointSecret(req, ctx) {
      const { tenantId } = callerOf(ctx);
      const overlap = req.overlapSeconds ?? settings.secretOverlapSeconds;
      if (overlap > overlap_seconds_max) {
        throw invalidArgument("overlap_seconds", `must be at most ${overlap_seconds_max}`);
      }
      const secret = newSigningSecret();
      const row = await store.rotateSecret(pool, tenantId, endpointId(req.endpointId), secret, overlap);
      if (row === null) {
        throw endpointNotFound();
      }
      return { endpoint: toEndpoint(row), secret };
    },

    async listDeliveries(req, ctx) {
      const { tenantId } = callerOf(ctx);
      const id = endpointId(req.endpointId);
      const status = req.status === DeliveryStatus.UNSPECIFIED ? null : status_filters[req.status];
      if (status === undefined) {
        throw invalidArgument("status", "must be a DeliveryStatus value");
      }
      const page = await store.listDeliveries(pool, tenantId, id, status, v.pageSize(req.pageSize), pageToken(req.pageToken));
      if (page === null) {
        throw endpointNotFound();
      }
      return { deliveries: page.items.map(toDelivery), nextPageToken: store.encodePageToken(page.nextBefore) };
    },

    async retryDelivery(req, ctx) {
      const { tenantId } = callerOf(ctx);
      const result = await store.retryDelivery(pool, tenantId, uuid(req.deliveryId, "delivery_id", "a delivery id"));
      if (result === "not_found") {
        throw ledgerError(Code.NotFound, "WEBHOOK_DELIVERY_NOT_FOUND", "webhook delivery not found");
      }
      if (result === "disabled") {
        throw endpointDisabled();
      }
      return { delivery: toDelivery(result) };
    },

    async sendTestEvent(req, ctx) {
      const { tenantId } = callerOf(ctx);
      const id = endpointId(req.endpointId);
      const eventId = newId();
      const now = new Date();
      const data = create(WebhookTestEventSchema, { eventId, tenantId, endpointId: id, occurredAt: timestampFromDate(now) });
      const message = envelope(tenantId, eventId, test_event_type, now, WebhookTestEventSchema, data);
      const result = await store.queueTestEvent(pool, id, message);
      if (result === "not_found") {
        throw endpointNotFound();
      }
      if (result === "disabled") {
        throw endpointDisabled();
      }
      return { delivery: toDelivery(result) };
    },
  };
}

function uuid(value: string, field: string, what: string): string {
  if (value === "") {
    throw invalidArgument(field, "is required");
  }
  if (!store.is_uuid.test(value)) {
    throw invalidArgument(field, `must be ${what} (a lowercase UUID)`);
  }
  return value;
}

const endpointId = (value: string) => uuid(value, "endpoint_id", "an endpoint id");

function eventTypes(filters: string[], field = "event_types"): string[] {
  const problem = checkEventTypeFilters(filters);
  if (problem !== null) {
    throw invalidArgument(field, problem);
  }
  return filters;
}

function description(value: string): string {
  return value === "" ? value : v.label(value, "description", description_length_max);
}

function pageToken(token: string): string | null {
  const before = store.decodePageToken(token);
  if (before === undefined) {
    throw invalidArgument("page_token", "is not one this server issued");
  }
  return before;
}
