/**
 * Exact pricing of token usage, in bigint and nothing else: no float takes part anywhere, so a
 * cost is the same on every machine and in SQL (docs/metering.md). The rules, which the SQL
 * function metering_quote (db/migrations/0009_rate_cards.sql) mirrors line for line:
 *
 * 1. Tier: the prompt tokens are input + cached_input + cache_write + cache_write_1h. Of the
 *    model's tiers whose above_input_tokens is below the prompt tokens, the one with the
 *    largest threshold prices the request; with none, the model's base prices do. A tier
 *    replaces the base prices wholesale.
 * 2. Fallback: within the chosen prices, an unset cached_input, cache_write or cache_write_1h
 *    price is the input price and an unset reasoning price is the output price. A class with
 *    tokens and still no price cannot be priced ({@link UnpricedClassError}).
 * 3. Cost: weighted = Σ tokens × price over the classes with tokens (prices are per million
 *    tokens in nano units), then cost_nano = weighted × (10000 + markup_bps) / (1e6 × 1e4),
 *    one integer division at the end, truncated: the only loss is below one nano unit
 *    (a billionth of a cent) per request.
 * 4. Bounds: cost_nano must fit int64, or the request is refused naming the usage field that
 *    contributes most ({@link CostOverflowError}).
 *
 * @module
 */
import { chargeAmountFor, holdAmountFor, INT64_MAX } from "./rounding.js";

/** The token classes, in the order quotes list them (TokenClass in rate_cards.proto). */
export const TOKEN_CLASSES = ["input", "cached_input", "cache_write", "cache_write_1h", "output", "reasoning"] as const;

export type TokenClass = (typeof TOKEN_CLASSES)[number];

/** Where a class without a price takes its price from; null for the two classes that are the roots. */
export const FALLBACK_CLASSES: Readonly<Record<TokenClass, TokenClass | null>> = {
  input: null,
  cached_input: "input",
  cache_write: "input",
  cache_write_1h: "input",
  output: null,
  reasoning: "output",
};

/** The classes whose tokens make up the prompt, which selects the tier. */
export const PROMPT_CLASSES: readonly TokenClass[] = ["input", "cached_input", "cache_write", "cache_write_1h"];

/** Exclusive token counts per class, each >= 0. */
export type TokenUsage = Readonly<Record<TokenClass, bigint>>;

/** Nano units of the asset's minor unit per million tokens, per class; a missing class falls back. */
export type ClassPrices = Readonly<Partial<Record<TokenClass, bigint>>>;

export interface PriceTier {
  /** The tier applies when the prompt tokens are more than this. */
  readonly aboveInputTokens: bigint;
  readonly prices: ClassPrices;
}

/** The prices of one model in one rate card version. */
export interface ModelPricing {
  readonly prices: ClassPrices;
  readonly tiers: readonly PriceTier[];
}

/** Prices are per this many tokens. */
export const TOKENS_PER_MTOK = 1_000_000n;
/** Basis points in one whole: a markup of 2000 bps adds 20 %. */
export const BPS_PER_UNIT = 10_000n;
/** The largest markup: 1,000,000 bps, 100 times the cost on top of it. */
export const MARKUP_BPS_MAX = 1_000_000;

/** The cost of one class in a quote. */
export interface QuoteLine {
  readonly tokenClass: TokenClass;
  readonly tokens: bigint;
  readonly priceNanoPerMtok: bigint;
  /** This line alone with markup, truncated to whole nano units. */
  readonly costNano: bigint;
}

/** The exact price of a usage (Quote in rate_cards.proto). */
export interface UsageCost {
  /** One line per class with tokens, in {@link TOKEN_CLASSES} order. */
  readonly lines: readonly QuoteLine[];
  /** The threshold of the tier that applied; null when the base prices did. */
  readonly tierAboveInputTokens: bigint | null;
  /** Σ tokens × price / 1e6, before markup. */
  readonly baseCostNano: bigint;
  /** Σ tokens × price × (10000 + markup) / 1e10: the exact cost in nano units. */
  readonly costNano: bigint;
  /** floor(costNano / 1e9): what a charge takes with nothing carried. */
  readonly chargeAmount: bigint;
  /** ceil(costNano / 1e9): what a hold for this usage reserves. */
  readonly holdAmount: bigint;
}

