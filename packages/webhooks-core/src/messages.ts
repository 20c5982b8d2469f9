/**
 * The messages webhooks carry, and the statement that fans one out to the endpoints that take
 * it. Shared by the worker (ledger events from the stream, endpoint_disabled events) and the
 * WebhookService (test events).
 *
 * A message's body is built once and stored as text, so every attempt of a delivery sends the
 * same bytes: the Standard Webhooks envelope `{type, timestamp, data}` with `timestamp` the time
 * the event occurred (RFC 3339) and `data` the event in protobuf JSON.
 *
 * @module
 */
import { toJson, type DescMessage, type MessageShape } from "@bufbuild/protobuf";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import type pg from "pg";
import { EventSchema, type Event } from "@holdfast/gen/holdfast/v1/events_pb";
import { sqlMatchesEventType } from "./event-types.js";

/** One message as stored in webhook_events. */
export interface WebhookMessage {
  readonly tenantId: string;
  readonly eventId: string;
  readonly type: string;
  readonly occurredAt: Date;
  /** The exact JSON body sent. */
  readonly body: string;
}

/** The message of a ledger event from the stream. */
export function ledgerEventMessage(event: Event): WebhookMessage {
  const occurredAt = event.occurredAt ? timestampDate(event.occurredAt) : new Date(0);
  return envelope(event.tenantId, event.eventId, event.type, occurredAt, EventSchema, event);
}

/** A message whose `data` is `value` (a webhooks.proto event message) in protobuf JSON. */
export function envelope<Desc extends DescMessage>(
  tenantId: string,
  eventId: string,
  type: string,
  occurredAt: Date,
  schema: Desc,
  value: MessageShape<Desc>,
): WebhookMessage {
  const body = JSON.stringify({ type, timestamp: occurredAt.toISOString(), data: toJson(schema, value) });
  return { tenantId, eventId, type, occurredAt, body };
}

/** A delivery fanOut added: whose endpoint it is for. */
export interface AddedDelivery {
  readonly tenant_id: string;
  readonly endpoint_id: string;
}

/** Anything that runs a query: the pool or a client inside a transaction. */
export type Queryable = Pick<pg.Pool | pg.PoolClient, "query">;

/**
 * Stores the messages and one pending delivery for every enabled endpoint of the message's
 * tenant whose filters take its type, in one statement. Messages no endpoint takes are not
 * stored. Idempotent: a message or a delivery already there is left as it is, so a message
 * redelivered by JetStream adds nothing. Returns the endpoint of each delivery added, so a
 * sender can tell which endpoints have new work.
 */
export async function fanOut(db: Queryable, messages: readonly WebhookMessage[]): Promise<AddedDelivery[]> {
  if (messages.length === 0) {
    return [];
  }
  const result = await db.query<AddedDelivery>({
    name: "webhooks_fan_out",
    text: `
      with ev as (
        select * from unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::timestamptz[])
          as t (tenant_id, event_id, type, body, occurred_at)
      ),
      targets as (
        select ev.tenant_id, ev.event_id, ev.type, e.endpoint_id
          from ev join webhook_endpoints e on e.tenant_id = ev.tenant_id and e.enabled
         where ${sqlMatchesEventType("e.event_types", "ev.type")}
      ),
      stored as (
        insert into webhook_events (tenant_id, event_id, type, body, occurred_at)
        select ev.tenant_id, ev.event_id, ev.type, ev.body, ev.occurred_at from ev
         where exists (select 1 from targets t where t.tenant_id = ev.tenant_id and t.event_id = ev.event_id)
        on conflict do nothing
      )
      insert into webhook_deliveries (tenant_id, endpoint_id, event_id, event_type, next_attempt_at)
      select tenant_id, endpoint_id, event_id, type, now() from targets
      on conflict do nothing
      returning tenant_id, endpoint_id`,
    values: [
      messages.map((m) => m.tenantId),
      messages.map((m) => m.eventId),
      messages.map((m) => m.type),
      messages.map((m) => m.body),
      messages.map((m) => m.occurredAt),
    ],
  });
  return result.rows;
}
