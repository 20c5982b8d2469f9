/**
 * `holdfast ratecards import` and `holdfast ratecards show`. The import builds a rate card from
 * a maintained price list, the npm package @pydantic/genai-prices, rather than from prices
 * typed by hand: every published decimal is converted exactly to nano units per million tokens
 * (@holdfast/metering/decimal), and one value that does not convert exactly fails the whole
 * import. docs/metering.md, "Importing prices", says what is taken from the package and how.
 *
 * @module
 */
import { randomUUID } from "node:crypto";
import type { Command } from "commander";
import type { Pool } from "pg";
import { create, toJsonString } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { findProvider, type MatchLogic, type ModelInfo, type ModelPrice as PackagePrices, type Provider } from "@pydantic/genai-prices";
import { systemClock } from "@holdfast/common/ids";
import { PutRateCardRequestSchema, RateCardSchema, type PutRateCardRequest } from "@holdfast/gen/holdfast/v1/rate_cards_pb";
import { createRateCards, type ModelPriceEntry, type RateCard } from "@holdfast/ledger/domain/rate-cards";
import { fromPutRateCardRequest, MODEL_PATTERN, toModelPriceMessage, toRateCardMessage } from "@holdfast/ledger/rpc/rate-card-service";
import { DecimalConversionError, formatScaled, nanoPerMtokFromDecimal, NANO_DIGITS, numberToDecimal } from "@holdfast/metering/decimal";
import { TOKEN_CLASSES, type ClassPrices, type PriceTier, type TokenClass } from "@holdfast/metering/pricing";

/** Where the commands write, one line per call (the same shape as CliOutput in main.ts). */
export interface RateCardsOutput {
  out(line: string): void;
  err(line: string): void;
}

/** Runs work with a pool on the database the command names (main.ts's withPool). */
export type WithDatabase = <T>(command: Command, work: (pool: Pool) => Promise<T>) => Promise<T>;

/** The package's price keys that are token classes; other keys (images, audio, searches) are not. */
const PRICE_KEYS: Readonly<Record<string, TokenClass>> = {
  input_mtok: "input",
  cache_read_mtok: "cached_input",
  cache_write_mtok: "cache_write",
  cache_write_1h_mtok: "cache_write_1h",
  output_mtok: "output",
};

/** The package publishes prices in US dollars; a cent has two digits. */
const MINOR_UNIT_DIGITS_DEFAULT = 2;
const MINOR_UNIT_DIGITS_MAX = 9;

/** A tiered price as the package's data holds it. */
interface PackageTiered {
  base: number;
  tiers: { start: number; price: number }[];
}

/** What {@link modelsFromProvider} made, and what it left out and why. */
export interface ProviderModels {
  readonly models: ModelPriceEntry[];
  /** One line per model or name left out, e.g. "dall-e-3: no token prices". */
  readonly skipped: string[];
}

export interface ProviderModelOptions {
  /** Which of a model's dated prices to take: those in effect at this time. */
  readonly at: Date;
  /** Decimal digits of the asset's minor unit: 2 for cents. */
  readonly minorUnitDigits: number;
  /** Also price each exact name the package matches a model by (dated snapshots). */
  readonly aliases: boolean;
}

/**
 * The rate-card models of a provider of @pydantic/genai-prices, every price converted exactly.
 * Throws when a price is not an exact number of nano units per million tokens, naming the
 * model and the key, so that no rounded price ever reaches a rate card.
 */
export function modelsFromProvider(provider: Provider, options: ProviderModelOptions): ProviderModels {
  const models: ModelPriceEntry[] = [];
  const skipped: string[] = [];
  const taken = new Set<string>();
  for (const info of provider.models) {
    const pricing = modelPricing(provider, info, options);
    if (pricing === null) {
      skipped.push(`${info.id}: no token prices`);
      continue;
    }
    for (const name of new Set(options.aliases ? [info.id, ...exactNames(info.match)] : [info.id])) {
      if (taken.has(name)) {
        if (name === info.id) skipped.push(`${name}: priced twice in the package; the first is kept`);
        continue;
      }
      if (!MODEL_PATTERN.test(name)) {
        skipped.push(`${name}: not a valid model name`);
        continue;
      }
      taken.add(name);
      models.push({ model: name, ...pricing });
    }
  }
  return { models, skipped };
}

