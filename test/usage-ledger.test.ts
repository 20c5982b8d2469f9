// Goal: the usage commands (ReserveUsage, CaptureUsage, SpendUsage) price in the command's own
// transaction exactly as docs/metering.md says: a hold of the estimate rounded up and pinned to
// its rate card version; a capture below, equal to and above the hold (and above what is
// available), priced with the pinned version whatever came later; charges rounded down with the
// wallet's carry, so that over any sequence of charges, concurrent ones included, the total
// charged is floor(exact total) and charged + carry = exact; token legs (one per class with
// tokens, @tokens -> wallet) linked to the money leg by usage id; replays; zero costs. After
// each group of commands the ledger invariants hold (7: token legs included) and the hash chain
// verifies with the usage rows in it.
// Method: the ledger core on a fresh database with a manual clock (no RPC), rate cards written
// through the rate-card store; expected costs computed here with bigint, independently of
// @holdfast/metering and of the SQL.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { verifyLedger } from "@holdfast/cli/verify";
import type { Caller, Outcome } from "@holdfast/ledger/domain";
import { createRateCards, type ModelPriceEntry } from "@holdfast/ledger/domain/rate-cards";
import { checkInvariants } from "@holdfast/ledger/invariants";
import { createTestLedger, key } from "./support/ledger.js";

type TestLedger = Awaited<ReturnType<typeof createTestLedger>>;
type Counts = Partial<Record<"input" | "cached_input" | "cache_write" | "cache_write_1h" | "output" | "reasoning", bigint>>;

const NANO_PER_MINOR = 1_000_000_000n;
const CLASSES = ["input", "cached_input", "cache_write", "cache_write_1h", "output", "reasoning"] as const;

/** $3 input, $15 output per million tokens, in nano-cents per million tokens; no markup. */
const SONNET: ModelPriceEntry = { model: "sonnet", prices: { input: 300_000_000_000n, output: 1_500_000_000_000n }, tiers: [] };
/** 7 input tokens cost 333,333,333 nano-cents: a third of a cent, never a whole one. */
const TINY: ModelPriceEntry = { model: "tiny", prices: { input: 47_619_047_619_047n, output: 47_619_047_619_047n }, tiers: [] };
const FREE: ModelPriceEntry = { model: "free", prices: { input: 0n, output: 0n }, tiers: [] };

let t: TestLedger;
let cards: ReturnType<typeof createRateCards>;

beforeAll(async () => {
  t = await createTestLedger({ groupCommit: true });
  cards = createRateCards({ pool: t.pool, clock: t.clock });
});
afterAll(async () => {
  await t?.close();
});

const usage = (counts: Counts) => Object.fromEntries(CLASSES.map((c) => [c, counts[c] ?? 0n])) as Record<(typeof CLASSES)[number], bigint>;

/** The reference: Σ tokens × price × (10000 + markup) / 1e10, one division, as docs/metering.md. */
function exactCost(model: ModelPriceEntry, counts: Counts, markupBps = 0): bigint {
  let weighted = 0n;
  for (const c of CLASSES) {
    const tokens = counts[c] ?? 0n;
    if (tokens === 0n) continue;
    const price = model.prices[c] ?? (c === "reasoning" ? model.prices.output : model.prices.input);
    weighted += tokens * price!;
  }
  return (weighted * (10_000n + BigInt(markupBps))) / 10_000_000_000n;
}

function ok<T>(outcome: Outcome<T>): T & { replayed: boolean } {
  if (!outcome.ok) throw new Error(`refused: ${outcome.reason} ${outcome.message}`);
  return outcome;
}

async function putCard(caller: Caller, rateCardId: string, models: ModelPriceEntry[], options: { markupBps?: number; effectiveAt?: Date } = {}) {
  const put = await cards.put(caller.tenantId, {
    rateCardId,
    asset: "USD",
    tokenAsset: "TOKENS",
    models,
    markupBps: options.markupBps ?? 0,
    effectiveAt: options.effectiveAt ?? null,
    idempotencyKey: key("card"),
  });
  return put.rateCard;
}

