/**
 * Rate cards: the storage of their immutable versions (db/migrations/0009_rate_cards.sql) and
 * the reads and quotes over them. Input arrives checked (rpc/rate-card-service.ts checks every
 * field, for the RPC and for `holdfast ratecards import` alike); what is left here is what
 * needs the database: version numbers, effective times, idempotency and not-found.
 *
 * Pricing itself is @holdfast/metering's; this module only loads the prices of one model of
 * one version and hands them over.
 *
 * @module
 */
import { createHash } from "node:crypto";
import type pg from "pg";
import { HoldfastError, InvalidFieldError, NotFoundError } from "@holdfast/common/errors";
import type { Clock } from "@holdfast/common/ids";
import { decodePageToken, encodePageToken } from "@holdfast/common/page-token";
import { inTransaction, pgErrorCode } from "@holdfast/common/pg";
import {
  CostOverflowError,
  priceUsage,
  TOKEN_CLASSES,
  UnpricedClassError,
  type ClassPrices,
  type ModelPricing,
  type PriceTier,
  type TokenUsage,
  type UsageCost,
} from "@holdfast/metering/pricing";
import { canonicalJson } from "./fingerprint.js";
import type { Page } from "./types.js";

/** A rate card id: 1-64 characters of [A-Za-z0-9_.:-]. */
export const RATE_CARD_ID_PATTERN = /^[A-Za-z0-9_.:-]{1,64}$/;

/** unique_violation, foreign_key_violation. */
const UNIQUE_VIOLATION_SQLSTATE = "23505";
const FOREIGN_KEY_VIOLATION_SQLSTATE = "23503";
/** The constraint that makes an idempotency key unique among a tenant's rate-card writes. */
const IDEMPOTENCY_CONSTRAINT = "rate_card_versions_tenant_id_idempotency_key_key";

/** The prices of one model in a rate card version. */
export interface ModelPriceEntry extends ModelPricing {
  readonly model: string;
}

/** A checked PutRateCard request. */
export interface PutRateCardInput {
  readonly rateCardId: string;
  readonly asset: string;
  readonly tokenAsset: string;
  readonly models: readonly ModelPriceEntry[];
  readonly markupBps: number;
  /** Null takes effect now (the clock's time). */
  readonly effectiveAt: Date | null;
  readonly idempotencyKey: string;
}

/** One version of a rate card (RateCard in rate_cards.proto). */
export interface RateCard {
  readonly rateCardId: string;
  readonly version: number;
  readonly asset: string;
  readonly tokenAsset: string;
  readonly markupBps: number;
  readonly effectiveAt: Date;
  readonly createdAt: Date;
  readonly latestVersion: number;
  readonly modelCount: number;
  /** Empty in list pages. */
  readonly models: readonly ModelPriceEntry[];
}

/** A checked QuoteUsage request; version 0 is the version in effect now. */
export interface QuoteInput {
  readonly rateCardId: string;
  readonly version: number;
  readonly model: string;
  readonly usage: TokenUsage;
}

/** The price of a usage and the rate card version that priced it. */
export interface RateCardQuote extends UsageCost {
  readonly rateCardId: string;
  readonly version: number;
  readonly model: string;
  readonly asset: string;
  readonly tokenAsset: string;
  readonly markupBps: number;
}

export interface RateCardsOptions {
  pool: pg.Pool;
  clock: Clock;
}

/** The rate-card store, bound to one pool and clock; every call is scoped to one tenant. */
export function createRateCards({ pool, clock }: RateCardsOptions) {
  return {
    /** Writes version 1 or the next version; a replay answers the version the key made. */
    put: (tenantId: string, input: PutRateCardInput) => putRateCard(pool, clock(), tenantId, input),
    /** One version with its models; version 0 is the one in effect now. */
    get: (tenantId: string, rateCardId: string, version: number) => loadVersion(pool, clock(), tenantId, rateCardId, version),
    /** The tenant's cards by id, each at its latest version, without models. */
    list: (tenantId: string, pageSize: number, pageToken: string) => listRateCards(pool, tenantId, pageSize, pageToken),
    /** Prices a usage with one model of one version. */
    quote: (tenantId: string, input: QuoteInput) => quoteUsage(pool, clock(), tenantId, input),
  };
}

export type RateCards = ReturnType<typeof createRateCards>;

