import type { TokenClass } from "@holdfast/metering/pricing";

/**
 * The ledger's domain values, as the service core hands them to the RPC layer, and the inputs
 * it takes from it. Amounts are bigint minor units; nothing here is a float.
 */

export type HoldStatus = "pending" | "captured" | "released" | "expired";
export type WalletStatus = "active" | "frozen" | "closed";
export type TransferKind =
  | "deposit"
  | "spend"
  | "reserve"
  | "capture"
  | "release"
  | "expire"
  | "refund"
  | "transfer"
  | "grant"
  | "breakage"
  | "usage";
export type GrantStatus = "scheduled" | "active" | "exhausted" | "expired" | "voided";

export type Metadata = Record<string, string>;

export interface Balance {
  asset: string;
  posted: bigint;
  held: bigint;
  available: bigint;
  creditLimit: bigint;
  /** In grants that have not started yet: part of posted, not of available. */
  scheduled: bigint;
}

/** What one grant (or "@credit", the credit line) contributed to a hold or a journal row. */
export interface GrantAmount {
  grantId: string;
  amount: bigint;
}

export interface Transfer {
  transferId: string;
  kind: TransferKind;
  debitWalletId: string;
  creditWalletId: string;
  asset: string;
  amount: bigint;
  holdId: string | null;
  refundOf: string | null;
  createdAt: Date;
  metadata: Metadata;
  /** Which grants paid, or which the money went to (see docs/grants.md); empty before grants. */
  grants: GrantAmount[];
  /** For a transfer between wallets: where the money went in the receiving wallet. */
  creditGrants: GrantAmount[];
  /**
   * The usage command that wrote the row, on its token legs and its money leg; null otherwise.
   * docs/metering.md, "The usage commands".
   */
  usageId: string | null;
  /** The model priced, with usageId. */
  model: string | null;
  /** For a token leg (kind usage): the class of the tokens counted in amount. */
  tokenClass: TokenClass | null;
}

export interface Hold {
  holdId: string;
  walletId: string;
  asset: string;
  amount: bigint;
  capturedAmount: bigint;
  status: HoldStatus;
  reserveTransferId: string;
  expiresAt: Date;
  createdAt: Date;
  closedAt: Date | null;
  metadata: Metadata;
  /** The grants the hold draws on, in consumption order, summing to its amount. */
  allocations: GrantAmount[];
  /** The Reserve's category filter; empty: every category. */
  categories: string[];
  /** For a ReserveUsage hold: the rate card version CaptureUsage prices with; null otherwise. */
  pin: UsagePin | null;
}

/** The rate card version and model a usage hold was priced with. */
export interface UsagePin {
  rateCardId: string;
  rateCardVersion: number;
  model: string;
}

/** A credit grant as callers see it at the time it is read (docs/grants.md). */
export interface Grant {
  grantId: string;
  walletId: string;
  asset: string;
  category: string;
  priority: number;
  amount: bigint;
  remaining: bigint;
  held: bigint;
  consumed: bigint;
  expired: bigint;
  voided: bigint;
  startsAt: Date;
  /** Null: never expires. */
  expiresAt: Date | null;
  voidedAt: Date | null;
  status: GrantStatus;
  createdAt: Date;
  metadata: Metadata;
}

export interface Wallet {
  walletId: string;
  status: WalletStatus;
  metadata: Metadata;
  eventSeq: bigint;
  balances: Balance[];
  createdAt: Date;
  updatedAt: Date;
}

/**
 * Why the ledger refused a command. These are operating errors: values returned to the caller,
 * recorded for idempotent replays, never exceptions.
 */
export type RefusalReason =
  | "INSUFFICIENT_FUNDS"
  | "WALLET_FROZEN"
  | "WALLET_CLOSED"
  | "HOLD_EXPIRED"
  | "HOLD_NOT_PENDING"
  | "REFUND_EXCEEDS_REMAINING"
  | "NOT_REFUNDABLE"
  | "WALLET_NOT_FOUND"
  | "HOLD_NOT_FOUND"
  | "TRANSFER_NOT_FOUND"
  | "IDEMPOTENCY_KEY_REUSED"
  | "HOLD_ALREADY_EXISTS"
  | "WALLET_ALREADY_EXISTS"
  | "GRANT_NOT_FOUND"
  | "GRANT_ALREADY_EXISTS"
  | "GRANT_NOT_ACTIVE"
  | "INVALID_FIELD"
  | "AMOUNT_OVERFLOW";