async function fund(caller: Caller, walletId: string, amount: bigint) {
  ok(await t.ledger.deposit(caller, { walletId, asset: "USD", amount, idempotencyKey: key("dep"), metadata: {} }));
}

const reserve = (caller: Caller, walletId: string, rateCardId: string, model: string, estimate: Counts, holdId = "") =>
  t.ledger.reserveUsage(caller, { walletId, rateCardId, model, estimate: usage(estimate), holdId, ttlSeconds: 300, idempotencyKey: key("ru"), metadata: { feature: "chat" } });

const capture = (caller: Caller, holdId: string, counts: Counts, idempotencyKey = key("cu")) =>
  t.ledger.captureUsage(caller, { holdId, usage: usage(counts), idempotencyKey, metadata: { request: "r1" } });

const spend = (caller: Caller, walletId: string, rateCardId: string, model: string, counts: Counts, idempotencyKey = key("su")) =>
  t.ledger.spendUsage(caller, { walletId, rateCardId, model, usage: usage(counts), idempotencyKey, metadata: {} });

async function carryOf(caller: Caller, walletId: string): Promise<bigint> {
  const { rows } = await t.pool.query<{ carry_nano: string }>(
    "select carry_nano::text from accounts where tenant_id = $1 and wallet_id = $2 and asset = 'USD'",
    [caller.tenantId, walletId],
  );
  return BigInt(rows[0]!.carry_nano);
}

async function expectSound() {
  expect(await checkInvariants(t.pool)).toEqual([]);
}

