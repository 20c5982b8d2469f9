import { create, toBinary, type MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { headers, type MsgHdrs } from "@nats-io/transport-node";
import { eventSubjectRoot } from "@holdfast/common/nats";
import { EventSchema } from "@holdfast/gen/holdfast/v1/events_pb";
import { parseBalance, parseGrant, parseHold, parseTransfer, parseWallet } from "../domain/rows.js";
import { toBalance, toGrant, toHold, toTransfer, toWallet } from "../rpc/convert.js";
import { toBalanceAlertEvent } from "../rpc/alerts.js";
import { parseStatement } from "../domain/statements.js";
import { toStatement } from "../rpc/statements.js";

/** An outbox row, as the relay reads it from the events table. */
export interface OutboxRow {
  event_id: string;
  tenant_id: string;
  wallet_id: string;
  seq: bigint;
  type: string;
  asset: string;
  occurred_at: Date;
  data: Record<string, unknown>;
}

type Json = Record<string, unknown>;
type EventInit = MessageInitShape<typeof EventSchema>;
type Payload = EventInit["payload"];

/** Which oneof case of Event.payload carries each event type, and what it holds. */
const PAYLOADS: Record<string, (data: Json, at: Date) => Payload> = {
  "holdfast.deposit.completed": (d) => ({ case: "depositCompleted", value: transferEvent(d) }),
  "holdfast.spend.completed": (d) => ({ case: "spendCompleted", value: transferEvent(d) }),
  "holdfast.refund.completed": (d) => ({ case: "refundCompleted", value: transferEvent(d) }),
  "holdfast.transfer.sent": (d) => ({ case: "transferSent", value: transferEvent(d) }),
  "holdfast.transfer.received": (d) => ({ case: "transferReceived", value: transferEvent(d) }),
  "holdfast.hold.created": (d, at) => ({ case: "holdCreated", value: holdEvent(d, at) }),
  "holdfast.hold.captured": (d, at) => ({ case: "holdCaptured", value: holdEvent(d, at) }),
  "holdfast.hold.released": (d, at) => ({ case: "holdReleased", value: holdEvent(d, at) }),
  "holdfast.hold.expired": (d, at) => ({ case: "holdExpired", value: holdEvent(d, at) }),
  "holdfast.hold.extended": (d, at) => ({ case: "holdExtended", value: holdEvent(d, at) }),
  "holdfast.wallet.updated": (d) => ({ case: "walletUpdated", value: { wallet: toWallet(parseWallet(d["wallet"] as Json)) } }),
  "holdfast.grant.created": (d) => ({ case: "grantCreated", value: grantEvent(d) }),
  "holdfast.grant.expired": (d) => ({ case: "grantExpired", value: grantEvent(d) }),
  "holdfast.grant.voided": (d) => ({ case: "grantVoided", value: grantEvent(d) }),
  "holdfast.balance.low": (d) => ({ case: "balanceLow", value: toBalanceAlertEvent(d) }),
  "holdfast.balance.recovered": (d) => ({ case: "balanceRecovered", value: toBalanceAlertEvent(d) }),
  "holdfast.usage.recorded": (d) => ({ case: "usageRecorded", value: usageEvent(d) }),
  "holdfast.statement.closed": (d) => ({ case: "statementClosed", value: { statement: toStatement(parseStatement(d)) } }),
};

function transferEvent(data: Json) {
  return { transfer: toTransfer(parseTransfer(data["transfer"] as Json)), tokenTransfers: tokenTransfers(data) };
}

/** The token legs a usage command's event carries (docs/metering.md); none on other events. */
function tokenTransfers(data: Json) {
  return ((data["token_transfers"] ?? []) as Json[]).map((t) => toTransfer(parseTransfer(t)));
}

/** holdfast.usage.recorded: the token legs of a usage command that charged nothing. */
function usageEvent(data: Json) {
  return { usageId: String(data["usage_id"]), tokenTransfers: tokenTransfers(data), holdId: (data["hold_id"] as string | null) ?? "" };
}

function holdEvent(data: Json, at: Date) {
  const transfer = data["transfer"] as Json | undefined;
  return {
    hold: toHold(parseHold(data["hold"] as Json, at)),
    transfer: transfer ? toTransfer(parseTransfer(transfer)) : undefined,
    tokenTransfers: tokenTransfers(data),
  };
}

/** A grant event: the grant after the change and its journal row (none for a void with nothing unheld). */
function grantEvent(data: Json) {
  const transfer = data["transfer"] as Json | null | undefined;
  return {
    grant: toGrant(parseGrant(data["grant"] as Json)),
    transfer: transfer ? toTransfer(parseTransfer(transfer)) : undefined,
  };
}

/** The holdfast.v1.Event of an outbox row. */
export function toEvent(row: OutboxRow) {
  const payload = PAYLOADS[row.type];
  if (!payload) {
    // The SQL functions and this table are written together; an unknown type is a bug.
    throw new Error(`event-codec: unknown event type ${row.type}`);
  }
  const balance = row.data["balance"] as Json | undefined;
  return create(EventSchema, {
    eventId: row.event_id,
    type: row.type,
    tenantId: row.tenant_id,
    walletId: row.wallet_id,
    asset: row.asset,
    sequence: row.seq,
    occurredAt: timestampFromDate(row.occurred_at),
    balance: balance ? toBalance(parseBalance(balance)) : undefined,
    metadata: (row.data["metadata"] ?? {}) as Record<string, string>,
    batchId: typeof row.data["batch_id"] === "string" ? row.data["batch_id"] : "",
    payload: payload(row.data, row.occurred_at),
  });
}

/**
 * The NATS subject of an event in a namespace (HOLDFAST_NAMESPACE), filterable by tenant,
 * wallet and type with wildcards: `<namespace>.events.<tenant>.<wallet>.<kind>.<action>`.
 */
export function eventSubject(row: Pick<OutboxRow, "tenant_id" | "wallet_id" | "type">, namespace?: string): string {
  return `${eventSubjectRoot(namespace)}.${row.tenant_id}.${row.wallet_id}.${row.type.replace(/^holdfast\./, "")}`;
}

/**
 * The message for an event in the CloudEvents NATS binding, binary mode: the attributes in
 * ce-* headers and the Event in protobuf binary as the body.
 */
export function encodeEvent(row: OutboxRow, namespace?: string): { subject: string; headers: MsgHdrs; body: Uint8Array } {
  // append, not set: the headers are new, and set looks every name up twice before adding it.
  const h = headers();
  h.append("ce-specversion", "1.0");
  h.append("ce-id", row.event_id);
  h.append("ce-source", `/holdfast/tenants/${row.tenant_id}`);
  h.append("ce-type", row.type);
  h.append("ce-time", row.occurred_at.toISOString());
  h.append("ce-subject", row.wallet_id);
  h.append("content-type", "application/protobuf");
  return { subject: eventSubject(row, namespace), headers: h, body: toBinary(EventSchema, toEvent(row)) };
}
