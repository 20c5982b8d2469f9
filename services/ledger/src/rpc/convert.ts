import { Code, type ConnectError } from "@connectrpc/connect";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { ledgerError, invalidArgument } from "@holdfast/common/errors";
import {
  HoldStatus,
  TransferKind,
  WalletStatus,
  type BalanceSchema,
  type HoldSchema,
  type TransferSchema,
  type WalletSchema,
} from "@holdfast/gen/holdfast/v1/types_pb";
import type * as domain from "../domain/types.js";

/** Mapping between the domain values and the holdfast.v1 messages. */

export function toBalance(b: domain.Balance): MessageInitShape<typeof BalanceSchema> {
  return { asset: b.asset, posted: b.posted, held: b.held, available: b.available, creditLimit: b.creditLimit };
}

const transfer_kinds: Record<domain.TransferKind, TransferKind> = {
  deposit: TransferKind.DEPOSIT,
  spend: TransferKind.SPEND,
  reserve: TransferKind.RESERVE,
  capture: TransferKind.CAPTURE,
  release: TransferKind.RELEASE,
  expire: TransferKind.EXPIRE,
  refund: TransferKind.REFUND,
  transfer: TransferKind.TRANSFER,
};

export function toTransfer(t: domain.Transfer): MessageInitShape<typeof TransferSchema> {
  return {
    transferId: t.transferId,
    kind: transfer_kinds[t.kind],
    debitWalletId: t.debitWalletId,
    creditWalletId: t.creditWalletId,
    asset: t.asset,
    amount: t.amount,
    holdId: t.holdId ?? "",
    refundOfTransferId: t.refundOf ?? "",
    createdAt: timestampFromDate(t.createdAt),
    metadata: t.metadata,
  };
}

const hold_statuses: Record<domain.HoldStatus, HoldStatus> = {
  pending: HoldStatus.PENDING,
  captured: HoldStatus.CAPTURED,
  released: HoldStatus.RELEASED,
  expired: HoldStatus.EXPIRED,
};

export function toHold(h: domain.Hold): MessageInitShape<typeof HoldSchema> {
  return {
    holdId: h.holdId,
    walletId: h.walletId,
    asset: h.asset,
    amount: h.amount,
    capturedAmount: h.capturedAmount,
    status: hold_statuses[h.status],
    createdAt: timestampFromDate(h.createdAt),
    expiresAt: timestampFromDate(h.expiresAt),
    closedAt: h.closedAt ? timestampFromDate(h.closedAt) : undefined,
    metadata: h.metadata,
    reserveTransferId: h.reserveTransferId,
  };
}

/** The domain status for a HoldStatus filter; null for UNSPECIFIED (every status). */
export function fromHoldStatus(status: HoldStatus): domain.HoldStatus | null {
  const found = Object.entries(hold_statuses).find(([, value]) => value === status);
  if (status !== HoldStatus.UNSPECIFIED && !found) {
    throw invalidArgument("status", "is not a known hold status");
  }
  return found ? (found[0] as domain.HoldStatus) : null;
}

const wallet_statuses: Record<domain.WalletStatus, WalletStatus> = {
  active: WalletStatus.ACTIVE,
  frozen: WalletStatus.FROZEN,
  closed: WalletStatus.CLOSED,
};

export function fromWalletStatus(status: WalletStatus): domain.WalletStatus {
  const found = Object.entries(wallet_statuses).find(([, value]) => value === status);
  if (!found) {
    throw invalidArgument("status", "must be ACTIVE, FROZEN or CLOSED");
  }
  return found[0] as domain.WalletStatus;
}

export function toWallet(w: domain.Wallet): MessageInitShape<typeof WalletSchema> {
  return {
    walletId: w.walletId,
    status: wallet_statuses[w.status],
    metadata: w.metadata,
    balances: w.balances.map(toBalance),
    createdAt: timestampFromDate(w.createdAt),
    updatedAt: timestampFromDate(w.updatedAt),
  };
}

const refusal_codes: Record<domain.RefusalReason, Code> = {
  INSUFFICIENT_FUNDS: Code.FailedPrecondition,
  WALLET_FROZEN: Code.FailedPrecondition,
  WALLET_CLOSED: Code.FailedPrecondition,
  HOLD_EXPIRED: Code.FailedPrecondition,
  HOLD_NOT_PENDING: Code.FailedPrecondition,
  REFUND_EXCEEDS_REMAINING: Code.FailedPrecondition,
  NOT_REFUNDABLE: Code.FailedPrecondition,
  WALLET_NOT_FOUND: Code.NotFound,
  HOLD_NOT_FOUND: Code.NotFound,
  TRANSFER_NOT_FOUND: Code.NotFound,
  IDEMPOTENCY_KEY_REUSED: Code.AlreadyExists,
  HOLD_ALREADY_EXISTS: Code.AlreadyExists,
  WALLET_ALREADY_EXISTS: Code.AlreadyExists,
  AMOUNT_OVERFLOW: Code.InvalidArgument,
};

/** The Connect error for a refusal, with its reason in the ErrorDetail. */
export function refusalError(refusal: domain.Refusal): ConnectError {
  if (refusal.reason === "AMOUNT_OVERFLOW") {
    return invalidArgument(refusal.metadata["field"] ?? "amount", refusal.message);
  }
  return ledgerError(refusal_codes[refusal.reason], refusal.reason, refusal.message, { metadata: refusal.metadata });
}

/** Unwraps an outcome: the result, or a thrown refusal error. */
export function unwrap<T>(outcome: domain.Outcome<T>): T & { replayed: boolean } {
  if (!outcome.ok) {
    throw refusalError(outcome);
  }
  return outcome;
}