describe("ReserveUsage and CaptureUsage", () => {
  it("holds the estimate rounded up, pinned to the version in effect", async () => {
    const caller = await t.newTenant();
    await putCard(caller, "default", [SONNET], { markupBps: 2000 });
    await fund(caller, "w", 1000n);
    // 1000 × $3 + 20001 × $15 per million = 0.3 ¢ + 30.0015 ¢, +20 %: 36.3618 ¢, held as 37 ¢.
    const r = ok(await reserve(caller, "w", "default", "sonnet", { input: 1000n, output: 20_001n }));
    const cost = exactCost(SONNET, { input: 1000n, output: 20_001n }, 2000);
    expect(r.quote.costNano).toBe(cost);
    expect(cost).toBe(36_361_800_000n);
    expect(r.hold.amount).toBe(37n);
    expect(r.hold.asset).toBe("USD");
    expect(r.hold.pin).toEqual({ rateCardId: "default", rateCardVersion: 1, model: "sonnet" });
    expect(r.balance.held).toBe(37n);
    expect(r.hold.metadata).toEqual({ feature: "chat" });
    await expectSound();
  });

  it("captures below, equal to and above the hold, and refuses above what is available", async () => {
    const caller = await t.newTenant();
    await putCard(caller, "c", [SONNET]);
    await fund(caller, "w", 1000n);
    const estimate = { input: 10_000n, output: 100_000n }; // 3 ¢ + 150 ¢
    // Below: 33 ¢ and the rest of the hold released.
    const h1 = ok(await reserve(caller, "w", "c", "sonnet", estimate)).hold;
    expect(h1.amount).toBe(153n);
    const below = ok(await capture(caller, h1.holdId, { input: 10_000n, output: 20_000n }));
    expect(below.amount).toBe(33n);
    expect(below.transfer.kind).toBe("capture");
    expect(below.transfer.amount).toBe(33n);
    expect(below.hold.status).toBe("captured");
    expect(below.hold.capturedAmount).toBe(33n);
    expect(below.balance.available).toBe(967n);
    expect(below.balance.held).toBe(0n);
    expect(below.transfer.metadata).toEqual({ feature: "chat", request: "r1" });
    // Token legs: one per class with tokens, @tokens -> wallet, linked by the usage id.
    expect(below.tokenTransfers.map((l) => [l.kind, l.tokenClass, l.amount, l.asset, l.debitWalletId, l.creditWalletId])).toEqual([
      ["usage", "input", 10_000n, "TOKENS", "@tokens", "w"],
      ["usage", "output", 20_000n, "TOKENS", "@tokens", "w"],
    ]);
    for (const leg of below.tokenTransfers) {
      expect(leg.usageId).toBe(below.usageId);
      expect(leg.model).toBe("sonnet");
      expect(leg.holdId).toBe(h1.holdId);
    }
    expect(below.transfer.usageId).toBe(below.usageId);
    expect(below.transfer.model).toBe("sonnet");
    // Equal.
    const h2 = ok(await reserve(caller, "w", "c", "sonnet", estimate)).hold;
    const equal = ok(await capture(caller, h2.holdId, estimate));
    expect(equal.amount).toBe(153n);
    expect(equal.balance.available).toBe(814n);
    // Above: 228 ¢ on a hold of 78, the excess of 150 fits the 736 available.
    const h3 = ok(await reserve(caller, "w", "c", "sonnet", { input: 10_000n, output: 50_000n })).hold;
    expect(h3.amount).toBe(78n);
    const above = ok(await capture(caller, h3.holdId, { input: 10_000n, output: 150_000n }));
    expect(above.amount).toBe(228n);
    expect(above.hold.capturedAmount).toBe(228n);
    expect(above.balance.available).toBe(586n);
    // Above what is available (603 ¢ on a hold of 1, 585 available): INSUFFICIENT_FUNDS, the
    // hold stays pending, the carry untouched.
    const h4 = ok(await reserve(caller, "w", "c", "sonnet", { input: 1n })).hold;
    const carry = await carryOf(caller, "w");
    const refused = await capture(caller, h4.holdId, { input: 10_000n, output: 400_000n });
    expect(refused.ok).toBe(false);
    if (!refused.ok) expect(refused.reason).toBe("INSUFFICIENT_FUNDS");
    expect((await t.ledger.getHold(caller, h4.holdId))!.status).toBe("pending");
    expect(await carryOf(caller, "w")).toBe(carry);
    await expectSound();
  });

  it("prices a capture with the pinned version after a new version, and a future version only from its effective_at", async () => {
    const caller = await t.newTenant();
    await putCard(caller, "p", [SONNET]);
    await fund(caller, "w", 10_000n);
    const held = ok(await reserve(caller, "w", "p", "sonnet", { input: 10_000n, output: 100_000n })).hold;
    const doubled: ModelPriceEntry = { model: "sonnet", prices: { input: 600_000_000_000n, output: 3_000_000_000_000n }, tiers: [] };
    expect((await putCard(caller, "p", [doubled])).version).toBe(2);
    const captured = ok(await capture(caller, held.holdId, { input: 10_000n, output: 100_000n }));
    expect(captured.quote.version).toBe(1);
    expect(captured.amount).toBe(153n);
    // New usage takes version 2.
    const spent = ok(await spend(caller, "w", "p", "sonnet", { input: 10_000n, output: 100_000n }));
    expect(spent.quote.version).toBe(2);
    expect(spent.amount).toBe(306n);
    // A version effective in an hour does not apply before then.
    const hour = new Date(t.clock().getTime() + 3_600_000);
    const tripled: ModelPriceEntry = { model: "sonnet", prices: { input: 900_000_000_000n, output: 4_500_000_000_000n }, tiers: [] };
    expect((await putCard(caller, "p", [tripled], { effectiveAt: hour })).version).toBe(3);
    const before = ok(await reserve(caller, "w", "p", "sonnet", { output: 100_000n })).hold;
    expect(before.pin?.rateCardVersion).toBe(2);
    t.clock.set(hour);
    const after = ok(await spend(caller, "w", "p", "sonnet", { output: 100_000n }));
    expect(after.quote.version).toBe(3);
    expect(after.amount).toBe(450n);
    await expectSound();
  });

  it("refuses an estimate that costs nothing, and releases the hold of a capture that charges nothing", async () => {
    const caller = await t.newTenant();
    await putCard(caller, "z", [SONNET, FREE]);
    await fund(caller, "w", 100n);
    const free = await reserve(caller, "w", "z", "free", { input: 1000n });
    expect(free.ok).toBe(false);
    if (!free.ok) {
      expect(free.reason).toBe("INVALID_FIELD");
      expect(free.metadata["field"]).toBe("estimate");
    }
    // The call failed: no tokens at all. The hold is released, nothing charged, no legs.
    const h = ok(await reserve(caller, "w", "z", "sonnet", { input: 1000n, output: 1000n })).hold;
    const nothing = ok(await capture(caller, h.holdId, {}));
    expect(nothing.amount).toBe(0n);
    expect(nothing.transfer.kind).toBe("release");
    expect(nothing.hold.status).toBe("released");
    expect(nothing.tokenTransfers).toEqual([]);
    expect(nothing.balance.available).toBe(100n);
    // A capture below one cent: released too, the cost kept as carry, the legs recorded.
    const h2 = ok(await reserve(caller, "w", "z", "sonnet", { input: 1000n, output: 1000n })).hold;
    const tiny = ok(await capture(caller, h2.holdId, { input: 100n }));
    expect(tiny.amount).toBe(0n);
    expect(tiny.carryNano).toBe(30_000_000n);
    expect(tiny.transfer.kind).toBe("release");
    expect(tiny.tokenTransfers.map((l) => [l.tokenClass, l.amount])).toEqual([["input", 100n]]);
    expect(await carryOf(caller, "w")).toBe(30_000_000n);
    // Free usage is recorded by SpendUsage: legs, no money.
    const freeSpend = ok(await spend(caller, "w", "z", "free", { input: 5000n }));
    expect(freeSpend.amount).toBe(0n);
    expect(freeSpend.transfer).toBeNull();
    expect(freeSpend.tokenTransfers).toHaveLength(1);
    const { rows } = await t.pool.query<{ type: string; legs: number }>(
      `select type, jsonb_array_length(data->'token_transfers') as legs from events
        where tenant_id = $1 and type = 'holdfast.usage.recorded' order by position`,
      [caller.tenantId],
    );
    expect(rows).toEqual([{ type: "holdfast.usage.recorded", legs: 1 }, { type: "holdfast.usage.recorded", legs: 1 }]);
    await expectSound();
  });

  it("answers RATE_CARD_NOT_FOUND, MODEL_NOT_PRICED and a hold made by Reserve", async () => {
    const caller = await t.newTenant();
    await putCard(caller, "m", [{ model: "embed", prices: { input: 2_000_000_000n }, tiers: [] }]);
    await fund(caller, "w", 100n);
    const missing = await reserve(caller, "w", "nope", "embed", { input: 1n });
    expect(missing.ok ? null : missing.reason).toBe("RATE_CARD_NOT_FOUND");
    const model = await spend(caller, "w", "m", "gpt-x", { input: 1n });
    expect(model.ok ? null : [model.reason, model.metadata]).toEqual(["MODEL_NOT_PRICED", { model: "gpt-x" }]);
    const unpriced = await spend(caller, "w", "m", "embed", { output: 1n });
    expect(unpriced.ok ? null : [unpriced.reason, unpriced.metadata]).toEqual(["MODEL_NOT_PRICED", { model: "embed", token_class: "output" }]);
    const plain = ok(await t.ledger.reserve(caller, { walletId: "w", asset: "USD", amount: 5n, holdId: "", ttlSeconds: 60, idempotencyKey: key(), metadata: {} }));
    const wrong = await capture(caller, plain.hold.holdId, { input: 1n });
    expect(wrong.ok ? null : [wrong.reason, wrong.metadata["field"]]).toEqual(["INVALID_FIELD", "hold_id"]);
    const overflow = await spend(caller, "w", "m", "embed", { input: 9_000_000_000_000_000_000n });
    expect(overflow.ok ? null : [overflow.reason, overflow.metadata["field"]]).toEqual(["AMOUNT_OVERFLOW", "usage.input_tokens"]);
    await expectSound();
  });
});

