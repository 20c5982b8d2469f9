/**
 * The metered usage handlers of LedgerService: ReserveUsage, CaptureUsage and SpendUsage
 * (proto/holdfast/v1/usage.proto). Like the other handlers they validate, call the ledger core
 * (domain/usage.ts) and map the outcome; who may call them is scope.ts's table. Pricing and
 * every check that needs the rate card happen in the command's SQL, after the wallet's lock.
 *
 * @module
 */
import type { ServiceImpl } from "@connectrpc/connect";
import { InvalidFieldError } from "@holdfast/common/errors";
import type { LedgerService } from "@holdfast/gen/holdfast/v1/ledger_pb";
import type { TokenUsage as WireTokenUsage } from "@holdfast/gen/holdfast/v1/rate_cards_pb";
import { TOKEN_CLASSES, type TokenClass, type TokenUsage } from "@holdfast/metering/pricing";
import type { Ledger } from "../domain/ledger.js";
import { RATE_CARD_ID_PATTERN } from "../domain/rate-cards.js";
import type { UsageCharge } from "../domain/usage.js";
import { callerOf } from "./auth.js";
import { toBalance, toHold, toTransfer, unwrap } from "./convert.js";
import { MODEL_PATTERN, toQuoteMessage } from "./rate-card-service.js";
import * as v from "./validate.js";

type Handlers = ServiceImpl<typeof LedgerService>;

export interface UsageHandlersOptions {
  ledger: Ledger;
  defaultHoldTtlSeconds: number;
}

/** The wire name of each class's token count. */
const USAGE_FIELDS = {
  input: "inputTokens",
  cached_input: "cachedInputTokens",
  cache_write: "cacheWriteTokens",
  cache_write_1h: "cacheWrite1hTokens",
  output: "outputTokens",
  reasoning: "reasoningTokens",
} as const satisfies Record<TokenClass, keyof WireTokenUsage>;

/** ReserveUsage, CaptureUsage and SpendUsage. */
export function usageHandlers({ ledger, defaultHoldTtlSeconds }: UsageHandlersOptions): Pick<Handlers, "reserveUsage" | "captureUsage" | "spendUsage"> {
  return {
    async reserveUsage(req, ctx) {
      const input = {
        walletId: v.walletId(req.walletId),
        rateCardId: rateCardId(req.rateCardId),
        model: model(req.model),
        estimate: tokenUsage(req.estimate, "estimate", { countsSomething: true }),
        holdId: v.optionalHoldId(req.holdId),
        ttlSeconds: v.ttlSeconds(req.ttlSeconds, defaultHoldTtlSeconds),
        idempotencyKey: v.idempotencyKey(req.idempotencyKey),
        metadata: v.metadata(req.metadata),
        categories: v.categories(req.categories),
      };
      const r = unwrap(await ledger.reserveUsage(callerOf(ctx), input));
      return { hold: toHold(r.hold), quote: toQuoteMessage(r.quote), balance: toBalance(r.balance), replayed: r.replayed };
    },

    async captureUsage(req, ctx) {
      const input = {
        holdId: v.holdId(req.holdId),
        usage: tokenUsage(req.usage, "usage", { countsSomething: false }),
        idempotencyKey: v.idempotencyKey(req.idempotencyKey),
        metadata: v.metadata(req.metadata),
      };
      const r = unwrap(await ledger.captureUsage(callerOf(ctx), input));
      return { ...chargeMessage(r), transfer: toTransfer(r.transfer), hold: toHold(r.hold), replayed: r.replayed };
    },

    async spendUsage(req, ctx) {
      const input = {
        walletId: v.walletId(req.walletId),
        rateCardId: rateCardId(req.rateCardId),
        model: model(req.model),
        usage: tokenUsage(req.usage, "usage", { countsSomething: true }),
        idempotencyKey: v.idempotencyKey(req.idempotencyKey),
        metadata: v.metadata(req.metadata),
        categories: v.categories(req.categories),
      };
      const r = unwrap(await ledger.spendUsage(callerOf(ctx), input));
      const transfer = r.transfer === null ? undefined : toTransfer(r.transfer);
      return { ...chargeMessage(r), transfer, replayed: r.replayed };
    },
  };
}

/** The charge fields of CaptureUsage's and SpendUsage's answers (also a batch's, rpc/batches.ts). */
export function chargeMessage(r: UsageCharge) {
  return {
    usageId: r.usageId,
    quote: toQuoteMessage(r.quote),
    amount: r.amount,
    carryNano: r.carryNano,
    tokenTransfers: r.tokenTransfers.map(toTransfer),
    balance: toBalance(r.balance),
  };
}

/** A request's rate_card_id, as usage.proto limits it (also a batch's, rpc/batches.ts). */
export function rateCardId(value: string): string {
  if (value === "") {
    throw new InvalidFieldError("rate_card_id", "is required");
  }
  if (!RATE_CARD_ID_PATTERN.test(value)) {
    throw new InvalidFieldError("rate_card_id", "must be 1-64 characters of A-Z, a-z, 0-9, _, ., : or -");
  }
  return value;
}

/** A request's model, as usage.proto limits it (also a batch's, rpc/batches.ts). */
export function model(value: string): string {
  if (value === "") {
    throw new InvalidFieldError("model", "is required");
  }
  if (!MODEL_PATTERN.test(value)) {
    throw new InvalidFieldError("model", "must be 1-128 characters of A-Z, a-z, 0-9, _, ., :, /, @, + or -, starting with a letter or digit");
  }
  return value;
}

/**
 * A request's token counts, each >= 0, naming the field at fault (`usage.output_tokens`). An
 * estimate or a SpendUsage usage must count at least one token: pricing nothing is a mistake
 * of the caller's, answered before anything is recorded. CaptureUsage may count none (the
 * call failed), which releases the hold.
 */
export function tokenUsage(usage: WireTokenUsage | undefined, field: string, { countsSomething }: { countsSomething: boolean }): TokenUsage {
  const counts = {} as Record<TokenClass, bigint>;
  let total = 0n;
  for (const tokenClass of TOKEN_CLASSES) {
    const tokens = usage?.[USAGE_FIELDS[tokenClass]] ?? 0n;
    if (tokens < 0n) {
      throw new InvalidFieldError(`${field}.${tokenClass}_tokens`, "must not be negative");
    }
    counts[tokenClass] = tokens;
    total += tokens;
  }
  if (countsSomething && total === 0n) {
    throw new InvalidFieldError(field, "must count at least one token");
  }
  return counts;
}