export interface Refusal {
  ok: false;
  reason: RefusalReason;
  message: string;
  metadata: Record<string, string>;
}

/** The outcome of a command: its result, or the refusal. `replayed` marks idempotent replays. */
export type Outcome<T> = ({ ok: true; replayed: boolean } & T) | Refusal;

/** Who is calling: the tenant, and the single wallet the key is limited to, if any. */
export interface Caller {
  tenantId: string;
  scopeWalletId: string | null;
  /**
   * The API key acting, recorded on every journal row and event the call writes (key_id);
   * absent for callers without a key (tests, the benchmark's core rows).
   */
  keyId?: string | null;
}

/** A JSON object as the SQL functions take and return it. */
export type Json = Record<string, unknown>;

export interface DepositInput {
  walletId: string;
  asset: string;
  amount: bigint;
  idempotencyKey: string;
  metadata: Metadata;
}
export interface SpendInput extends DepositInput {
  /** Draw only on grants of these categories (then the credit line); absent or empty: every grant. */
  categories?: readonly string[];
}

export interface ReserveInput extends SpendInput {
  /** Empty: generate one. */
  holdId: string;
  ttlSeconds: number;
}

export interface CreateGrantInput {
  walletId: string;
  asset: string;
  amount: bigint;
  /** Empty: generate one. */
  grantId: string;
  /** Null: "default". */
  category: string | null;
  /** Null: 100. */
  priority: number | null;
  /** Null: now. */
  startsAt: Date | null;
  /** Null: never. */
  expiresAt: Date | null;
  idempotencyKey: string;
  metadata: Metadata;
}

export interface VoidGrantInput {
  grantId: string;
  idempotencyKey: string;
}

export interface ListGrantsInput {
  walletId: string;
  /** Empty: every asset. */
  asset: string;
  includeClosed: boolean;
  pageSize: number;
  pageToken: string;
}

export interface CaptureInput {
  holdId: string;
  /** Null: the whole hold. */
  amount: bigint | null;
  idempotencyKey: string;
  metadata: Metadata;
}

export interface HoldCommandInput {
  holdId: string;
  idempotencyKey: string;
}

export interface ExtendHoldInput extends HoldCommandInput {
  ttlSeconds: number;
}

export interface RefundInput {
  transferId: string;
  /** Null: all that remains refundable. */
  amount: bigint | null;
  idempotencyKey: string;
  metadata: Metadata;
}

export interface TransferInput {
  fromWalletId: string;
  toWalletId: string;
  asset: string;
  amount: bigint;
  idempotencyKey: string;
  metadata: Metadata;
}

export interface UpdateWalletInput {
  walletId: string;
  status: WalletStatus | null;
  creditLimits: { asset: string; creditLimit: bigint }[];
  metadata: Metadata;
}

/** The results of the commands, before the outcome wraps them. */
export interface TransferResult {
  transfer: Transfer;
  balance: Balance;
}
/** Refund: also what landed in expired or voided grants and went on to @breakage. */
export interface RefundResult extends TransferResult {
  breakage: bigint;
}
/** CreateGrant and VoidGrant; VoidGrant's transfer is null when nothing was left unheld. */
export interface GrantResult {
  grant: Grant;
  balance: Balance;
  transfer: Transfer | null;
}
export interface HoldResult {
  hold: Hold;
  balance: Balance;
}
export interface CaptureResult {
  transfer: Transfer;
  hold: Hold;
  balance: Balance;
}
export interface TransferBetweenResult {
  transfer: Transfer;
  fromBalance: Balance;
  toBalance: Balance;
}
export interface WalletResult {
  wallet: Wallet;
}

export interface Page<T> {
  items: T[];
  /** Opaque cursor for the next page; empty on the last page. */
  nextPageToken: string;
}