describe("SpendUsage", () => {
  it("charges the cost with the carry and records the legs, which ListTransfers shows", async () => {
    const caller = await t.newTenant();
    await putCard(caller, "s", [SONNET]);
    await fund(caller, "w", 1000n);
    // 1 input token + 1 output: 0.0018 ¢ each time, carried.
    const first = ok(await spend(caller, "w", "s", "sonnet", { input: 1n, output: 1n, reasoning: 2n }));
    expect(first.amount).toBe(0n);
    expect(first.carryNano).toBe(4_800_000n);
    expect(first.tokenTransfers.map((l) => l.tokenClass)).toEqual(["input", "output", "reasoning"]);
    const second = ok(await spend(caller, "w", "s", "sonnet", { input: 3_333n }));
    // 3333 × 300e9 / 1e6 = 999,900,000; + 4,800,000 carried = 1,004,700,000: 1 ¢, 4,700,000 carried.
    expect(second.amount).toBe(1n);
    expect(second.carryNano).toBe(4_700_000n);
    expect(second.transfer!.kind).toBe("spend");
    expect(second.transfer!.usageId).toBe(second.usageId);
    const page = await t.ledger.listTransfers(caller, "w", "TOKENS", 50, "");
    expect(page.items.map((x) => x.amount).sort()).toEqual([1n, 1n, 2n, 3_333n].sort());
    expect(page.items.every((x) => x.kind === "usage" && x.model === "sonnet")).toBe(true);
    await expectSound();
  });

  it("replays every usage command with its original answer and refuses a reused key", async () => {
    const caller = await t.newTenant();
    await putCard(caller, "r", [SONNET]);
    await fund(caller, "w", 1000n);
    const spendKey = key("su");
    const a = ok(await spend(caller, "w", "r", "sonnet", { input: 5_000n }, spendKey));
    const b = ok(await spend(caller, "w", "r", "sonnet", { input: 5_000n }, spendKey));
    expect(b.replayed).toBe(true);
    expect({ ...b, replayed: false }).toEqual(a);
    const reused = await spend(caller, "w", "r", "sonnet", { input: 5_001n }, spendKey);
    expect(reused.ok ? null : reused.reason).toBe("IDEMPOTENCY_KEY_REUSED");

    const reserveKey = key("ru");
    const input = { walletId: "w", rateCardId: "r", model: "sonnet", estimate: usage({ output: 1000n }), holdId: "hold-r", ttlSeconds: 300, idempotencyKey: reserveKey, metadata: {} };
    const h = ok(await t.ledger.reserveUsage(caller, input));
    const h2 = ok(await t.ledger.reserveUsage(caller, input));
    expect(h2.replayed).toBe(true);
    expect(h2.hold).toEqual(h.hold);
    expect((await t.ledger.reserveUsage(caller, { ...input, model: "other" })).ok).toBe(false);

    const captureKey = key("cu");
    const c = ok(await capture(caller, "hold-r", { output: 700n }, captureKey));
    const c2 = ok(await capture(caller, "hold-r", { output: 700n }, captureKey));
    expect(c2.replayed).toBe(true);
    expect(c2.tokenTransfers).toEqual(c.tokenTransfers);
    expect(c2.amount).toBe(c.amount);
    const reusedCapture = await capture(caller, "hold-r", { output: 701n }, captureKey);
    expect(reusedCapture.ok ? null : reusedCapture.reason).toBe("IDEMPOTENCY_KEY_REUSED");
    const { rows } = await t.pool.query("select count(*)::int as n from transfers where tenant_id = $1 and kind = 'usage'", [caller.tenantId]);
    expect(rows[0].n).toBe(2);
    await expectSound();
  });
});

