/**
 * Usage records: the engine-neutral form of one billable journal row. The stream (a JetStream
 * event) and the backfill (a row of `transfers`) both produce exactly this shape from the same
 * journal row, so a record re-sent by a backfill is byte-for-byte the record the stream sent,
 * and the engine's dedupe on the transfer id sees a true duplicate.
 *
 * @module
 */
import { timestampDate } from "@bufbuild/protobuf/wkt";
import type { Event } from "@holdfast/gen/holdfast/v1/events_pb";
import type { Transfer } from "@holdfast/gen/holdfast/v1/types_pb";
import type { UsageKind } from "./config.js";

/** One spend, capture or refund, as every sink sees it before mapping. */
export interface UsageRecord {
  readonly tenantId: string;
  /** The customer's wallet: debited by a spend or capture, credited by a refund. */
  readonly walletId: string;
  /** The journal row's id; every engine's idempotency / dedupe key. */
  readonly transferId: string;
  readonly kind: UsageKind;
  readonly asset: string;
  /** Minor units, always positive (a refund's sign is decided per sink). */
  readonly amount: bigint;
  readonly occurredAt: Date;
  /** The caller's metadata on the journal row (for captures, the hold's merged with the capture's). */
  readonly metadata: Readonly<Record<string, string>>;
  /** For refunds: the spend or capture refunded. */
  readonly refundOf: string | null;
  /**
   * For the SPEND or CAPTURE of a usage command (SpendUsage, CaptureUsage): its model and token
   * counts by class (`input_tokens`, ..., every class present, 0 without tokens), from its token
   * legs; null for every other record. Value templates read them as `{usage.output_tokens}`.
   */
  readonly usage: UsageTokens | null;
}

/** The token classes of a usage, as the value templates name them (docs/metering.md). */
export const USAGE_TOKEN_FIELDS = [
  "input_tokens",
  "cached_input_tokens",
  "cache_write_tokens",
  "cache_write_1h_tokens",
  "output_tokens",
  "reasoning_tokens",
] as const;

/** A usage command's model and token counts. */
export interface UsageTokens {
  readonly model: string;
  readonly tokens: Readonly<Record<(typeof USAGE_TOKEN_FIELDS)[number], bigint>>;
}

/** The wire TokenClass values 1-6, in USAGE_TOKEN_FIELDS order (rate_cards.proto). */
const TOKEN_CLASS_FIELDS: Readonly<Record<number, (typeof USAGE_TOKEN_FIELDS)[number]>> = Object.fromEntries(
  USAGE_TOKEN_FIELDS.map((field, i) => [i + 1, field]),
);

/** Counts token legs by class: the legs' classes as rows (`input`) or wire values (1). */
function usageTokens(model: string, legs: readonly { tokenClass: string | number; amount: bigint }[]): UsageTokens {
  const tokens = Object.fromEntries(USAGE_TOKEN_FIELDS.map((field) => [field, 0n])) as Record<(typeof USAGE_TOKEN_FIELDS)[number], bigint>;
  for (const leg of legs) {
    const field = typeof leg.tokenClass === "number" ? TOKEN_CLASS_FIELDS[leg.tokenClass] : (`${leg.tokenClass}_tokens` as (typeof USAGE_TOKEN_FIELDS)[number]);
    if (field !== undefined && field in tokens) tokens[field] += leg.amount;
  }
  return { model, tokens };
}

/** The event types that carry usage, and the kind each maps to. */
export const USAGE_EVENT_TYPES: Readonly<Record<string, UsageKind>> = {
  "holdfast.spend.completed": "spend",
  "holdfast.hold.captured": "capture",
  "holdfast.refund.completed": "refund",
};

/** The usage record of an event, or null for events that carry no usage (deposits, holds, ...). */
export function usageFromEvent(event: Event): UsageRecord | null {
  const transfer = usageTransfer(event);
  if (transfer === undefined) return null;
  const legs = event.payload.case === "spendCompleted" || event.payload.case === "holdCaptured" ? event.payload.value.tokenTransfers : [];
  const kind = USAGE_EVENT_TYPES[event.type];
  if (kind === undefined) return null;
  return {
    tenantId: event.tenantId,
    walletId: event.walletId,
    transferId: transfer.transferId,
    kind,
    asset: transfer.asset,
    amount: transfer.amount,
    occurredAt: transfer.createdAt ? timestampDate(transfer.createdAt) : new Date(0),
    metadata: { ...transfer.metadata },
    refundOf: transfer.refundOfTransferId === "" ? null : transfer.refundOfTransferId,
    usage: transfer.usageId === "" ? null : usageTokens(transfer.model, legs),
  };
}

function usageTransfer(event: Event): Transfer | undefined {
  switch (event.payload.case) {
    case "spendCompleted":
    case "refundCompleted":
    case "holdCaptured":
      return event.payload.value.transfer;
    default:
      return undefined;
  }
}

/** A row of `transfers` as the backfill reads it. */
export interface TransferRow {
  tenant_id: string;
  transfer_id: string;
  kind: string;
  debit_wallet_id: string;
  credit_wallet_id: string;
  asset: string;
  amount: bigint;
  refund_of: string | null;
  metadata: Record<string, string>;
  created_at: Date;
  /** The usage command's model and its token legs ({token_class, amount}); null for other rows. */
  usage_model: string | null;
  usage_legs: { token_class: string; amount: string }[] | null;
}

/** The usage record of a journal row; the row must be a spend, capture or refund. */
export function usageFromTransferRow(row: TransferRow): UsageRecord {
  const kind = row.kind as UsageKind;
  return {
    tenantId: row.tenant_id,
    walletId: kind === "refund" ? row.credit_wallet_id : row.debit_wallet_id,
    transferId: row.transfer_id,
    kind,
    asset: row.asset,
    amount: row.amount,
    occurredAt: row.created_at,
    metadata: { ...row.metadata },
    refundOf: row.refund_of,
    usage:
      row.usage_model === null
        ? null
        : usageTokens(row.usage_model, (row.usage_legs ?? []).map((l) => ({ tokenClass: l.token_class, amount: BigInt(l.amount) }))),
  };
}