/** A model's base prices and tiers, or null when the package gives it no token price. */
function modelPricing(provider: Provider, info: ModelInfo, options: ProviderModelOptions): Omit<ModelPriceEntry, "model"> | null {
  const source = pricesAt(info, options.at);
  const classes = Object.entries(source).filter(([key, value]) => PRICE_KEYS[key] !== undefined && value !== undefined);
  if (classes.length === 0) {
    return null;
  }
  const convert = (key: string, value: number) => {
    try {
      return nanoPerMtokFromDecimal(numberToDecimal(value), options.minorUnitDigits);
    } catch (err) {
      if (err instanceof DecimalConversionError) {
        throw new Error(`${provider.id} model ${info.id}, ${key}: ${err.message}; nothing was imported (prices are converted exactly or not at all)`);
      }
      throw err;
    }
  };
  const thresholds = new Set<number>();
  for (const [, value] of classes) {
    if (typeof value === "object") (value as PackageTiered).tiers.forEach((t) => thresholds.add(t.start));
  }
  // The price of each class for prompts above `threshold`; -1 for the base prices.
  const pricesAbove = (threshold: number): ClassPrices =>
    Object.fromEntries(
      classes.map(([key, value]) => {
        const tiered = typeof value === "object" ? (value as PackageTiered) : { base: value as number, tiers: [] };
        const applicable = tiered.tiers.filter((t) => t.start <= threshold).sort((a, b) => a.start - b.start).at(-1);
        return [PRICE_KEYS[key]!, convert(key, applicable?.price ?? tiered.base)];
      }),
    );
  const tiers: PriceTier[] = [...thresholds]
    .sort((a, b) => a - b)
    .map((start) => ({ aboveInputTokens: BigInt(start), prices: pricesAbove(start) }));
  return { prices: pricesAbove(-1), tiers };
}

/**
 * The prices in effect at `at`: the last dated entry that has started. Time-of-day prices
 * (off-peak discounts) cannot be a rate card's price, so the entries without them apply.
 */
function pricesAt(info: ModelInfo, at: Date): PackagePrices {
  if (!Array.isArray(info.prices)) {
    return info.prices;
  }
  for (let i = info.prices.length - 1; i >= 0; i--) {
    const entry = info.prices[i]!;
    const constraint = entry.constraint;
    if (constraint === undefined || (constraint.type === "start_date" && at >= new Date(constraint.start_date))) {
      return entry.prices;
    }
  }
  return info.prices[0]!.prices;
}

/** The exact names a match rule lists (`equals`, at the top or inside `or`). */
function exactNames(match: MatchLogic): string[] {
  if ("equals" in match) return [match.equals];
  if ("or" in match) return match.or.flatMap(exactNames);
  return [];
}

export interface ImportOptions {
  readonly provider: string;
  readonly id: string;
  readonly markupBps: number;
  readonly asset: string;
  readonly tokenAsset: string;
  readonly minorUnitDigits: number;
  readonly effectiveAt?: Date | undefined;
  /** Which dated prices to take; effectiveAt, or now, when absent. */
  readonly pricesAt?: Date | undefined;
  readonly aliases: boolean;
  readonly idempotencyKey?: string | undefined;
}

/**
 * The PutRateCard request an import makes, checked like any PutRateCard request. `provider`
 * is the package's provider data; tests pass their own.
 */
export function buildImportRequest(options: ImportOptions, provider: Provider | undefined = findProvider({ providerId: options.provider })): { request: PutRateCardRequest; skipped: string[] } {
  if (provider === undefined) {
    throw new Error(`@pydantic/genai-prices has no provider ${JSON.stringify(options.provider)}`);
  }
  if (!Number.isInteger(options.minorUnitDigits) || options.minorUnitDigits < 0 || options.minorUnitDigits > MINOR_UNIT_DIGITS_MAX) {
    throw new Error(`--minor-unit-digits must be an integer from 0 to ${MINOR_UNIT_DIGITS_MAX}`);
  }
  const at = options.pricesAt ?? options.effectiveAt ?? new Date();
  const { models, skipped } = modelsFromProvider(provider, { at, minorUnitDigits: options.minorUnitDigits, aliases: options.aliases });
  const request = create(PutRateCardRequestSchema, {
    rateCardId: options.id,
    asset: options.asset,
    tokenAsset: options.tokenAsset,
    models: models.map(toModelPriceMessage),
    markupBps: options.markupBps,
    effectiveAt: options.effectiveAt === undefined ? undefined : timestampFromDate(options.effectiveAt),
    idempotencyKey: options.idempotencyKey ?? `ratecards-import:${randomUUID()}`,
  });
  fromPutRateCardRequest(request);
  return { request, skipped };
}

/** Writes an imported rate card for a tenant and answers the version it made. */
export async function importRateCard(pool: Pool, tenantId: string, request: PutRateCardRequest): Promise<{ rateCard: RateCard; replayed: boolean }> {
  return createRateCards({ pool, clock: systemClock }).put(tenantId, fromPutRateCardRequest(request));
}

/** The lines `ratecards show` prints: the card, then one line per model and tier. */
export function describeRateCard(card: RateCard): string[] {
  const lines = [
    `Rate card ${card.rateCardId} version ${card.version} of ${card.latestVersion}, effective ${card.effectiveAt.toISOString()}`,
    `${card.modelCount} models; money in ${card.asset}, tokens in ${card.tokenAsset}; markup ${card.markupBps} bps`,
    `Prices in ${card.asset} minor units per million tokens (unset classes fall back: cached and cache writes to input, reasoning to output):`,
  ];
  const describe = (prices: ClassPrices) =>
    TOKEN_CLASSES.filter((c) => prices[c] !== undefined)
      .map((c) => `${c} ${formatScaled(prices[c]!, NANO_DIGITS)}`)
      .join("  ");
  for (const m of card.models) {
    lines.push(`  ${m.model}  ${describe(m.prices)}`);
    for (const t of m.tiers) lines.push(`    above ${t.aboveInputTokens} prompt tokens: ${describe(t.prices)}`);
  }
  return lines;
}

