import type { TokenClass } from "@holdfast/metering/pricing";
import type {
  Balance,
  CaptureResult,
  Grant,
  GrantAmount,
  GrantResult,
  GrantStatus,
  Hold,
  HoldResult,
  HoldStatus,
  Json,
  Metadata,
  Outcome,
  Refusal,
  RefusalReason,
  RefundResult,
  Transfer,
  TransferBetweenResult,
  TransferKind,
  TransferResult,
  Wallet,
  WalletResult,
  WalletStatus,
} from "./types.js";

/**
 * Parsers for the JSON the SQL functions return (see migrations/0002_ledger.sql: the
 * ledger_*_json functions). Amounts arrive as decimal strings so that int64 survives JSON.
 */

function str(row: Json, key: string): string {
  const value = row[key];
  if (typeof value !== "string") {
    throw new Error(`ledger row: ${key} is not a string`);
  }
  return value;
}

function optStr(row: Json, key: string): string | null {
  const value = row[key];
  return typeof value === "string" ? value : null;
}

function int(row: Json, key: string): bigint {
  return BigInt(str(row, key));
}

function time(row: Json, key: string): Date {
  return new Date(str(row, key));
}

function optTime(row: Json, key: string): Date | null {
  const value = optStr(row, key);
  return value === null ? null : new Date(value);
}

function metadata(row: Json): Metadata {
  return (row["metadata"] ?? {}) as Metadata;
}

/** An amount rows written before grants (migration 0008) do not carry: zero then. */
function optInt(row: Json, key: string): bigint {
  return row[key] === undefined || row[key] === null ? 0n : int(row, key);
}

/** A list of {grant_id, amount}; absent on rows written before grants. */
function grantAmounts(row: Json, key: string): GrantAmount[] {
  const entries = (row[key] ?? []) as Json[];
  return entries.map((e) => ({ grantId: str(e, "grant_id"), amount: int(e, "amount") }));
}

export function parseBalance(row: Json): Balance {
  return {
    asset: str(row, "asset"),
    posted: int(row, "posted"),
    held: int(row, "held"),
    available: int(row, "available"),
    creditLimit: int(row, "credit_limit"),
    scheduled: optInt(row, "scheduled"),
  };
}

export function parseTransfer(row: Json): Transfer {
  return {
    transferId: str(row, "transfer_id"),
    kind: str(row, "kind") as TransferKind,
    debitWalletId: str(row, "debit_wallet_id"),
    creditWalletId: str(row, "credit_wallet_id"),
    asset: str(row, "asset"),
    amount: int(row, "amount"),
    holdId: optStr(row, "hold_id"),
    refundOf: optStr(row, "refund_of"),
    createdAt: time(row, "created_at"),
    metadata: metadata(row),
    grants: grantAmounts(row, "grants"),
    creditGrants: grantAmounts(row, "credit_grants"),
    usageId: optStr(row, "usage_id"),
    model: optStr(row, "model"),
    tokenClass: optStr(row, "token_class") as TokenClass | null,
  };
}

/**
 * A hold as callers see it at `now`: one still pending in the table but past its expiry is
 * reported as expired, since it no longer blocks funds and can no longer be captured. With
 * `now` null the hold is reported as the row says: an idempotent replay answers the original
 * response, whose balance still counts the hold as held.
 */
export function parseHold(row: Json, now: Date | null): Hold {
  const expiresAt = time(row, "expires_at");
  const stored = str(row, "status") as HoldStatus;
  const lapsed = now !== null && stored === "pending" && expiresAt.getTime() <= now.getTime();
  const closedAt = optStr(row, "closed_at");
  return {
    holdId: str(row, "hold_id"),
    walletId: str(row, "wallet_id"),
    asset: str(row, "asset"),
    amount: int(row, "amount"),
    capturedAmount: int(row, "captured_amount"),
    status: lapsed ? "expired" : stored,
    reserveTransferId: str(row, "reserve_transfer_id"),
    expiresAt,
    createdAt: time(row, "created_at"),
    closedAt: lapsed ? expiresAt : closedAt === null ? null : new Date(closedAt),
    metadata: metadata(row),
    allocations: grantAmounts(row, "allocations"),
    categories: (row["categories"] ?? []) as string[],
    pin: typeof row["rate_card_id"] === "string"
      ? { rateCardId: str(row, "rate_card_id"), rateCardVersion: Number(row["rate_card_version"]), model: str(row, "model") }
      : null,
  };
}

