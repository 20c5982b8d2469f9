import type { ServiceImpl } from "@connectrpc/connect";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { timestampDate, timestampFromDate, type Timestamp } from "@bufbuild/protobuf/wkt";
import type pg from "pg";
import { InvalidFieldError } from "@holdfast/common/errors";
import { systemClock, type Clock } from "@holdfast/common/ids";
import {
  RateCardService,
  TokenClass,
  type ModelPrice,
  type ModelPriceSchema,
  type PriceTier as WirePriceTier,
  type PutRateCardRequest,
  type QuoteSchema,
  type RateCardSchema,
  type TokenUsage as WireTokenUsage,
} from "@holdfast/gen/holdfast/v1/rate_cards_pb";
import { MARKUP_BPS_MAX, TOKEN_CLASSES, type ClassPrices, type PriceTier, type TokenClass as MeteringClass, type TokenUsage } from "@holdfast/metering/pricing";
import { createRateCards, RATE_CARD_ID_PATTERN, type ModelPriceEntry, type PutRateCardInput, type RateCard, type RateCardQuote } from "../domain/rate-cards.js";
import { callerOf } from "./auth.js";
import * as v from "./validate.js";

/** Re-exported so the route table registers the service with one import. */
export { RateCardService };

/** The most models one rate card version prices; a provider's whole catalog fits. */
export const MODELS_PER_RATE_CARD_MAX = 1000;
/** The most tiers of one model. */
export const TIERS_PER_MODEL_MAX = 8;
/** A model name: 1-128 characters of [A-Za-z0-9_.:/@+-], starting with a letter or digit. */
export const MODEL_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_.:/@+-]{0,127}$/;
/** The token asset of a rate card that names none. */
export const TOKEN_ASSET_DEFAULT = "TOKENS";
/** effective_at from 1970 to the end of 9999, which every layer below can store. */
const EFFECTIVE_AT_SECONDS_MAX = 253_402_300_799n;

/** The wire name of each class's price field, and of its enum value. */
const PRICE_FIELDS = {
  input: "inputNanoPerMtok",
  cached_input: "cachedInputNanoPerMtok",
  cache_write: "cacheWriteNanoPerMtok",
  cache_write_1h: "cacheWrite1hNanoPerMtok",
  output: "outputNanoPerMtok",
  reasoning: "reasoningNanoPerMtok",
} as const satisfies Record<MeteringClass, keyof ModelPrice & keyof WirePriceTier>;

const USAGE_FIELDS = {
  input: "inputTokens",
  cached_input: "cachedInputTokens",
  cache_write: "cacheWriteTokens",
  cache_write_1h: "cacheWrite1hTokens",
  output: "outputTokens",
  reasoning: "reasoningTokens",
} as const satisfies Record<MeteringClass, keyof WireTokenUsage>;

const WIRE_CLASSES: Record<MeteringClass, TokenClass> = {
  input: TokenClass.INPUT,
  cached_input: TokenClass.CACHED_INPUT,
  cache_write: TokenClass.CACHE_WRITE,
  cache_write_1h: TokenClass.CACHE_WRITE_1H,
  output: TokenClass.OUTPUT,
  reasoning: TokenClass.REASONING,
};

export interface RateCardServiceDeps {
  pool: pg.Pool;
  /** The ledger's clock, so that "now" is the same instant for rate cards and holds. */
  clock?: Clock;
}

/**
 * RateCardService handlers: check the request, call the rate-card store, map the answer.
 * What they throw (invalid fields, not found, MODEL_NOT_PRICED) is answered by the routes'
 * error interceptor.
 */