describe("rounding with carry", () => {
  /** Each charge costs 7 tiny tokens; the wallet is charged floor(Σ cost / 1e9) in all. */
  async function tinyCharges(caller: Caller, walletId: string, count: number, concurrency: number) {
    await putCard(caller, `tiny-${walletId}`, [TINY]);
    await fund(caller, walletId, 10_000n);
    const each = exactCost(TINY, { input: 7n });
    expect(each).toBe(333_333_333n);
    let charged = 0n;
    for (let i = 0; i < count; i += concurrency) {
      const batch = Array.from({ length: Math.min(concurrency, count - i) }, () => spend(caller, walletId, `tiny-${walletId}`, "tiny", { input: 7n }));
      for (const r of await Promise.all(batch)) charged += ok(r).amount;
    }
    const exact = each * BigInt(count);
    expect(charged).toBe(exact / NANO_PER_MINOR);
    expect(charged * NANO_PER_MINOR + (await carryOf(caller, walletId))).toBe(exact);
    const wallet = (await t.ledger.getWallet(caller, walletId))!;
    expect(wallet.balances.find((b) => b.asset === "USD")!.posted).toBe(10_000n - charged);
  }

  it("1,000 tiny charges one after another charge floor(exact total), the rest carried", async () => {
    await tinyCharges(await t.newTenant(), "seq", 1000, 1);
    await expectSound();
  });

  it("1,000 tiny charges 50 at a time (group commit) do the same", async () => {
    await tinyCharges(await t.newTenant(), "conc", 1000, 50);
    await expectSound();
  });

  it("concurrent CaptureUsage on one hot wallet: charged + carry = Σ exact costs, invariants hold", async () => {
    const caller = await t.newTenant();
    await putCard(caller, "hot", [SONNET]);
    await fund(caller, "hot", 1_000_000n);
    const holds = await Promise.all(Array.from({ length: 64 }, () => reserve(caller, "hot", "hot", "sonnet", { input: 2000n, output: 4000n })));
    let seed = 42;
    const random = () => {
      seed = (seed * 1_103_515_245 + 12_345) % 2_147_483_648;
      return seed;
    };
    const usages = holds.map(() => ({ input: BigInt(random() % 2000), output: BigInt(random() % 6000) }));
    const results = await Promise.all(holds.map((h, i) => capture(caller, ok(h).hold.holdId, usages[i]!)));
    const charged = results.reduce((sum, r) => sum + ok(r).amount, 0n);
    const exact = usages.reduce((sum, u) => sum + exactCost(SONNET, u), 0n);
    expect(charged * NANO_PER_MINOR + (await carryOf(caller, "hot"))).toBe(exact);
    const { rows } = await t.pool.query<{ tokens: string }>(
      "select tokens::text from token_accounts where tenant_id = $1 and wallet_id = 'hot' and asset = 'TOKENS'",
      [caller.tenantId],
    );
    expect(BigInt(rows[0]!.tokens)).toBe(usages.reduce((sum, u) => sum + u.input + u.output, 0n));
    await expectSound();
  });

  it("the hash chain verifies with the usage rows in it (canonical version 2)", async () => {
    const report = await verifyLedger(t.pool);
    expect(report.invariantViolations).toEqual([]);
    expect(report.tenants.flatMap((x) => x.problems)).toEqual([]);
    expect(report.ok).toBe(true);
    const { rows } = await t.pool.query<{ n: number }>(
      "select count(*)::int as n from transfers where usage_id is not null",
    );
    expect(rows[0]!.n).toBeGreaterThan(1000);
  });
});