/** JSON forms of prices and tiers as the tables store them: int8 values as strings. */
type StoredPrices = Record<string, string>;
interface StoredTier {
  above_input_tokens: string;
  prices: StoredPrices;
}

function storePrices(prices: ClassPrices): StoredPrices {
  const stored: StoredPrices = {};
  for (const tokenClass of TOKEN_CLASSES) {
    const price = prices[tokenClass];
    if (price !== undefined) stored[tokenClass] = price.toString();
  }
  return stored;
}

function loadPrices(stored: StoredPrices): ClassPrices {
  const prices: Partial<Record<(typeof TOKEN_CLASSES)[number], bigint>> = {};
  for (const tokenClass of TOKEN_CLASSES) {
    const price = stored[tokenClass];
    if (price !== undefined) prices[tokenClass] = BigInt(price);
  }
  return prices;
}

const storeTiers = (tiers: readonly PriceTier[]): StoredTier[] =>
  tiers.map((t) => ({ above_input_tokens: t.aboveInputTokens.toString(), prices: storePrices(t.prices) }));

const loadTiers = (tiers: StoredTier[]): PriceTier[] =>
  tiers.map((t) => ({ aboveInputTokens: BigInt(t.above_input_tokens), prices: loadPrices(t.prices) }));

/** The request as stored and fingerprinted: what the caller sent, not what defaults made of it. */
function storedRequest(input: PutRateCardInput) {
  return {
    rate_card_id: input.rateCardId,
    asset: input.asset,
    token_asset: input.tokenAsset,
    markup_bps: input.markupBps,
    effective_at: input.effectiveAt?.toISOString() ?? null,
    models: input.models.map((m) => ({ model: m.model, prices: storePrices(m.prices), tiers: storeTiers(m.tiers) })),
  };
}

async function putRateCard(pool: pg.Pool, now: Date, tenantId: string, input: PutRateCardInput): Promise<{ rateCard: RateCard; replayed: boolean }> {
  const request = storedRequest(input);
  const fingerprint = createHash("sha256").update(canonicalJson(["PutRateCard", request])).digest();
  const attempt = () => inTransaction(pool, (client) => putInTransaction(client, now, tenantId, input, request.models, fingerprint));
  try {
    return await attempt();
  } catch (err) {
    // Two writes with one key raced on different cards: the loser now finds the winner's version.
    if (pgErrorCode(err) === UNIQUE_VIOLATION_SQLSTATE && (err as { constraint?: string }).constraint === IDEMPOTENCY_CONSTRAINT) {
      return attempt();
    }
    if (pgErrorCode(err) === FOREIGN_KEY_VIOLATION_SQLSTATE) {
      throw new InvalidFieldError("tenant_id", "names no tenant");
    }
    throw err;
  }
}

async function putInTransaction(
  client: pg.PoolClient,
  now: Date,
  tenantId: string,
  input: PutRateCardInput,
  models: ReturnType<typeof storedRequest>["models"],
  fingerprint: Buffer,
): Promise<{ rateCard: RateCard; replayed: boolean }> {
  // The card's row is the lock that numbers its versions one at a time.
  await client.query({
    text: `insert into rate_cards (tenant_id, rate_card_id, created_at, updated_at) values ($1, $2, $3, $3)
           on conflict (tenant_id, rate_card_id) do nothing`,
    values: [tenantId, input.rateCardId, now],
  });
  const { rows: cards } = await client.query<{ latest_version: number; effective_at: Date | null }>({
    text: `select r.latest_version, v.effective_at from rate_cards r
             left join rate_card_versions v on v.tenant_id = r.tenant_id and v.rate_card_id = r.rate_card_id and v.version = r.latest_version
            where r.tenant_id = $1 and r.rate_card_id = $2 for update of r`,
    values: [tenantId, input.rateCardId],
  });
  const replay = await findReplay(client, tenantId, input.idempotencyKey, fingerprint);
  if (replay !== null) {
    return { rateCard: await loadVersion(client, now, tenantId, replay.rateCardId, replay.version), replayed: true };
  }
  const previous = cards[0]!;
  const effectiveAt = input.effectiveAt ?? now;
  if (previous.effective_at !== null && effectiveAt < previous.effective_at) {
    throw new InvalidFieldError(
      "effective_at",
      `must not be before version ${previous.latest_version}'s effective_at, ${previous.effective_at.toISOString()}`,
    );
  }
  const version = previous.latest_version + 1;
  await client.query({
    text: `insert into rate_card_versions (tenant_id, rate_card_id, version, asset, token_asset, markup_bps,
                                           effective_at, created_at, model_count, idempotency_key, fingerprint)
           values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)`,
    values: [tenantId, input.rateCardId, version, input.asset, input.tokenAsset, input.markupBps, effectiveAt, now,
      models.length, input.idempotencyKey, fingerprint],
  });
  await client.query({
    text: `insert into rate_card_models (tenant_id, rate_card_id, version, model, position, prices, tiers)
           select $1, $2, $3, m ->> 'model', (n - 1)::integer, m -> 'prices', m -> 'tiers'
             from jsonb_array_elements($4::jsonb) with ordinality as e (m, n)`,
    values: [tenantId, input.rateCardId, version, JSON.stringify(models)],
  });
  await client.query({
    text: "update rate_cards set latest_version = $3, updated_at = $4 where tenant_id = $1 and rate_card_id = $2",
    values: [tenantId, input.rateCardId, version, now],
  });
  return { rateCard: await loadVersion(client, now, tenantId, input.rateCardId, version), replayed: false };
}

