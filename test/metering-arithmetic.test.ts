// Goal: @holdfast/metering prices token usage exactly: per class with fallbacks and tiers, with
// markup, truncated once at the end; holds round up, charges round down and carry the rest so
// that a wallet is never charged above the exact cost nor a whole minor unit below it; decimal
// prices convert to nano units exactly or not at all; and the SQL functions of migration 0009,
// which the usage commands will price with, give the same answers as the TypeScript.
// Method: fast-check against a reference written here independently (exact rationals, the
// tier found by sorting, the fallback by a different table), thousands of random usages and
// prices; the carry rule over 1,000 tiny charges, alone and from concurrent connections on one
// account row; the SQL functions against the TypeScript on random inputs in a test database.
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { decimalToScaled, DecimalConversionError, formatScaled, nanoPerMtokFromDecimal, numberToDecimal } from "@holdfast/metering/decimal";
import {
  CostOverflowError,
  priceUsage,
  TOKEN_CLASSES,
  UnpricedClassError,
  type ClassPrices,
  type ModelPricing,
  type TokenClass,
  type TokenUsage,
} from "@holdfast/metering/pricing";
import { chargeWithCarry, holdAmountFor, INT64_MAX, NANO_PER_MINOR_UNIT } from "@holdfast/metering/rounding";
import { createTestDatabase, type TestDatabase } from "./support/db.js";

// ---- The reference: exact rationals, written without looking at the package's code paths.

interface Rational {
  num: bigint;
  den: bigint;
}
const add = (a: Rational, b: Rational): Rational => ({ num: a.num * b.den + b.num * a.den, den: a.den * b.den });
const mul = (a: Rational, b: Rational): Rational => ({ num: a.num * b.num, den: a.den * b.den });
const floor = (r: Rational): bigint => r.num / r.den; // both non-negative
const ceil = (r: Rational): bigint => (r.num + r.den - 1n) / r.den;

/** Which class each class borrows its price from when it has none: the documented rule. */
const BORROWS: [TokenClass, TokenClass | null][] = [
  ["reasoning", "output"],
  ["cache_write_1h", "input"],
  ["cache_write", "input"],
  ["cached_input", "input"],
  ["input", null],
  ["output", null],
];

function referencePrice(prices: ClassPrices, tokenClass: TokenClass): bigint | null {
  if (tokenClass in prices && prices[tokenClass] !== undefined) return prices[tokenClass]!;
  const borrowed = BORROWS.find(([c]) => c === tokenClass)![1];
  return borrowed !== null && prices[borrowed] !== undefined ? prices[borrowed]! : null;
}

function referenceQuote(pricing: ModelPricing, usage: TokenUsage, markupBps: number) {
  const prompt = usage.input + usage.cached_input + usage.cache_write + usage.cache_write_1h;
  const candidates = [...pricing.tiers].sort((a, b) => (a.aboveInputTokens > b.aboveInputTokens ? -1 : 1));
  const tier = candidates.find((t) => prompt > t.aboveInputTokens) ?? null;
  const prices = tier === null ? pricing.prices : tier.prices;
  const markup: Rational = { num: 10_000n + BigInt(markupBps), den: 10_000n };
  let base: Rational = { num: 0n, den: 1n };
  const lines: { tokenClass: TokenClass; cost: bigint }[] = [];
  for (const tokenClass of TOKEN_CLASSES) {
    if (usage[tokenClass] === 0n) continue;
    const price = referencePrice(prices, tokenClass);
    if (price === null) return { unpriced: tokenClass };
    // One class's cost in nano units: tokens × (price per million tokens) / 1,000,000.
    const cost: Rational = { num: usage[tokenClass] * price, den: 1_000_000n };
    base = add(base, cost);
    lines.push({ tokenClass, cost: floor(mul(cost, markup)) });
  }
  const exact = mul(base, markup);
  return { tier: tier?.aboveInputTokens ?? null, lines, base: floor(base), cost: floor(exact), hold: ceil({ num: floor(exact), den: NANO_PER_MINOR_UNIT }) };
}

// ---- Arbitraries.