interface ImportCliOptions {
  provider: string;
  id: string;
  markupBps: string;
  tenant?: string;
  asset: string;
  tokenAsset: string;
  minorUnitDigits: string;
  effectiveAt?: string;
  pricesAt?: string;
  aliases: boolean;
  idempotencyKey?: string;
}

/** Registers `holdfast ratecards import` and `holdfast ratecards show` on the program. */
export function addRateCardsCommands(program: Command, output: RateCardsOutput, withDatabase: WithDatabase): void {
  const ratecards = program.command("ratecards").description("model rate cards (docs/metering.md)");
  ratecards
    .command("import")
    .description("build a rate card from @pydantic/genai-prices; with --tenant write it, without print the PutRateCard request as JSON")
    .requiredOption("--provider <id>", "the package's provider id, e.g. openai, anthropic, google")
    .requiredOption("--id <rateCardId>", "the rate card id, e.g. openai-default")
    .option("--markup-bps <bps>", "markup in basis points, 0-1000000", "0")
    .option("--tenant <id>", "write the rate card for this tenant (a new version when it exists)")
    .option("--asset <code>", "the money asset the prices are in", "USD")
    .option("--token-asset <code>", "the asset token counts are recorded in", "TOKENS")
    .option("--minor-unit-digits <n>", "decimal digits of the asset's minor unit (2: prices in cents)", String(MINOR_UNIT_DIGITS_DEFAULT))
    .option("--effective-at <time>", "when the version takes effect, ISO 8601 (default: now)")
    .option("--prices-at <time>", "take the package's prices in effect at this time (default: --effective-at or now)")
    .option("--no-aliases", "price only each model's id, not the dated names the package matches it by")
    .option("--idempotency-key <key>", "PutRateCard's idempotency key (default: a new one)")
    .action(async (options: ImportCliOptions, command: Command) => {
      const { request, skipped } = buildImportRequest(importOptions(options));
      for (const line of skipped) output.err(`skipped ${line}`);
      if (options.tenant === undefined) {
        output.out(toJsonString(PutRateCardRequestSchema, request));
        return;
      }
      const tenant = options.tenant;
      const { rateCard, replayed } = await withDatabase(command, (pool) => importRateCard(pool, tenant, request));
      const verb = replayed ? "Already imported" : "Imported";
      output.out(`${verb} rate card ${rateCard.rateCardId} version ${rateCard.version}: ${rateCard.modelCount} models from ${options.provider}, effective ${rateCard.effectiveAt.toISOString()}.`);
    });
  ratecards
    .command("show")
    .description("print a rate card version and its prices")
    .argument("<rateCardId>", "the rate card id")
    .requiredOption("--tenant <id>", "tenant id")
    .option("--version <n>", "the version; 0 or absent: the version in effect now", "0")
    .option("--json", "print the RateCard message as protobuf JSON")
    .action(async (rateCardId: string, options: { tenant: string; version: string; json?: boolean }, command: Command) => {
      const version = parseInteger("--version", options.version, 0, 2 ** 31 - 1);
      const card = await withDatabase(command, (pool) => createRateCards({ pool, clock: systemClock }).get(options.tenant, rateCardId, version));
      if (options.json === true) {
        output.out(toJsonString(RateCardSchema, create(RateCardSchema, toRateCardMessage(card))));
        return;
      }
      for (const line of describeRateCard(card)) output.out(line);
    });
}

function importOptions(options: ImportCliOptions): ImportOptions {
  return {
    provider: options.provider,
    id: options.id,
    markupBps: parseInteger("--markup-bps", options.markupBps, 0, 1_000_000),
    asset: options.asset,
    tokenAsset: options.tokenAsset,
    minorUnitDigits: parseInteger("--minor-unit-digits", options.minorUnitDigits, 0, MINOR_UNIT_DIGITS_MAX),
    effectiveAt: options.effectiveAt === undefined ? undefined : parseTime("--effective-at", options.effectiveAt),
    pricesAt: options.pricesAt === undefined ? undefined : parseTime("--prices-at", options.pricesAt),
    aliases: options.aliases,
    idempotencyKey: options.idempotencyKey,
  };
}

function parseInteger(flag: string, value: string, min: number, max: number): number {
  const n = Number(value);
  if (!/^\d+$/.test(value) || n < min || n > max) throw new Error(`${flag} must be an integer from ${min} to ${max}`);
  return n;
}

function parseTime(flag: string, value: string): Date {
  const at = Date.parse(value);
  if (Number.isNaN(at)) throw new Error(`${flag} must be an ISO 8601 time such as 2026-01-01T00:00:00Z`);
  return new Date(at);
}