/** The version an idempotency key made, when the request is the same; a refusal when it is not. */
async function findReplay(client: pg.PoolClient, tenantId: string, key: string, fingerprint: Buffer) {
  const { rows } = await client.query<{ rate_card_id: string; version: number; fingerprint: Buffer }>({
    text: "select rate_card_id, version, fingerprint from rate_card_versions where tenant_id = $1 and idempotency_key = $2",
    values: [tenantId, key],
  });
  const row = rows[0];
  if (row === undefined) {
    return null;
  }
  if (!row.fingerprint.equals(fingerprint)) {
    throw new HoldfastError("IDEMPOTENCY_KEY_REUSED", "idempotency_key was already used for a different request");
  }
  return { rateCardId: row.rate_card_id, version: row.version };
}

interface VersionRow {
  rate_card_id: string;
  version: number;
  asset: string;
  token_asset: string;
  markup_bps: number;
  effective_at: Date;
  created_at: Date;
  model_count: number;
  latest_version: number;
}

const VERSION_COLUMNS = `v.rate_card_id, v.version, v.asset, v.token_asset, v.markup_bps, v.effective_at,
  v.created_at, v.model_count, r.latest_version`;

/**
 * The version a request names: `version`, or for 0 the highest version in effect at `now`.
 * Effective times never decrease over a card's versions, so that is the one that took effect last.
 */
const VERSION_SELECT = `
  select ${VERSION_COLUMNS} from rate_card_versions v
    join rate_cards r on r.tenant_id = v.tenant_id and r.rate_card_id = v.rate_card_id
   where v.tenant_id = $1 and v.rate_card_id = $2
     and (($3::integer = 0 and v.effective_at <= $4) or v.version = $3)
   order by v.version desc limit 1`;

function toRateCard(row: VersionRow, models: ModelPriceEntry[]): RateCard {
  return {
    rateCardId: row.rate_card_id,
    version: row.version,
    asset: row.asset,
    tokenAsset: row.token_asset,
    markupBps: row.markup_bps,
    effectiveAt: row.effective_at,
    createdAt: row.created_at,
    latestVersion: row.latest_version,
    modelCount: row.model_count,
    models,
  };
}

/** One version with its models, in the order they were put; version 0 is the one in effect at `now`. */
async function loadVersion(db: pg.Pool | pg.PoolClient, now: Date, tenantId: string, rateCardId: string, version: number): Promise<RateCard> {
  const { rows } = await db.query<VersionRow>({ text: VERSION_SELECT, values: [tenantId, rateCardId, version, now] });
  const row = rows[0];
  if (row === undefined) {
    throw await versionNotFound(db, tenantId, rateCardId, version);
  }
  const { rows: models } = await db.query<{ model: string; prices: StoredPrices; tiers: StoredTier[] }>({
    text: `select model, prices, tiers from rate_card_models
            where tenant_id = $1 and rate_card_id = $2 and version = $3 order by position`,
    values: [tenantId, rateCardId, row.version],
  });
  return toRateCard(row, models.map((m) => ({ model: m.model, prices: loadPrices(m.prices), tiers: loadTiers(m.tiers) })));
}

