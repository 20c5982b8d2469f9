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
  | "transfer";

export type Metadata = Record<string, string>;

export interface Balance {
  asset: string;
  posted: bigint;
  held: bigint;
  available: bigint;
  creditLimit: bigint;
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
export type SpendInput = DepositInput;

export interface ReserveInput extends DepositInput {
  /** Empty: generate one. */
  holdId: string;
  ttlSeconds: number;
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