const price = fc.oneof(fc.bigInt({ min: 0n, max: 10n ** 9n }), fc.bigInt({ min: 0n, max: 10n ** 15n }));
const classPrices: fc.Arbitrary<ClassPrices> = fc
  .record(Object.fromEntries(TOKEN_CLASSES.map((c) => [c, fc.option(price, { nil: undefined, freq: 3 })])) as Record<TokenClass, fc.Arbitrary<bigint | undefined>>)
  .map((p) => Object.fromEntries(Object.entries(p).filter(([, v]) => v !== undefined)) as ClassPrices);
const pricing: fc.Arbitrary<ModelPricing> = fc.record({
  prices: classPrices,
  tiers: fc
    .uniqueArray(fc.bigInt({ min: 1n, max: 400_000n }), { maxLength: 4 })
    .chain((thresholds) =>
      fc.tuple(...thresholds.sort((a, b) => (a < b ? -1 : 1)).map((t) => classPrices.map((prices) => ({ aboveInputTokens: t, prices })))),
    ),
});
const tokens = fc.oneof(fc.constant(0n), fc.bigInt({ min: 0n, max: 1_000n }), fc.bigInt({ min: 0n, max: 2_000_000n }));
const usage: fc.Arbitrary<TokenUsage> = fc.record(Object.fromEntries(TOKEN_CLASSES.map((c) => [c, tokens])) as Record<TokenClass, fc.Arbitrary<bigint>>);
const markup = fc.oneof(fc.constant(0), fc.constant(2000), fc.integer({ min: 0, max: 1_000_000 }));

const zeroUsage: TokenUsage = { input: 0n, cached_input: 0n, cache_write: 0n, cache_write_1h: 0n, output: 0n, reasoning: 0n };

describe("priceUsage against the reference", () => {
  it("agrees on thousands of random usages, prices, tiers and markups", () => {
    fc.assert(
      fc.property(pricing, usage, markup, (p, u, m) => {
        const expected = referenceQuote(p, u, m);
        if ("unpriced" in expected) {
          expect(() => priceUsage(p, u, m)).toThrow(UnpricedClassError);
          return;
        }
        const got = priceUsage(p, u, m);
        expect(got.tierAboveInputTokens).toBe(expected.tier);
        expect(got.lines.map((l) => ({ tokenClass: l.tokenClass, cost: l.costNano }))).toEqual(expected.lines);
        expect(got.baseCostNano).toBe(expected.base);
        expect(got.costNano).toBe(expected.cost);
        expect(got.holdAmount).toBe(expected.hold);
        expect(got.chargeAmount).toBe(expected.cost / NANO_PER_MINOR_UNIT);
        // Whatever a wallet carries, a charge of this cost never takes more than the hold.
        expect(chargeWithCarry(got.costNano, NANO_PER_MINOR_UNIT - 1n).amount).toBeLessThanOrEqual(got.holdAmount);
      }),
      { numRuns: 5000 },
    );
  });

  it("falls back: cached and cache-write classes to input, reasoning to output", () => {
    const p: ModelPricing = { prices: { input: 3_000_000_000n, output: 15_000_000_000n }, tiers: [] };
    const u = { ...zeroUsage, cached_input: 1_000_000n, cache_write: 1_000_000n, cache_write_1h: 1_000_000n, reasoning: 1_000_000n };
    const q = priceUsage(p, u, 0);
    expect(q.lines.map((l) => [l.tokenClass, l.priceNanoPerMtok])).toEqual([
      ["cached_input", 3_000_000_000n],
      ["cache_write", 3_000_000_000n],
      ["cache_write_1h", 3_000_000_000n],
      ["reasoning", 15_000_000_000n],
    ]);
    expect(q.costNano).toBe(24_000_000_000n);
  });

  it("chooses the tier with the largest threshold strictly below the prompt tokens", () => {
    const p: ModelPricing = {
      prices: { input: 1n * 10n ** 9n, output: 2n * 10n ** 9n },
      tiers: [
        { aboveInputTokens: 1000n, prices: { input: 10n ** 10n, output: 2n * 10n ** 10n } },
        { aboveInputTokens: 5000n, prices: { input: 10n ** 11n } },
      ],
    };
    expect(priceUsage(p, { ...zeroUsage, input: 1000n }, 0).tierAboveInputTokens).toBeNull();
    expect(priceUsage(p, { ...zeroUsage, input: 1001n }, 0).tierAboveInputTokens).toBe(1000n);
    // Cached and cache-write tokens count towards the prompt.
    expect(priceUsage(p, { ...zeroUsage, input: 1n, cached_input: 4999n }, 0).tierAboveInputTokens).toBe(1000n);
    expect(priceUsage(p, { ...zeroUsage, input: 1n, cache_write_1h: 5000n }, 0).tierAboveInputTokens).toBe(5000n);
    // A tier replaces the prices wholesale: the 5000 tier has no output price and no fallback for it.
    expect(() => priceUsage(p, { ...zeroUsage, input: 6000n, output: 1n }, 0)).toThrow(UnpricedClassError);
  });

  it("refuses a cost beyond int64 naming the heaviest usage field, and accepts the largest that fits", () => {
    const p: ModelPricing = { prices: { input: 1n, output: INT64_MAX }, tiers: [] };
    const err = (() => {
      try {
        priceUsage(p, { ...zeroUsage, input: 5n, output: 2_000_000n }, 0, "estimate");
      } catch (e) {
        return e;
      }
      return null;
    })();
    expect(err).toBeInstanceOf(CostOverflowError);
    expect((err as CostOverflowError).field).toBe("estimate.output_tokens");
    expect(priceUsage(p, { ...zeroUsage, output: 1_000_000n }, 0).costNano).toBe(INT64_MAX);
  });

  it("costs nothing for no tokens, even for a model without prices", () => {
    const q = priceUsage({ prices: {}, tiers: [] }, zeroUsage, 2000);
    expect(q).toMatchObject({ lines: [], costNano: 0n, holdAmount: 0n, chargeAmount: 0n });
  });
});