/** RATE_CARD_NOT_FOUND, saying whether the card, the version, or a version in effect is missing. */
async function versionNotFound(db: pg.Pool | pg.PoolClient, tenantId: string, rateCardId: string, version: number): Promise<NotFoundError> {
  const { rows } = await db.query<{ latest_version: number }>({
    text: "select latest_version from rate_cards where tenant_id = $1 and rate_card_id = $2 and latest_version > 0",
    values: [tenantId, rateCardId],
  });
  const latest = rows[0]?.latest_version;
  if (latest === undefined) {
    return new NotFoundError("RATE_CARD_NOT_FOUND", `rate card ${rateCardId} not found`);
  }
  if (version === 0) {
    return new NotFoundError("RATE_CARD_NOT_FOUND", `rate card ${rateCardId} has no version in effect yet`);
  }
  return new NotFoundError("RATE_CARD_NOT_FOUND", `rate card ${rateCardId} has no version ${version} (latest: ${latest})`);
}

/** By rate_card_id; the cursor is the last id shown. */
async function listRateCards(pool: pg.Pool, tenantId: string, pageSize: number, pageToken: string): Promise<Page<RateCard>> {
  const after = decodePageToken(pageToken, [(part) => RATE_CARD_ID_PATTERN.test(part)])?.[0] ?? null;
  const { rows } = await pool.query<VersionRow>({
    text: `select ${VERSION_COLUMNS} from rate_cards r
             join rate_card_versions v on v.tenant_id = r.tenant_id and v.rate_card_id = r.rate_card_id and v.version = r.latest_version
            where r.tenant_id = $1 and ($2::text is null or r.rate_card_id > $2)
            order by r.rate_card_id limit $3`,
    values: [tenantId, after, pageSize + 1],
  });
  const items = rows.slice(0, pageSize).map((row) => toRateCard(row, []));
  const more = rows.length > pageSize;
  return { items, nextPageToken: more ? encodePageToken([items.at(-1)!.rateCardId]) : "" };
}

async function quoteUsage(pool: pg.Pool, now: Date, tenantId: string, input: QuoteInput): Promise<RateCardQuote> {
  const { rows } = await pool.query<VersionRow & { prices: StoredPrices | null; tiers: StoredTier[] | null }>({
    text: `select q.*, m.prices, m.tiers from (${VERSION_SELECT}) q
             left join rate_card_models m on m.tenant_id = $1 and m.rate_card_id = q.rate_card_id
                                         and m.version = q.version and m.model = $5`,
    values: [tenantId, input.rateCardId, input.version, now, input.model],
  });
  const row = rows[0];
  if (row === undefined) {
    throw await versionNotFound(pool, tenantId, input.rateCardId, input.version);
  }
  const where = `rate card ${row.rate_card_id} version ${row.version}`;
  if (row.prices === null || row.tiers === null) {
    throw new HoldfastError("MODEL_NOT_PRICED", `${where} has no prices for model ${input.model}`, { metadata: { model: input.model } });
  }
  const pricing = { prices: loadPrices(row.prices), tiers: loadTiers(row.tiers) };
  const base = { rateCardId: row.rate_card_id, version: row.version, model: input.model, asset: row.asset, tokenAsset: row.token_asset, markupBps: row.markup_bps };
  return { ...base, ...priceOrRefuse(pricing, input.usage, row.markup_bps, where, input.model) };
}

/**
 * priceUsage with its errors in the contract's terms: MODEL_NOT_PRICED for a class without a
 * price, INVALID_FIELD naming the usage field for a cost beyond int64.
 */
export function priceOrRefuse(pricing: ModelPricing, usage: TokenUsage, markupBps: number, where: string, model: string, field = "usage"): UsageCost {
  try {
    return priceUsage(pricing, usage, markupBps, field);
  } catch (err) {
    if (err instanceof UnpricedClassError) {
      throw new HoldfastError("MODEL_NOT_PRICED", `${where} has no price for ${err.tokenClass} tokens of model ${model}`, {
        metadata: { model, token_class: err.tokenClass },
      });
    }
    if (err instanceof CostOverflowError) {
      throw new InvalidFieldError(err.field, "the cost would exceed the int64 range of nano units");
    }
    throw err;
  }
}
