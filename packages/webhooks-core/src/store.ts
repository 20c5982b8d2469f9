/**
 * The SQL behind WebhookService: endpoints and their deliveries, always within one tenant.
 * Plain statements with names, as in the rest of the ledger; nothing here holds a lock across
 * an await except the short endpoint-creation transaction, which serialises a tenant's creations
 * so the per-tenant endpoint limit is exact. What the caller names but the tenant does not have
 * is thrown as a NotFoundError; lists take and return opaque page tokens.
 *
 * @module
 */
import type pg from "pg";
import { HoldfastError, NotFoundError } from "@holdfast/common/errors";
import { decodePageToken, encodePageToken } from "@holdfast/common/page-token";
import { isUuid } from "@holdfast/common/patterns";
import { inTransaction } from "@holdfast/common/pg";
import { TEST_EVENT_TYPE } from "./event-types.js";
import type { WebhookMessage } from "./messages.js";

/** Most endpoints one tenant may have. */
export const endpoints_per_tenant_max = 100;

export type DisabledReason = "manual" | "gone" | "failing";
export type DeliveryStatus = "pending" | "succeeded" | "failed";

/** A webhook_endpoints row without its secrets. */
export interface EndpointRow {
  endpoint_id: string;
  url: string;
  event_types: string[];
  description: string;
  enabled: boolean;
  disabled_reason: DisabledReason | null;
  disabled_at: Date | null;
  failing_since: Date | null;
  created_at: Date;
  updated_at: Date;
  secret_rotated_at: Date | null;
  /** Null once the overlap is over, even if the column still holds a time. */
  previous_secret_expires_at: Date | null;
}

export interface DeliveryRow {
  delivery_id: string;
  endpoint_id: string;
  event_id: string;
  event_type: string;
  status: DeliveryStatus;
  attempts: number;
  last_http_status: number | null;
  last_error: string | null;
  last_latency_ms: number | null;
  created_at: Date;
  last_attempt_at: Date | null;
  next_attempt_at: Date;
  finished_at: Date | null;
}

export interface Page<T> {
  items: T[];
  /** The token of the next page; empty on the last page. */
  nextPageToken: string;
}

/** The columns of an {@link EndpointRow}: never the secrets. */
export const endpoint_columns = `endpoint_id, url, event_types, description, enabled, disabled_reason, disabled_at,
  failing_since, created_at, updated_at, secret_rotated_at,
  case when previous_secret_expires_at > now() then previous_secret_expires_at end as previous_secret_expires_at`;

const delivery_columns = `d.delivery_id, d.endpoint_id, d.event_id, d.event_type, d.status, d.attempts,
  d.last_http_status, d.last_error, d.last_latency_ms, d.created_at, d.last_attempt_at, d.next_attempt_at,
  d.finished_at`;

export interface NewEndpoint {
  tenantId: string;
  endpointId: string;
  url: string;
  eventTypes: readonly string[];
  description: string;
  secret: string;
}

/** Inserts an endpoint; throws WEBHOOK_ENDPOINT_LIMIT when the tenant already has the most it may. */
export async function createEndpoint(pool: pg.Pool, input: NewEndpoint): Promise<EndpointRow> {
  const created = await inTransaction(pool, async (client) => {
    // One creation per tenant at a time, so the count below cannot be raced past the limit.
    await client.query("select pg_advisory_xact_lock(hashtext('holdfast.webhooks'), hashtext($1))", [input.tenantId]);
    const { rows } = await client.query<EndpointRow>({
      name: "webhooks_create_endpoint",
      text: `
        insert into webhook_endpoints (tenant_id, endpoint_id, url, event_types, description, secret, created_at, updated_at)
        select $1, $2, $3, $4, $5, $6, now(), now()
         where (select count(*) from webhook_endpoints where tenant_id = $1) < $7
        returning ${endpoint_columns}`,
      values: [input.tenantId, input.endpointId, input.url, input.eventTypes, input.description, input.secret, endpoints_per_tenant_max],
    });
    return rows[0];
  });
  if (created === undefined) {
    throw new HoldfastError("WEBHOOK_ENDPOINT_LIMIT", `a tenant may have at most ${endpoints_per_tenant_max} webhook endpoints`);
  }
  return created;
}

/** The tenant's endpoints, newest first (endpoint ids are UUIDv7). */
export async function listEndpoints(pool: pg.Pool, tenantId: string, pageSize: number, pageToken: string): Promise<Page<EndpointRow>> {
  const before = cursorId(pageToken);
  const { rows } = await pool.query<EndpointRow>({
    name: "webhooks_list_endpoints",
    text: `
      select ${endpoint_columns} from webhook_endpoints
       where tenant_id = $1 and ($2::uuid is null or endpoint_id < $2)
       order by endpoint_id desc limit $3`,
    values: [tenantId, before, pageSize + 1],
  });
  return page(rows, pageSize, (row) => row.endpoint_id);
}

