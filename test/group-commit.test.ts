// Goal: group commit batches a hot wallet's queued commands into shared transactions without
// changing any answer: one result per command, refusals stay per command, a command that
// raises inside a batch fails alone, and duplicate keys in one batch apply once.
// Method: the ledger core with group commit on, against a fresh database; bursts of concurrent
// commands at one wallet; the group-commit counters prove batching happened; every outcome and
// the ledger invariants are checked.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { checkInvariants } from "@holdfast/ledger/invariants";
import { createTestLedger, key } from "./support/ledger.js";

let t: Awaited<ReturnType<typeof createTestLedger>>;

beforeAll(async () => {
  t = await createTestLedger({ poolMax: 10, groupCommit: true });
});
afterAll(async () => {
  await t.close();
});

const deposit = (walletId: string, amount: bigint, idempotencyKey = key()) =>
  t.ledger.deposit(t.caller, { walletId, asset: "USD", amount, idempotencyKey, metadata: {} });
const spend = (walletId: string, amount: bigint, idempotencyKey = key()) =>
  t.ledger.spend(t.caller, { walletId, asset: "USD", amount, idempotencyKey, metadata: {} });

describe("group commit", () => {
  it("commits 300 concurrent spends on one wallet in far fewer transactions", async () => {
    await deposit("gc_hot", 1_000n);
    const before = t.ledger.groupCommitStats()!;
    const outcomes = await Promise.all(Array.from({ length: 300 }, () => spend("gc_hot", 5n)));
    const after = t.ledger.groupCommitStats()!;
    // 1,000 funds 200 spends of 5; the floor refuses the other 100, each in its own result.
    expect(outcomes.filter((o) => o.ok)).toHaveLength(200);
    expect(outcomes.filter((o) => !o.ok && o.reason === "INSUFFICIENT_FUNDS")).toHaveLength(100);
    expect(after.commands - before.commands).toBe(300);
    expect(after.batches - before.batches).toBeLessThan(300);
    expect(after.batchSizeMax).toBeGreaterThan(1);
    expect((await t.ledger.getWallet(t.caller, "gc_hot"))!.balances[0]!.posted).toBe(0n);
    expect(await checkInvariants(t.pool)).toEqual([]);
  });

  it("fails only the command that raises; the rest of its batch commits", async () => {
    await deposit("gc_overflow", 2n ** 62n);
    const before = t.ledger.groupCommitStats()!;
    const outcomes = await Promise.all([
      ...Array.from({ length: 20 }, () => deposit("gc_overflow", 1n)),
      deposit("gc_overflow", 2n ** 62n),
      ...Array.from({ length: 20 }, () => deposit("gc_overflow", 1n)),
    ]);
    expect(outcomes.filter((o) => o.ok)).toHaveLength(40);
    expect(outcomes.filter((o) => !o.ok && o.reason === "AMOUNT_OVERFLOW")).toHaveLength(1);
    expect(t.ledger.groupCommitStats()!.fallbacks).toBeGreaterThan(before.fallbacks);
    expect((await t.ledger.getWallet(t.caller, "gc_overflow"))!.balances[0]!.posted).toBe(2n ** 62n + 40n);
    expect(await checkInvariants(t.pool)).toEqual([]);
  });

  it("applies a key repeated inside one batch once, and replays it to the others", async () => {
    await deposit("gc_dup", 100n);
    const k = key("gc");
    const outcomes = await Promise.all(Array.from({ length: 30 }, () => spend("gc_dup", 7n, k)));
    const oks = outcomes.filter((o): o is Extract<typeof o, { ok: true }> => o.ok);
    expect(oks).toHaveLength(30);
    expect(new Set(oks.map((o) => o.transfer.transferId)).size).toBe(1);
    expect(oks.filter((o) => !o.replayed)).toHaveLength(1);
    expect((await t.ledger.getWallet(t.caller, "gc_dup"))!.balances[0]!.posted).toBe(93n);
  });

  it("batches captures with their wallet's other commands", async () => {
    await deposit("gc_holds", 10_000n);
    const holds = await Promise.all(
      Array.from({ length: 50 }, (_, i) =>
        t.ledger.reserve(t.caller, { walletId: "gc_holds", asset: "USD", amount: 100n, holdId: `gc_h${i}`, ttlSeconds: 60, idempotencyKey: key(), metadata: {} }),
      ),
    );
    expect(holds.every((h) => h.ok)).toBe(true);
    const before = t.ledger.groupCommitStats()!;
    const captures = await Promise.all(
      Array.from({ length: 50 }, (_, i) => t.ledger.capture(t.caller, { holdId: `gc_h${i}`, amount: 60n, idempotencyKey: key(), metadata: {} })),
    );
    expect(captures.every((c) => c.ok)).toBe(true);
    const after = t.ledger.groupCommitStats()!;
    expect(after.commands - before.commands).toBe(50);
    expect(after.batches - before.batches).toBeLessThan(50);
    expect((await t.ledger.getWallet(t.caller, "gc_holds"))!.balances[0]).toMatchObject({ posted: 7_000n, held: 0n });
    expect(await checkInvariants(t.pool)).toEqual([]);
  });
});