describe("rounding with carry", () => {
  // 7 tokens at this price cost 0.3 of a cent: 7 × 42,857,142,857,143 / 1e6 = 300,000,000 nano.
  const tinyPricing: ModelPricing = { prices: { input: 42_857_142_857_143n }, tiers: [] };
  const tinyUsage = { ...zeroUsage, input: 7n };

  it("1,000 tiny charges take exactly floor(exact total), and charged plus carry is the exact total", () => {
    for (const markupBps of [0, 2000, 1234]) {
      const cost = priceUsage(tinyPricing, tinyUsage, markupBps).costNano;
      let carry = 0n;
      let charged = 0n;
      for (let i = 1; i <= 1000; i++) {
        const charge = chargeWithCarry(cost, carry);
        charged += charge.amount;
        carry = charge.carryNano;
        const exact = cost * BigInt(i);
        expect(charged * NANO_PER_MINOR_UNIT).toBeLessThanOrEqual(exact);
        expect(exact - charged * NANO_PER_MINOR_UNIT).toBeLessThan(NANO_PER_MINOR_UNIT);
      }
      expect(charged).toBe((cost * 1000n) / NANO_PER_MINOR_UNIT);
      expect(charged * NANO_PER_MINOR_UNIT + carry).toBe(cost * 1000n);
    }
    expect(priceUsage(tinyPricing, tinyUsage, 0).costNano).toBe(300_000_000n);
  });

  it("over any sequence of charges, never above the exact cost nor a minor unit below it", () => {
    fc.assert(
      fc.property(fc.array(fc.bigInt({ min: 0n, max: 5n * NANO_PER_MINOR_UNIT }), { maxLength: 200 }), (costs) => {
        let carry = 0n;
        let charged = 0n;
        let exact = 0n;
        for (const cost of costs) {
          const charge = chargeWithCarry(cost, carry);
          expect(charge.amount).toBeLessThanOrEqual(holdAmountFor(cost));
          charged += charge.amount;
          carry = charge.carryNano;
          exact += cost;
          expect(charged * NANO_PER_MINOR_UNIT + carry).toBe(exact);
          expect(carry).toBeLessThan(NANO_PER_MINOR_UNIT);
        }
      }),
      { numRuns: 1000 },
    );
  });

  it("holds round up", () => {
    expect(holdAmountFor(0n)).toBe(0n);
    expect(holdAmountFor(1n)).toBe(1n);
    expect(holdAmountFor(NANO_PER_MINOR_UNIT)).toBe(1n);
    expect(holdAmountFor(NANO_PER_MINOR_UNIT + 1n)).toBe(2n);
    expect(() => chargeWithCarry(1n, NANO_PER_MINOR_UNIT)).toThrow(RangeError);
  });
});