export async function getEndpoint(pool: pg.Pool, tenantId: string, endpointId: string): Promise<EndpointRow> {
  const { rows } = await pool.query<EndpointRow>({
    name: "webhooks_get_endpoint",
    text: `select ${endpoint_columns} from webhook_endpoints where tenant_id = $1 and endpoint_id = $2`,
    values: [tenantId, endpointId],
  });
  return foundEndpoint(rows[0]);
}

/** A change to an endpoint; null fields stay as they are. */
export interface EndpointPatch {
  url: string | null;
  eventTypes: readonly string[] | null;
  description: string | null;
  enabled: boolean | null;
}

/**
 * Applies the patch. Disabling records reason "manual"; enabling clears the reason and the
 * failure record, so an endpoint that was failing gets the whole disable period again.
 */
export async function updateEndpoint(pool: pg.Pool, tenantId: string, endpointId: string, patch: EndpointPatch): Promise<EndpointRow> {
  const { rows } = await pool.query<EndpointRow>({
    name: "webhooks_update_endpoint",
    text: `
      update webhook_endpoints set
        url = coalesce($3, url),
        event_types = coalesce($4, event_types),
        description = coalesce($5, description),
        enabled = coalesce($6, enabled),
        disabled_reason = case when $6 is null then disabled_reason when $6 then null
                               else coalesce(disabled_reason, 'manual') end,
        disabled_at = case when $6 is null then disabled_at when $6 then null else coalesce(disabled_at, now()) end,
        failing_since = case when $6 then null else failing_since end,
        updated_at = now()
       where tenant_id = $1 and endpoint_id = $2
      returning ${endpoint_columns}`,
    values: [tenantId, endpointId, patch.url, patch.eventTypes, patch.description, patch.enabled],
  });
  return foundEndpoint(rows[0]);
}

/**
 * Deletes the endpoint, its deliveries, and the stored messages no other endpoint's delivery
 * refers to. The worker's retention deletes a message when it deletes the message's last
 * delivery (pruneOld in the webhook worker), so a message whose deliveries go with their
 * endpoint must go here, or nothing would ever delete it.
 *
 * The endpoint is locked first: a message being stored for it meanwhile either committed before
 * (and the next statement's snapshot sees its delivery) or waits for this transaction and then
 * fails its foreign key to the endpoint (the intake stores it again, for the endpoints left).
 * The deletions run in one statement, whose snapshot still shows the endpoint's own deliveries:
 * hence "another endpoint's delivery" rather than "any delivery".
 */
export async function deleteEndpoint(pool: pg.Pool, tenantId: string, endpointId: string): Promise<void> {
  await inTransaction(pool, async (client) => {
    const locked = await client.query({
      name: "webhooks_lock_endpoint_for_delete",
      text: "select 1 from webhook_endpoints where tenant_id = $1 and endpoint_id = $2 for update",
      values: [tenantId, endpointId],
    });
    if (locked.rowCount !== 1) {
      throw endpointNotFound();
    }
    await client.query({
      name: "webhooks_delete_endpoint",
      text: `
        with deliveries as (
          delete from webhook_deliveries where tenant_id = $1 and endpoint_id = $2 returning event_id
        ),
        messages as (
          delete from webhook_events ev
           where ev.tenant_id = $1 and ev.event_id in (select event_id from deliveries)
             and not exists (select 1 from webhook_deliveries d
                              where d.tenant_id = $1 and d.event_id = ev.event_id and d.endpoint_id <> $2)
        )
        delete from webhook_endpoints where tenant_id = $1 and endpoint_id = $2`,
      values: [tenantId, endpointId],
    });
  });
}

/**
 * Makes `secret` the signing secret and keeps the current one signing for `overlapSeconds`.
 * A rotation during an overlap drops the oldest secret: at most two ever sign.
 */
export async function rotateSecret(
  pool: pg.Pool,
  tenantId: string,
  endpointId: string,
  secret: string,
  overlapSeconds: number,
): Promise<EndpointRow> {
  const { rows } = await pool.query<EndpointRow>({
    name: "webhooks_rotate_secret",
    text: `
      update webhook_endpoints set
        previous_secret = case when $4::int > 0 then secret end,
        previous_secret_expires_at = case when $4::int > 0 then now() + make_interval(secs => $4::int) end,
        secret = $3, secret_rotated_at = now(), updated_at = now()
       where tenant_id = $1 and endpoint_id = $2
      returning ${endpoint_columns}`,
    values: [tenantId, endpointId, secret, overlapSeconds],
  });
  return foundEndpoint(rows[0]);
}