/** A grant as the SQL reports it at the time of the read or command (ledger_grant_json). */
export function parseGrant(row: Json): Grant {
  return {
    grantId: str(row, "grant_id"),
    walletId: str(row, "wallet_id"),
    asset: str(row, "asset"),
    category: str(row, "category"),
    priority: Number(row["priority"]),
    amount: int(row, "amount"),
    remaining: int(row, "remaining"),
    held: int(row, "held"),
    consumed: int(row, "consumed"),
    expired: int(row, "expired"),
    voided: int(row, "voided"),
    startsAt: time(row, "starts_at"),
    expiresAt: optTime(row, "expires_at"),
    voidedAt: optTime(row, "voided_at"),
    status: str(row, "status") as GrantStatus,
    createdAt: time(row, "created_at"),
    metadata: metadata(row),
  };
}

export function parseWallet(row: Json): Wallet {
  return {
    walletId: str(row, "wallet_id"),
    status: str(row, "status") as WalletStatus,
    metadata: metadata(row),
    eventSeq: int(row, "event_seq"),
    balances: (row["balances"] as Json[]).map(parseBalance),
    createdAt: time(row, "created_at"),
    updatedAt: time(row, "updated_at"),
  };
}

export function parseRefusal(row: Json): Refusal {
  return {
    ok: false,
    reason: str(row, "reason") as RefusalReason,
    message: str(row, "message"),
    metadata: (row["metadata"] ?? {}) as Record<string, string>,
  };
}

/** A command's row as its outcome: the refusal, or the result `parse` reads from the row. */
export function parseOutcome<T>(row: Json, parse: (row: Json) => T): Outcome<T> {
  if (row["ok"] !== true) {
    return parseRefusal(row);
  }
  return { ok: true, replayed: row["replayed"] === true, ...parse(row) };
}

/** The result of Deposit, Spend and Refund. */
export function parseTransferResult(row: Json): TransferResult {
  return { transfer: parseTransfer(row["transfer"] as Json), balance: parseBalance(row["balance"] as Json) };
}

/** The result of Refund; `breakage` is absent from answers recorded before grants. */
export function parseRefundResult(row: Json): RefundResult {
  return { ...parseTransferResult(row), breakage: optInt(row, "breakage") };
}

/** The result of CreateGrant and VoidGrant (VoidGrant's transfer may be null). */
export function parseGrantResult(row: Json): GrantResult {
  const transfer = row["transfer"] as Json | null | undefined;
  return {
    grant: parseGrant(row["grant"] as Json),
    balance: parseBalance(row["balance"] as Json),
    transfer: transfer ? parseTransfer(transfer) : null,
  };
}

/** The result of Reserve and Release; `now` decides whether a pending hold has lapsed (null: never). */
export function parseHoldResult(row: Json, now: Date | null): HoldResult {
  return { hold: parseHold(row["hold"] as Json, now), balance: parseBalance(row["balance"] as Json) };
}

export function parseCaptureResult(row: Json, now: Date | null): CaptureResult {
  return { ...parseTransferResult(row), hold: parseHold(row["hold"] as Json, now) };
}

export function parseTransferBetweenResult(row: Json): TransferBetweenResult {
  return {
    transfer: parseTransfer(row["transfer"] as Json),
    fromBalance: parseBalance(row["from_balance"] as Json),
    toBalance: parseBalance(row["to_balance"] as Json),
  };
}

export function parseWalletResult(row: Json): WalletResult {
  return { wallet: parseWallet(row["wallet"] as Json) };
}
