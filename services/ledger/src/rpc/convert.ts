import type { MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { InvalidFieldError, RefusedError } from "@holdfast/common/errors";
import {
  GrantStatus,
  HoldStatus,
  TransferKind,
  WalletStatus,
  type BalanceSchema,
  type GrantAmountSchema,
  type GrantSchema,
  type HoldSchema,
  type TransferSchema,
  type WalletSchema,
} from "@holdfast/gen/holdfast/v1/types_pb";
import { TokenClass } from "@holdfast/gen/holdfast/v1/rate_cards_pb";
import type { TokenClass as MeteringClass } from "@holdfast/metering/pricing";
import type * as domain from "../domain/types.js";

/** Mapping between the domain values and the holdfast.v1 messages. */

export function toBalance(b: domain.Balance): MessageInitShape<typeof BalanceSchema> {
  return {
    asset: b.asset,
    posted: b.posted,
    held: b.held,
    available: b.available,
    creditLimit: b.creditLimit,
    scheduled: b.scheduled,
  };
}

export function toGrantAmounts(amounts: readonly domain.GrantAmount[]): MessageInitShape<typeof GrantAmountSchema>[] {
  return amounts.map((a) => ({ grantId: a.grantId, amount: a.amount }));
}

const TRANSFER_KINDS: Record<domain.TransferKind, TransferKind> = {
  deposit: TransferKind.DEPOSIT,
  spend: TransferKind.SPEND,
  reserve: TransferKind.RESERVE,
  capture: TransferKind.CAPTURE,
  release: TransferKind.RELEASE,
  expire: TransferKind.EXPIRE,
  refund: TransferKind.REFUND,
  transfer: TransferKind.TRANSFER,
  grant: TransferKind.GRANT,
  breakage: TransferKind.BREAKAGE,
  usage: TransferKind.USAGE,
};

/** The wire value of each token class (rate_cards.proto, TokenClass). */
export const WIRE_TOKEN_CLASSES: Readonly<Record<MeteringClass, TokenClass>> = {
  input: TokenClass.INPUT,
  cached_input: TokenClass.CACHED_INPUT,
  cache_write: TokenClass.CACHE_WRITE,
  cache_write_1h: TokenClass.CACHE_WRITE_1H,
  output: TokenClass.OUTPUT,
  reasoning: TokenClass.REASONING,
};

export function toTransfer(t: domain.Transfer): MessageInitShape<typeof TransferSchema> {
  return {
    transferId: t.transferId,
    kind: TRANSFER_KINDS[t.kind],
    debitWalletId: t.debitWalletId,
    creditWalletId: t.creditWalletId,
    asset: t.asset,
    amount: t.amount,
    holdId: t.holdId ?? "",
    refundOfTransferId: t.refundOf ?? "",
    createdAt: timestampFromDate(t.createdAt),
    metadata: t.metadata,
    grants: toGrantAmounts(t.grants),
    creditGrants: toGrantAmounts(t.creditGrants),
    usageId: t.usageId ?? "",
    model: t.model ?? "",
    tokenClass: t.tokenClass === null ? TokenClass.UNSPECIFIED : WIRE_TOKEN_CLASSES[t.tokenClass],
  };
}

const HOLD_STATUSES: Record<domain.HoldStatus, HoldStatus> = {
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
    status: HOLD_STATUSES[h.status],
    createdAt: timestampFromDate(h.createdAt),
    expiresAt: timestampFromDate(h.expiresAt),
    closedAt: h.closedAt ? timestampFromDate(h.closedAt) : undefined,
    metadata: h.metadata,
    reserveTransferId: h.reserveTransferId,
    allocations: toGrantAmounts(h.allocations),
    categories: h.categories,
    rateCardId: h.pin?.rateCardId ?? "",
    rateCardVersion: h.pin?.rateCardVersion ?? 0,
    model: h.pin?.model ?? "",
  };
}

/** The domain status for a HoldStatus filter; null for UNSPECIFIED (every status). */
export function fromHoldStatus(status: HoldStatus): domain.HoldStatus | null {
  const found = Object.entries(HOLD_STATUSES).find(([, value]) => value === status);
  if (status !== HoldStatus.UNSPECIFIED && !found) {
    throw new InvalidFieldError("status", "is not a known hold status");
  }
  return found ? (found[0] as domain.HoldStatus) : null;
}

const GRANT_STATUSES: Record<domain.GrantStatus, GrantStatus> = {
  scheduled: GrantStatus.SCHEDULED,
  active: GrantStatus.ACTIVE,
  exhausted: GrantStatus.EXHAUSTED,
  expired: GrantStatus.EXPIRED,
  voided: GrantStatus.VOIDED,
};

export function toGrant(g: domain.Grant): MessageInitShape<typeof GrantSchema> {
  return {
    grantId: g.grantId,
    walletId: g.walletId,
    asset: g.asset,
    category: g.category,
    priority: g.priority,
    amount: g.amount,
    remaining: g.remaining,
    held: g.held,
    consumed: g.consumed,
    expired: g.expired,
    voided: g.voided,
    startsAt: timestampFromDate(g.startsAt),
    expiresAt: g.expiresAt ? timestampFromDate(g.expiresAt) : undefined,
    status: GRANT_STATUSES[g.status],
    createdAt: timestampFromDate(g.createdAt),
    metadata: g.metadata,
    voidedAt: g.voidedAt ? timestampFromDate(g.voidedAt) : undefined,
  };
}

const WALLET_STATUSES: Record<domain.WalletStatus, WalletStatus> = {
  active: WalletStatus.ACTIVE,
  frozen: WalletStatus.FROZEN,
  closed: WalletStatus.CLOSED,
};

export function fromWalletStatus(status: WalletStatus): domain.WalletStatus {
  const found = Object.entries(WALLET_STATUSES).find(([, value]) => value === status);
  if (!found) {
    throw new InvalidFieldError("status", "must be ACTIVE, FROZEN or CLOSED");
  }
  return found[0] as domain.WalletStatus;
}

export function toWallet(w: domain.Wallet): MessageInitShape<typeof WalletSchema> {
  return {
    walletId: w.walletId,
    status: WALLET_STATUSES[w.status],
    metadata: w.metadata,
    balances: w.balances.map(toBalance),
    createdAt: timestampFromDate(w.createdAt),
    updatedAt: timestampFromDate(w.updatedAt),
  };
}

/**
 * Unwraps an outcome: the result, or a thrown refusal, which the routes' error interceptor
 * answers with the refusal's code and ErrorDetail.
 */
export function unwrap<T>(outcome: domain.Outcome<T>): T & { replayed: boolean } {
  if (!outcome.ok) {
    throw new RefusedError(outcome);
  }
  return outcome;
}
