import type { ServiceImpl } from "@connectrpc/connect";
import { InvalidFieldError, NotFoundError } from "@holdfast/common/errors";
import { LedgerService } from "@holdfast/gen/holdfast/v1/ledger_pb";
import type { Ledger } from "../domain/ledger.js";
import type { Caller, DepositInput } from "../domain/types.js";
import type { WalletFeed } from "../watch.js";
import { callerOf } from "./auth.js";
import { usageHandlers } from "./usage-service.js";
import { batchHandlers } from "./batches.js";
import { statementHandlers } from "./statements.js";
import { fromHoldStatus, toBalance, toGrant, toHold, toTransfer, toWallet, unwrap } from "./convert.js";
import * as v from "./validate.js";

export interface LedgerServiceOptions {
  ledger: Ledger;
  feed: WalletFeed;
  defaultHoldTtlSeconds: number;
}

type Handlers = ServiceImpl<typeof LedgerService>;

/**
 * LedgerService handlers: validate, call the ledger core, map the outcome. They hold no logic
 * of their own: who may call what, wallet scope included, is decided before they run (the auth
 * interceptor applies scope.ts). What they throw (invalid fields, refusals, not found) is
 * answered by the routes' error interceptor.
 */
export function ledgerService(options: LedgerServiceOptions): Handlers {
  return { ...balanceHandlers(options), ...holdHandlers(options), ...walletHandlers(options), ...grantHandlers(options), ...statementHandlers(options), ...usageHandlers(options), ...batchHandlers(options) };
}

/** The commands that move funds at once: Deposit, Spend, Refund, Transfer. */
function balanceHandlers({ ledger }: LedgerServiceOptions): Pick<Handlers, "deposit" | "spend" | "refund" | "transfer"> {
  return {
    async deposit(req, ctx) {
      const r = unwrap(await ledger.deposit(callerOf(ctx), walletAmountInput(req)));
      return { transfer: toTransfer(r.transfer), balance: toBalance(r.balance), replayed: r.replayed };
    },

    async spend(req, ctx) {
      const input = { ...walletAmountInput(req), categories: v.categories(req.categories) };
      const r = unwrap(await ledger.spend(callerOf(ctx), input));
      return { transfer: toTransfer(r.transfer), balance: toBalance(r.balance), replayed: r.replayed };
    },

    async refund(req, ctx) {
      const input = {
        transferId: v.transferId(req.transferId),
        amount: v.optionalAmount(req.amount),
        idempotencyKey: v.idempotencyKey(req.idempotencyKey),
        metadata: v.metadata(req.metadata),
      };
      const r = unwrap(await ledger.refund(callerOf(ctx), input));
      return { transfer: toTransfer(r.transfer), balance: toBalance(r.balance), replayed: r.replayed, breakage: r.breakage };
    },

    async transfer(req, ctx) {
      const input = {
        fromWalletId: v.walletId(req.fromWalletId, "from_wallet_id"),
        toWalletId: v.walletId(req.toWalletId, "to_wallet_id"),
        asset: v.asset(req.asset),
        amount: v.amount(req.amount),
        idempotencyKey: v.idempotencyKey(req.idempotencyKey),
        metadata: v.metadata(req.metadata),
      };
      if (input.fromWalletId === input.toWalletId) {
        throw new InvalidFieldError("to_wallet_id", "must differ from from_wallet_id");
      }
      const r = unwrap(await ledger.transfer(callerOf(ctx), input));
      const balances = { fromBalance: toBalance(r.fromBalance), toBalance: toBalance(r.toBalance) };
      return { transfer: toTransfer(r.transfer), ...balances, replayed: r.replayed };
    },
  };
}

/** The hold lifecycle: Reserve, then Capture, Release or ExtendHold. */
function holdHandlers({ ledger, defaultHoldTtlSeconds }: LedgerServiceOptions): Pick<Handlers, "reserve" | "capture" | "release" | "extendHold"> {
  return {
    async reserve(req, ctx) {
      const caller = callerOf(ctx);
      const input = {
        ...walletAmountInput(req),
        holdId: v.optionalHoldId(req.holdId),
        ttlSeconds: v.ttlSeconds(req.ttlSeconds, defaultHoldTtlSeconds),
        categories: v.categories(req.categories),
      };
      const r = unwrap(await ledger.reserve(caller, input));
      return { hold: toHold(r.hold), balance: toBalance(r.balance), replayed: r.replayed };
    },

    async capture(req, ctx) {
      const input = {
        holdId: v.holdId(req.holdId),
        amount: v.optionalAmount(req.amount),
        idempotencyKey: v.idempotencyKey(req.idempotencyKey),
        metadata: v.metadata(req.metadata),
      };
      const r = unwrap(await ledger.capture(callerOf(ctx), input));
      return { transfer: toTransfer(r.transfer), hold: toHold(r.hold), balance: toBalance(r.balance), replayed: r.replayed };
    },

    async release(req, ctx) {
      const input = { holdId: v.holdId(req.holdId), idempotencyKey: v.idempotencyKey(req.idempotencyKey) };
      const r = unwrap(await ledger.release(callerOf(ctx), input));
      return { hold: toHold(r.hold), balance: toBalance(r.balance), replayed: r.replayed };
    },

    async extendHold(req, ctx) {
      const input = {
        holdId: v.holdId(req.holdId),
        ttlSeconds: v.ttlSeconds(req.ttlSeconds, null),
        idempotencyKey: v.idempotencyKey(req.idempotencyKey),
      };
      const r = unwrap(await ledger.extendHold(callerOf(ctx), input));
      return { hold: toHold(r.hold), replayed: r.replayed };
    },
  };
}