describe("decimal to nano units", () => {
  it("converts published prices exactly", () => {
    expect(nanoPerMtokFromDecimal("0.15", 2)).toBe(15_000_000_000n);
    expect(nanoPerMtokFromDecimal("3.75", 2)).toBe(375_000_000_000n);
    expect(nanoPerMtokFromDecimal("15", 2)).toBe(1_500_000_000_000n);
    expect(nanoPerMtokFromDecimal(numberToDecimal(0.075), 2)).toBe(7_500_000_000n);
    expect(nanoPerMtokFromDecimal(numberToDecimal(1e-7), 2)).toBe(10_000n);
    expect(decimalToScaled("1.50000000000000000000", 2)).toBe(150n);
    expect(decimalToScaled(".5", 1)).toBe(5n);
    expect(decimalToScaled("25e-1", 1)).toBe(25n);
  });

  it("refuses what is not exact, negative, malformed or beyond int64", () => {
    for (const text of ["0.123456789012", "0.08333333333333334", numberToDecimal(0.1 + 0.2), "1e-12"]) {
      expect(() => nanoPerMtokFromDecimal(text, 2), text).toThrow(/not exact/);
    }
    for (const text of ["-1", "1,5", "", "abc", "1.2.3", "0x10", " 1", "Infinity", "1e99999"]) {
      expect(() => nanoPerMtokFromDecimal(text, 2), text).toThrow(DecimalConversionError);
    }
    expect(() => nanoPerMtokFromDecimal("92233720.36854775808", 2)).toThrow(/int64/);
    expect(nanoPerMtokFromDecimal("92233720.36854775807", 2)).toBe(INT64_MAX);
    expect(() => numberToDecimal(-0.5)).toThrow(DecimalConversionError);
  });

  it("round-trips every value at every scale, and refuses one digit more", () => {
    fc.assert(
      fc.property(fc.bigInt({ min: 0n, max: INT64_MAX / 10n }), fc.integer({ min: 0, max: 18 }), fc.integer({ min: 1, max: 9 }), (value, scale, extra) => {
        const text = formatScaled(value, scale);
        expect(decimalToScaled(text, scale)).toBe(value);
        expect(decimalToScaled(`${text}${text.includes(".") ? "" : "."}000`, scale)).toBe(value);
        expect(() => decimalToScaled(`${text}${text.includes(".") ? "" : "."}${"0".repeat(Math.max(0, scale - (text.split(".")[1]?.length ?? 0)))}${extra}`, scale)).toThrow(/not exact/);
      }),
      { numRuns: 2000 },
    );
  });
});