export function rateCardService({ pool, clock = systemClock }: RateCardServiceDeps): ServiceImpl<typeof RateCardService> {
  const store = createRateCards({ pool, clock });
  return {
    async putRateCard(req, ctx) {
      const { tenantId } = callerOf(ctx);
      const { rateCard, replayed } = await store.put(tenantId, fromPutRateCardRequest(req));
      return { rateCard: toRateCardMessage(rateCard), replayed };
    },

    async getRateCard(req, ctx) {
      const { tenantId } = callerOf(ctx);
      return { rateCard: toRateCardMessage(await store.get(tenantId, rateCardId(req.rateCardId), req.version)) };
    },

    async listRateCards(req, ctx) {
      const { tenantId } = callerOf(ctx);
      const page = await store.list(tenantId, v.pageSize(req.pageSize), req.pageToken);
      return { rateCards: page.items.map(toRateCardMessage), nextPageToken: page.nextPageToken };
    },

    async quoteUsage(req, ctx) {
      const { tenantId } = callerOf(ctx);
      const input = { rateCardId: rateCardId(req.rateCardId), version: req.version, model: modelName(req.model, "model"), usage: tokenUsage(req.usage) };
      return { quote: toQuoteMessage(await store.quote(tenantId, input)) };
    },
  };
}

/**
 * A checked PutRateCard request in the store's terms. Every check names the field at fault.
 * `holdfast ratecards import` builds the same wire request and goes through here too.
 */
export function fromPutRateCardRequest(req: PutRateCardRequest): PutRateCardInput {
  const asset = v.asset(req.asset);
  const tokenAsset = req.tokenAsset === "" ? TOKEN_ASSET_DEFAULT : v.asset(req.tokenAsset, "token_asset");
  if (tokenAsset === asset) {
    throw new InvalidFieldError("token_asset", "must differ from asset: token counts and money never share an account");
  }
  if (req.markupBps > MARKUP_BPS_MAX) {
    throw new InvalidFieldError("markup_bps", `must be at most ${MARKUP_BPS_MAX}`);
  }
  return {
    rateCardId: rateCardId(req.rateCardId),
    asset,
    tokenAsset,
    models: models(req.models),
    markupBps: req.markupBps,
    effectiveAt: req.effectiveAt === undefined ? null : effectiveAt(req.effectiveAt),
    idempotencyKey: v.idempotencyKey(req.idempotencyKey),
  };
}

function rateCardId(value: string): string {
  if (value === "") {
    throw new InvalidFieldError("rate_card_id", "is required");
  }
  if (!RATE_CARD_ID_PATTERN.test(value)) {
    throw new InvalidFieldError("rate_card_id", "must be 1-64 characters of A-Z, a-z, 0-9, _, ., : or -");
  }
  return value;
}

function modelName(value: string, field: string): string {
  if (value === "") {
    throw new InvalidFieldError(field, "is required");
  }
  if (!MODEL_PATTERN.test(value)) {
    throw new InvalidFieldError(field, "must be 1-128 characters of A-Z, a-z, 0-9, _, ., :, /, @, + or -, starting with a letter or digit");
  }
  return value;
}

function effectiveAt(value: Timestamp): Date {
  if (value.seconds < 0n || value.seconds > EFFECTIVE_AT_SECONDS_MAX || value.nanos < 0 || value.nanos > 999_999_999) {
    throw new InvalidFieldError("effective_at", "must be a time from 1970 to 9999");
  }
  return timestampDate(value);
}

function models(list: readonly ModelPrice[]): ModelPriceEntry[] {
  if (list.length === 0) {
    throw new InvalidFieldError("models", "must price at least one model");
  }
  if (list.length > MODELS_PER_RATE_CARD_MAX) {
    throw new InvalidFieldError("models", `must have at most ${MODELS_PER_RATE_CARD_MAX} entries`);
  }
  const seen = new Set<string>();
  return list.map((m, i) => {
    const model = modelName(m.model, `models[${i}].model`);
    if (seen.has(model)) {
      throw new InvalidFieldError(`models[${i}].model`, `prices ${model} a second time`);
    }
    seen.add(model);
    return { model, prices: classPrices(m, `models[${i}]`), tiers: tiers(m.tiers, `models[${i}].tiers`) };
  });
}