/** A class has tokens but neither a price of its own nor one to fall back to. */
export class UnpricedClassError extends Error {
  override readonly name: string = "UnpricedClassError";

  constructor(readonly tokenClass: TokenClass) {
    super(`no price for ${tokenClass} tokens`);
  }
}

/** The cost does not fit int64 nano units; `field` names the usage count that weighs most. */
export class CostOverflowError extends RangeError {
  override readonly name: string = "CostOverflowError";

  constructor(readonly field: string) {
    super(`${field}: the cost would exceed the int64 range of nano units`);
  }
}

/** The usage field of a class, as TokenUsage in rate_cards.proto names it: "output_tokens". */
export function usageFieldOf(tokenClass: TokenClass): string {
  return `${tokenClass}_tokens`;
}

/** The prompt tokens of a usage: the count that selects the tier. */
export function promptTokens(usage: TokenUsage): bigint {
  return PROMPT_CLASSES.reduce((sum, tokenClass) => sum + usage[tokenClass], 0n);
}

/** The tier that prices `usage`: the largest threshold below its prompt tokens; null for none. */
export function applicableTier(pricing: ModelPricing, usage: TokenUsage): PriceTier | null {
  const prompt = promptTokens(usage);
  let chosen: PriceTier | null = null;
  for (const tier of pricing.tiers) {
    if (tier.aboveInputTokens < prompt && (chosen === null || tier.aboveInputTokens > chosen.aboveInputTokens)) {
      chosen = tier;
    }
  }
  return chosen;
}

/** The price of a class after fallback, or null when neither it nor its fallback is priced. */
export function resolvePrice(prices: ClassPrices, tokenClass: TokenClass): bigint | null {
  const own = prices[tokenClass];
  if (own !== undefined) {
    return own;
  }
  const fallback = FALLBACK_CLASSES[tokenClass];
  return fallback === null ? null : (prices[fallback] ?? null);
}

/**
 * Prices `usage` with a model's prices and a markup, exactly (the rules in this module's
 * header). `field` prefixes the usage field an overflow names, e.g. "usage" or "estimate".
 */
export function priceUsage(pricing: ModelPricing, usage: TokenUsage, markupBps: number, field = "usage"): UsageCost {
  checkMarkup(markupBps);
  const tier = applicableTier(pricing, usage);
  const prices = tier?.prices ?? pricing.prices;
  const multiplier = BPS_PER_UNIT + BigInt(markupBps);
  const divisor = TOKENS_PER_MTOK * BPS_PER_UNIT;
  const lines: QuoteLine[] = [];
  let weighted = 0n;
  let heaviest: { tokenClass: TokenClass; product: bigint } | null = null;
  for (const tokenClass of TOKEN_CLASSES) {
    const tokens = usage[tokenClass];
    if (tokens < 0n) {
      throw new RangeError(`${field}.${usageFieldOf(tokenClass)} must not be negative`);
    }
    if (tokens === 0n) {
      continue;
    }
    const price = resolvePrice(prices, tokenClass);
    if (price === null) {
      throw new UnpricedClassError(tokenClass);
    }
    const product = tokens * price;
    weighted += product;
    if (heaviest === null || product > heaviest.product) {
      heaviest = { tokenClass, product };
    }
    lines.push({ tokenClass, tokens, priceNanoPerMtok: price, costNano: (product * multiplier) / divisor });
  }
  const costNano = (weighted * multiplier) / divisor;
  if (costNano > INT64_MAX) {
    throw new CostOverflowError(`${field}.${usageFieldOf(heaviest!.tokenClass)}`);
  }
  return {
    lines,
    tierAboveInputTokens: tier?.aboveInputTokens ?? null,
    baseCostNano: weighted / TOKENS_PER_MTOK,
    costNano,
    chargeAmount: chargeAmountFor(costNano),
    holdAmount: holdAmountFor(costNano),
  };
}

function checkMarkup(markupBps: number): void {
  if (!Number.isInteger(markupBps) || markupBps < 0 || markupBps > MARKUP_BPS_MAX) {
    throw new RangeError(`markupBps must be an integer from 0 to ${MARKUP_BPS_MAX}`);
  }
}