/** An endpoint's deliveries, newest first. */
export async function listDeliveries(
  pool: pg.Pool,
  tenantId: string,
  endpointId: string,
  status: DeliveryStatus | null,
  pageSize: number,
  pageToken: string,
): Promise<Page<DeliveryRow>> {
  const before = cursorId(pageToken);
  await getEndpoint(pool, tenantId, endpointId);
  const { rows } = await pool.query<DeliveryRow>({
    name: "webhooks_list_deliveries",
    text: `
      select ${delivery_columns} from webhook_deliveries d
       where d.tenant_id = $1 and d.endpoint_id = $2 and ($3::text is null or d.status = $3)
         and ($4::uuid is null or d.delivery_id < $4)
       order by d.delivery_id desc limit $5`,
    values: [tenantId, endpointId, status, before, pageSize + 1],
  });
  return page(rows, pageSize, (row) => row.delivery_id);
}

/**
 * Makes a delivery pending and due now with a fresh schedule, whatever its status. A lease in
 * progress is dropped: the attempt running under it will not record its outcome, and the
 * delivery is sent again (at least once, as always).
 */
export async function retryDelivery(pool: pg.Pool, tenantId: string, deliveryId: string): Promise<DeliveryRow> {
  const { rows } = await pool.query<DeliveryRow>({
    name: "webhooks_retry_delivery",
    text: `
      update webhook_deliveries d set status = 'pending', attempts = 0, next_attempt_at = now(),
             locked_until = null, lease_id = null, finished_at = null
        from webhook_endpoints e
       where d.tenant_id = $1 and d.delivery_id = $2
         and e.tenant_id = d.tenant_id and e.endpoint_id = d.endpoint_id and e.enabled
      returning ${delivery_columns}`,
    values: [tenantId, deliveryId],
  });
  if (rows[0] !== undefined) {
    return rows[0];
  }
  // Nothing updated: say whether the delivery is missing or its endpoint is disabled.
  const { rowCount } = await pool.query({
    name: "webhooks_delivery_exists",
    text: "select 1 from webhook_deliveries where tenant_id = $1 and delivery_id = $2",
    values: [tenantId, deliveryId],
  });
  throw rowCount === 0 ? new NotFoundError("WEBHOOK_DELIVERY_NOT_FOUND", "webhook delivery not found") : endpointDisabled();
}

/** Stores a test message and its delivery to one endpoint, whatever the endpoint's filters. */
export async function queueTestEvent(
  pool: pg.Pool,
  endpointId: string,
  message: WebhookMessage,
): Promise<DeliveryRow> {
  if (message.type !== TEST_EVENT_TYPE) {
    throw new Error(`queueTestEvent: ${message.type} is not ${TEST_EVENT_TYPE}`);
  }
  return inTransaction(pool, async (client) => {
    const { rows: endpoints } = await client.query<{ enabled: boolean }>(
      "select enabled from webhook_endpoints where tenant_id = $1 and endpoint_id = $2 for share",
      [message.tenantId, endpointId],
    );
    const endpoint = endpoints[0];
    if (endpoint === undefined || !endpoint.enabled) {
      throw endpoint === undefined ? endpointNotFound() : endpointDisabled();
    }
    await client.query(
      "insert into webhook_events (tenant_id, event_id, type, body, occurred_at) values ($1, $2, $3, $4, $5)",
      [message.tenantId, message.eventId, message.type, message.body, message.occurredAt],
    );
    const { rows } = await client.query<DeliveryRow>(
      `insert into webhook_deliveries as d (tenant_id, endpoint_id, event_id, event_type, next_attempt_at)
       values ($1, $2, $3, $4, now()) returning ${delivery_columns}`,
      [message.tenantId, endpointId, message.eventId, message.type],
    );
    return rows[0]!;
  });
}

function page<T>(rows: T[], pageSize: number, idOf: (row: T) => string): Page<T> {
  const items = rows.slice(0, pageSize);
  const more = rows.length > pageSize;
  return { items, nextPageToken: more ? encodePageToken([idOf(items.at(-1)!)]) : "" };
}

/** The id a list continues after; null for the first page. */
function cursorId(pageToken: string): string | null {
  return decodePageToken(pageToken, [isUuid])?.[0] ?? null;
}

function foundEndpoint(row: EndpointRow | undefined): EndpointRow {
  if (row === undefined) {
    throw endpointNotFound();
  }
  return row;
}

const endpointNotFound = () => new NotFoundError("WEBHOOK_ENDPOINT_NOT_FOUND", "webhook endpoint not found");

const endpointDisabled = () =>
  new HoldfastError("WEBHOOK_ENDPOINT_DISABLED", "the webhook endpoint is disabled; enable it with UpdateEndpoint first");