function tiers(list: readonly WirePriceTier[], field: string): PriceTier[] {
  if (list.length > TIERS_PER_MODEL_MAX) {
    throw new InvalidFieldError(field, `must have at most ${TIERS_PER_MODEL_MAX} entries`);
  }
  let previous = 0n;
  return list.map((t, j) => {
    if (t.aboveInputTokens <= previous) {
      const why = j === 0 ? "must be positive" : `must be more than the previous tier's (${previous})`;
      throw new InvalidFieldError(`${field}[${j}].above_input_tokens`, why);
    }
    previous = t.aboveInputTokens;
    return { aboveInputTokens: t.aboveInputTokens, prices: classPrices(t, `${field}[${j}]`) };
  });
}

function classPrices(source: ModelPrice | WirePriceTier, field: string): ClassPrices {
  const prices: Partial<Record<MeteringClass, bigint>> = {};
  for (const tokenClass of TOKEN_CLASSES) {
    const price = source[PRICE_FIELDS[tokenClass]];
    if (price === undefined) continue;
    if (price < 0n) {
      throw new InvalidFieldError(`${field}.${tokenClass}_nano_per_mtok`, "must not be negative");
    }
    prices[tokenClass] = price;
  }
  return prices;
}

/** The usage of a request; an absent usage counts no tokens. */
function tokenUsage(usage: WireTokenUsage | undefined): TokenUsage {
  const counts = {} as Record<MeteringClass, bigint>;
  for (const tokenClass of TOKEN_CLASSES) {
    const tokens = usage?.[USAGE_FIELDS[tokenClass]] ?? 0n;
    if (tokens < 0n) {
      throw new InvalidFieldError(`usage.${tokenClass}_tokens`, "must not be negative");
    }
    counts[tokenClass] = tokens;
  }
  return counts;
}

/** The wire form of one model's prices. */
export function toModelPriceMessage(entry: ModelPriceEntry): MessageInitShape<typeof ModelPriceSchema> {
  const wirePrices = (prices: ClassPrices) =>
    Object.fromEntries(TOKEN_CLASSES.filter((c) => prices[c] !== undefined).map((c) => [PRICE_FIELDS[c], prices[c]]));
  return {
    model: entry.model,
    ...wirePrices(entry.prices),
    tiers: entry.tiers.map((t) => ({ aboveInputTokens: t.aboveInputTokens, ...wirePrices(t.prices) })),
  };
}

/** The wire form of a rate card version. */
export function toRateCardMessage(card: RateCard): MessageInitShape<typeof RateCardSchema> {
  return {
    rateCardId: card.rateCardId,
    version: card.version,
    asset: card.asset,
    tokenAsset: card.tokenAsset,
    models: card.models.map(toModelPriceMessage),
    markupBps: card.markupBps,
    effectiveAt: timestampFromDate(card.effectiveAt),
    createdAt: timestampFromDate(card.createdAt),
    latestVersion: card.latestVersion,
    modelCount: card.modelCount,
  };
}

/** The wire form of a quote. */
export function toQuoteMessage(q: RateCardQuote): MessageInitShape<typeof QuoteSchema> {
  return {
    rateCardId: q.rateCardId,
    rateCardVersion: q.version,
    model: q.model,
    asset: q.asset,
    tokenAsset: q.tokenAsset,
    markupBps: q.markupBps,
    tierAboveInputTokens: q.tierAboveInputTokens ?? undefined,
    lines: q.lines.map((l) => ({ tokenClass: WIRE_CLASSES[l.tokenClass], tokens: l.tokens, priceNanoPerMtok: l.priceNanoPerMtok, costNano: l.costNano })),
    baseCostNano: q.baseCostNano,
    costNano: q.costNano,
    chargeAmount: q.chargeAmount,
    holdAmount: q.holdAmount,
  };
}