/** Wallets and the reads: CreateWallet, GetWallet, GetHold, the lists and WatchWallet. */
function walletHandlers({
  ledger,
  feed,
}: LedgerServiceOptions): Pick<Handlers, "createWallet" | "getWallet" | "getHold" | "listTransfers" | "listHolds" | "watchWallet"> {
  return {
    async createWallet(req, ctx) {
      const caller = callerOf(ctx);
      const r = unwrap(await ledger.createWallet(caller, v.walletId(req.walletId), v.metadata(req.metadata)));
      return { wallet: toWallet(r.wallet) };
    },

    async getWallet(req, ctx) {
      const caller = callerOf(ctx);
      const wallet = await existingWallet(ledger, caller, v.walletId(req.walletId));
      return { wallet: toWallet(wallet) };
    },

    async getHold(req, ctx) {
      const hold = await ledger.getHold(callerOf(ctx), v.holdId(req.holdId));
      if (!hold) {
        throw new NotFoundError("HOLD_NOT_FOUND", "hold not found");
      }
      return { hold: toHold(hold) };
    },

    async listTransfers(req, ctx) {
      const caller = callerOf(ctx);
      const walletId = v.walletId(req.walletId);
      const asset = req.asset === "" ? "" : v.asset(req.asset);
      const page = await ledger.listTransfers(caller, walletId, asset, v.pageSize(req.pageSize), req.pageToken);
      return { transfers: page.items.map(toTransfer), nextPageToken: page.nextPageToken };
    },

    async listHolds(req, ctx) {
      const caller = callerOf(ctx);
      const walletId = v.walletId(req.walletId);
      const status = fromHoldStatus(req.status);
      const page = await ledger.listHolds(caller, walletId, status, v.pageSize(req.pageSize), req.pageToken);
      return { holds: page.items.map(toHold), nextPageToken: page.nextPageToken };
    },

    async *watchWallet(req, ctx) {
      const caller = callerOf(ctx);
      const walletId = v.walletId(req.walletId);
      const wallet = await existingWallet(ledger, caller, walletId);
      for (const balance of wallet.balances) {
        yield { walletId, balance: toBalance(balance), sequence: wallet.eventSeq, eventType: "snapshot" };
      }
      for await (const change of feed.follow(caller.tenantId, walletId, wallet.eventSeq, ctx.signal)) {
        yield { walletId, balance: toBalance(change.balance), sequence: change.seq, eventType: change.type };
      }
    },
  };
}

/** Credit grants: CreateGrant, VoidGrant, GetGrant and ListGrants (docs/grants.md). */
function grantHandlers({ ledger }: LedgerServiceOptions): Pick<Handlers, "createGrant" | "voidGrant" | "getGrant" | "listGrants"> {
  return {
    async createGrant(req, ctx) {
      const input = {
        walletId: v.walletId(req.walletId),
        asset: v.asset(req.asset),
        amount: v.amount(req.amount),
        grantId: v.optionalGrantId(req.grantId),
        category: v.optionalCategory(req.category),
        priority: v.optionalPriority(req.priority),
        startsAt: v.optionalTimestamp(req.startsAt, "starts_at"),
        expiresAt: v.optionalTimestamp(req.expiresAt, "expires_at"),
        idempotencyKey: v.idempotencyKey(req.idempotencyKey),
        metadata: v.metadata(req.metadata),
      };
      v.grantWindow(input.startsAt, input.expiresAt);
      const r = unwrap(await ledger.createGrant(callerOf(ctx), input));
      const transfer = r.transfer ? toTransfer(r.transfer) : undefined;
      return { grant: toGrant(r.grant), balance: toBalance(r.balance), transfer, replayed: r.replayed };
    },

    async voidGrant(req, ctx) {
      const input = { grantId: v.grantId(req.grantId), idempotencyKey: v.idempotencyKey(req.idempotencyKey) };
      const r = unwrap(await ledger.voidGrant(callerOf(ctx), input));
      const transfer = r.transfer ? toTransfer(r.transfer) : undefined;
      return { grant: toGrant(r.grant), balance: toBalance(r.balance), transfer, replayed: r.replayed };
    },

    async getGrant(req, ctx) {
      const grant = await ledger.getGrant(callerOf(ctx), v.grantId(req.grantId));
      if (!grant) {
        throw new NotFoundError("GRANT_NOT_FOUND", "grant not found");
      }
      return { grant: toGrant(grant) };
    },

    async listGrants(req, ctx) {
      const input = {
        walletId: v.walletId(req.walletId),
        asset: req.asset === "" ? "" : v.asset(req.asset),
        includeClosed: req.includeClosed,
        pageSize: v.pageSize(req.pageSize),
        pageToken: req.pageToken,
      };
      const page = await ledger.listGrants(callerOf(ctx), input);
      return { grants: page.items.map(toGrant), nextPageToken: page.nextPageToken };
    },
  };
}

/** The fields Deposit, Spend and Reserve share, validated. */
function walletAmountInput(
  req: { walletId: string; asset: string; amount: bigint; idempotencyKey: string; metadata: Record<string, string> },
): DepositInput {
  const input = {
    walletId: v.walletId(req.walletId),
    asset: v.asset(req.asset),
    amount: v.amount(req.amount),
    idempotencyKey: v.idempotencyKey(req.idempotencyKey),
    metadata: v.metadata(req.metadata),
  };
  return input;
}

async function existingWallet(ledger: Ledger, caller: Caller, walletId: string) {
  const wallet = await ledger.getWallet(caller, walletId);
  if (!wallet) {
    throw new NotFoundError("WALLET_NOT_FOUND", "wallet not found");
  }
  return wallet;
}