describe("the SQL functions of migration 0009 agree with @holdfast/metering", () => {
  let db: TestDatabase;
  beforeAll(async () => {
    db = await createTestDatabase();
  });
  afterAll(async () => {
    await db?.drop();
  });

  const json = (value: unknown) => JSON.stringify(value, (_k, v: unknown) => (typeof v === "bigint" ? v.toString() : v));
  const storedPrices = (prices: ClassPrices) => Object.fromEntries(Object.entries(prices).map(([c, v]) => [c, v!.toString()]));
  const usageJson = (u: TokenUsage) => Object.fromEntries(TOKEN_CLASSES.map((c) => [`${c}_tokens`, u[c].toString()]));

  it("metering_quote gives priceUsage's answer for random inputs, refusals included", async () => {
    const samples = fc.sample(fc.tuple(pricing, usage, markup), { numRuns: 600, seed: 14 });
    // Some samples overflow on purpose.
    samples.push([{ prices: { output: INT64_MAX }, tiers: [] }, { ...zeroUsage, input: 0n, output: 10n ** 7n }, 0]);
    const rows = samples.map(([p, u, m]) => ({
      prices: storedPrices(p.prices),
      tiers: p.tiers.map((t) => ({ above_input_tokens: t.aboveInputTokens.toString(), prices: storedPrices(t.prices) })),
      usage: usageJson(u),
      markup: m,
    }));
    const { rows: answers } = await db.pool.query<{ q: Record<string, unknown> }>({
      text: `select metering_quote(s -> 'prices', s -> 'tiers', s -> 'usage', (s ->> 'markup')::integer) as q
               from jsonb_array_elements($1::jsonb) with ordinality as e (s, n) order by n`,
      values: [json(rows)],
    });
    samples.forEach(([p, u, m], i) => {
      const sql = answers[i]!.q;
      let ts: unknown;
      try {
        const q = priceUsage(p, u, m);
        ts = {
          ok: true,
          lines: q.lines.map((l) => ({ token_class: l.tokenClass, tokens: l.tokens.toString(), price_nano_per_mtok: l.priceNanoPerMtok.toString(), cost_nano: l.costNano.toString() })),
          tier_above_input_tokens: q.tierAboveInputTokens?.toString() ?? null,
          base_cost_nano: q.baseCostNano.toString(),
          cost_nano: q.costNano.toString(),
          charge_amount: q.chargeAmount.toString(),
          hold_amount: q.holdAmount.toString(),
        };
      } catch (err) {
        if (err instanceof UnpricedClassError) ts = { ok: false, reason: "MODEL_NOT_PRICED", token_class: err.tokenClass };
        else if (err instanceof CostOverflowError) ts = { ok: false, reason: "AMOUNT_OVERFLOW", field: err.field };
        else throw err;
      }
      const got = sql["ok"] === true ? sql : { ok: false, reason: sql["reason"], ...(sql["metadata"] as object) };
      expect(got, `sample ${i}`).toEqual(ts);
    });
    expect(answers.some((a) => a.q["reason"] === "AMOUNT_OVERFLOW")).toBe(true);
    expect(answers.filter((a) => a.q["ok"] === true).length).toBeGreaterThan(100);
  });

  it("metering_charge_with_carry on one account row: 1,000 tiny charges from 8 connections at once", async () => {
    const tenant = "00000000-0000-4000-8000-000000000014";
    await db.pool.query("insert into tenants (id, name) values ($1, 'carry')", [tenant]);
    await db.pool.query("insert into wallets (tenant_id, wallet_id, created_at, updated_at) values ($1, 'w', now(), now())", [tenant]);
    await db.pool.query("insert into accounts (tenant_id, wallet_id, asset) values ($1, 'w', 'USD')", [tenant]);
    const cost = priceUsage({ prices: { input: 42_857_142_857_143n }, tiers: [] }, { ...zeroUsage, input: 7n }, 2000).costNano;
    const charges = 1000;
    const worker = async (count: number) => {
      const client = await db.pool.connect();
      let charged = 0n;
      try {
        for (let i = 0; i < count; i++) {
          // The ledger's discipline: take the wallet's lock first, then read the carry and charge.
          await client.query("begin");
          await client.query("select ledger_lock_wallet($1, 'w')", [tenant]);
          const { rows } = await client.query<{ amount: string; carry_nano: string }>({
            text: `select c.* from accounts a, metering_charge_with_carry($2, a.carry_nano) c
                    where a.tenant_id = $1 and a.wallet_id = 'w' and a.asset = 'USD'`,
            values: [tenant, cost.toString()],
          });
          await client.query("update accounts set carry_nano = $2 where tenant_id = $1 and wallet_id = 'w' and asset = 'USD'", [tenant, rows[0]!.carry_nano]);
          await client.query("commit");
          charged += BigInt(rows[0]!.amount);
        }
      } finally {
        client.release();
      }
      return charged;
    };
    const workers = 8;
    const totals = await Promise.all(Array.from({ length: workers }, () => worker(charges / workers)));
    const charged = totals.reduce((a, b) => a + b, 0n);
    const { rows } = await db.pool.query<{ carry_nano: string }>("select carry_nano from accounts where tenant_id = $1", [tenant]);
    const exact = cost * BigInt(charges);
    expect(charged).toBe(exact / NANO_PER_MINOR_UNIT);
    expect(charged * NANO_PER_MINOR_UNIT + BigInt(rows[0]!.carry_nano)).toBe(exact);
  });

  it("metering_hold_amount and metering_resolve_price follow the same rules", async () => {
    const { rows } = await db.pool.query<Record<string, string | null>>(
      `select metering_hold_amount(0) as h0, metering_hold_amount(1) as h1, metering_hold_amount(1000000000) as h2,
              metering_hold_amount(9223372036854775807) as hmax,
              metering_resolve_price('{"input": "5"}', 'cache_write_1h')::text as fallback,
              metering_resolve_price('{"output": "7"}', 'reasoning')::text as reasoning,
              metering_resolve_price('{"output": "7"}', 'cached_input')::text as none`,
    );
    expect(rows[0]).toEqual({ h0: "0", h1: "1", h2: "1", hmax: holdAmountFor(INT64_MAX).toString(), fallback: "5", reasoning: "7", none: null });
  });
});
