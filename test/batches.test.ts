// Goal: ExecuteBatch applies its commands all together or not at all (docs/batches.md): in
// request order, each seeing the ones before it; a refusal anywhere leaves no trace (no journal
// row, no event, no hold, no wallet, balances as they were) and is recorded under the batch's
// key with its index; replays answer the original results; every event carries the batch id;
// and hundreds of concurrent batches over overlapping wallets, in random orders, beside group
// commit's queued commands, never deadlock and keep every invariant.
// Method: the ledger core on a fresh database (createTestLedger), with group commit on so that
// single commands go through their wallet's queue while batches bypass it. The concurrent runs
// draw their batches from a seeded generator (fast-check; the seed is printed on failure) and
// compare the balances with what the applied batches add up to, then run checkInvariants.
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { BatchCommandInput, BatchOutcome, Caller } from "@holdfast/ledger/domain";
import { checkInvariants } from "@holdfast/ledger/invariants";
import { createTestLedger, key } from "./support/ledger.js";

let t: Awaited<ReturnType<typeof createTestLedger>>;
const seed = Number(process.env["HOLDFAST_TEST_SEED"] ?? Date.now() % 2 ** 31);

beforeAll(async () => {
  t = await createTestLedger({ groupCommit: true });
});
afterAll(async () => {
  await t?.close();
});

const deposit = (walletId: string, amount: bigint, asset = "USD"): BatchCommandInput => ({
  kind: "deposit",
  input: { walletId, asset, amount, metadata: {} },
});
const spend = (walletId: string, amount: bigint, asset = "USD"): BatchCommandInput => ({
  kind: "spend",
  input: { walletId, asset, amount, metadata: {} },
});
const transfer = (fromWalletId: string, toWalletId: string, amount: bigint): BatchCommandInput => ({
  kind: "transfer",
  input: { fromWalletId, toWalletId, asset: "USD", amount, metadata: {} },
});

async function available(walletId: string, asset = "USD", caller: Caller = t.caller): Promise<bigint> {
  const wallet = await t.ledger.getWallet(caller, walletId);
  return wallet?.balances.find((b) => b.asset === asset)?.available ?? 0n;
}

/** Rows of the tenant that a batch could have written, hash chain links of its journal rows included. */
async function traces(tenantId: string) {
  const { rows } = await t.pool.query<{ transfers: number; events: number; holds: number; wallets: number; keys: number; links: number }>(
    `select (select count(*)::int from transfers where tenant_id = $1) as transfers,
            (select count(*)::int from events where tenant_id = $1) as events,
            (select count(*)::int from holds where tenant_id = $1) as holds,
            (select count(*)::int from wallets where tenant_id = $1) as wallets,
            (select count(*)::int from idempotency_keys where tenant_id = $1) as keys,
            (select count(*)::int from journal_chain where tenant_id = $1) as links`,
    [tenantId],
  );
  return rows[0]!;
}

function ok(outcome: BatchOutcome): Extract<BatchOutcome, { ok: true }> {
  if (!outcome.ok) throw new Error(`batch refused at ${outcome.index}: ${outcome.reason} ${outcome.message}`);
  return outcome;
}

describe("one batch", () => {
  it("moves a token leg and a money leg together, or neither", async () => {
    const caller = await t.newTenant();
    await t.ledger.deposit(caller, { walletId: "agent_1", asset: "USD", amount: 500n, idempotencyKey: key(), metadata: {} });
    await t.ledger.deposit(caller, { walletId: "agent_1", asset: "TOKENS", amount: 10_000n, idempotencyKey: key(), metadata: {} });
    const r = ok(await t.ledger.executeBatch(caller, { idempotencyKey: key(), commands: [spend("agent_1", 1_800n, "TOKENS"), spend("agent_1", 27n)] }));
    expect(r.results.map((x) => x.kind)).toEqual(["spend", "spend"]);
    expect(await available("agent_1", "TOKENS", caller)).toBe(8_200n);
    expect(await available("agent_1", "USD", caller)).toBe(473n);

    // The money leg cannot be paid: the token leg before it is not applied either.
    const before = await traces(caller.tenantId);
    const refused = await t.ledger.executeBatch(caller, { idempotencyKey: key(), commands: [spend("agent_1", 1_800n, "TOKENS"), spend("agent_1", 9_999n)] });
    expect(refused).toMatchObject({ ok: false, reason: "INSUFFICIENT_FUNDS", index: 1, metadata: { index: "1", reason: "INSUFFICIENT_FUNDS", available: "473" } });
    expect(await available("agent_1", "TOKENS", caller)).toBe(8_200n);
    expect(await traces(caller.tenantId)).toEqual({ ...before, keys: before.keys + 1 });
  });

  it("leaves no trace when its last command is refused: no journal row, event, hold or wallet, balances unchanged", async () => {
    const caller = await t.newTenant();
    await t.ledger.deposit(caller, { walletId: "payer", asset: "USD", amount: 100n, idempotencyKey: key(), metadata: {} });
    const before = await traces(caller.tenantId);
    const commands: BatchCommandInput[] = [
      deposit("payer", 50n),
      deposit("brand_new_wallet", 10n),
      transfer("payer", "another_new_wallet", 30n),
      { kind: "reserve", input: { walletId: "payer", asset: "USD", amount: 20n, holdId: "h_trace", ttlSeconds: 60, metadata: {} } },
      spend("payer", 1_000n),
    ];
    const refused = await t.ledger.executeBatch(caller, { idempotencyKey: key(), commands });
    expect(refused).toMatchObject({ ok: false, reason: "INSUFFICIENT_FUNDS", index: 4, replayed: false });
    // Only the batch's own idempotency record (the refusal) remains.
    expect(await traces(caller.tenantId)).toEqual({ ...before, keys: before.keys + 1 });
    expect(await available("payer", "USD", caller)).toBe(100n);
    expect(await t.ledger.getWallet(caller, "brand_new_wallet")).toBeNull();
    expect(await t.ledger.getHold(caller, "h_trace")).toBeNull();
  });

  it("runs a reserve and then a capture of the same hold, each command seeing the one before", async () => {
    const caller = await t.newTenant();
    const r = ok(
      await t.ledger.executeBatch(caller, {
        idempotencyKey: key(),
        commands: [
          deposit("w", 100n),
          { kind: "reserve", input: { walletId: "w", asset: "USD", amount: 60n, holdId: "h1", ttlSeconds: 60, metadata: { model: "m" } } },
          { kind: "extendHold", input: { holdId: "h1", ttlSeconds: 600 } },
          { kind: "capture", input: { holdId: "h1", amount: 45n, metadata: {} } },
          { kind: "reserve", input: { walletId: "w", asset: "USD", amount: 10n, holdId: "h2", ttlSeconds: 60, metadata: {} } },
          { kind: "release", input: { holdId: "h2" } },
        ],
      }),
    );
    const [, reserved, extended, captured, , released] = r.results;
    expect(reserved).toMatchObject({ kind: "reserve", result: { hold: { status: "pending", amount: 60n }, balance: { available: 40n } } });
    expect(extended).toMatchObject({ kind: "extendHold", result: { hold: { holdId: "h1" } } });
    expect(captured).toMatchObject({ kind: "capture", result: { hold: { status: "captured", capturedAmount: 45n }, balance: { available: 55n } } });
    expect(released).toMatchObject({ kind: "release", result: { hold: { status: "released" }, balance: { available: 55n } } });
    expect(await available("w", "USD", caller)).toBe(55n);
  });

  it("puts the batch id on every event it writes, and on no other", async () => {
    const caller = await t.newTenant();
    await t.ledger.deposit(caller, { walletId: "a", asset: "USD", amount: 10n, idempotencyKey: key(), metadata: {} });
    const r = ok(await t.ledger.executeBatch(caller, { idempotencyKey: key(), commands: [deposit("a", 5n), transfer("a", "b", 7n)] }));
    const { rows } = await t.pool.query<{ type: string; batch_id: string | null }>(
      "select type, data->>'batch_id' as batch_id from events where tenant_id = $1 order by position",
      [caller.tenantId],
    );
    expect(rows).toEqual([
      { type: "holdfast.deposit.completed", batch_id: null },
      { type: "holdfast.deposit.completed", batch_id: r.batchId },
      { type: "holdfast.transfer.sent", batch_id: r.batchId },
      { type: "holdfast.transfer.received", batch_id: r.batchId },
    ]);
  });

  it("replays the original results, and the original refusal, and refuses the key for other commands", async () => {
    const caller = await t.newTenant();
    const batchKey = key();
    const commands = [deposit("r", 100n), spend("r", 30n)];
    const first = ok(await t.ledger.executeBatch(caller, { idempotencyKey: batchKey, commands }));
    const before = await traces(caller.tenantId);
    const again = ok(await t.ledger.executeBatch(caller, { idempotencyKey: batchKey, commands }));
    expect(again.replayed).toBe(true);
    expect(again.batchId).toBe(first.batchId);
    expect(again.results).toEqual(first.results);
    expect(await traces(caller.tenantId)).toEqual(before);
    expect(await available("r", "USD", caller)).toBe(70n);

    const reused = await t.ledger.executeBatch(caller, { idempotencyKey: batchKey, commands: [deposit("r", 101n)] });
    expect(reused).toMatchObject({ ok: false, reason: "IDEMPOTENCY_KEY_REUSED" });
    // A single command with the batch's key is another request too.
    const single = await t.ledger.deposit(caller, { walletId: "r", asset: "USD", amount: 100n, idempotencyKey: batchKey, metadata: {} });
    expect(single).toMatchObject({ ok: false, reason: "IDEMPOTENCY_KEY_REUSED" });

    const refusedKey = key();
    const refused = await t.ledger.executeBatch(caller, { idempotencyKey: refusedKey, commands: [spend("r", 1n), spend("r", 500n)] });
    expect(refused).toMatchObject({ ok: false, reason: "INSUFFICIENT_FUNDS", index: 1, replayed: false });
    await t.ledger.deposit(caller, { walletId: "r", asset: "USD", amount: 1_000n, idempotencyKey: key(), metadata: {} });
    // Recorded like any refusal: the same key answers it again, even though it would now pass.
    const replayedRefusal = await t.ledger.executeBatch(caller, { idempotencyKey: refusedKey, commands: [spend("r", 1n), spend("r", 500n)] });
    expect(replayedRefusal).toEqual({ ...refused, replayed: true });
    expect(await available("r", "USD", caller)).toBe(1_070n);
  });

  it("records a sum beyond int64 as the refusal of the command at fault", async () => {
    const caller = await t.newTenant();
    const refused = await t.ledger.executeBatch(caller, {
      idempotencyKey: key(),
      commands: [deposit("big", 2n ** 63n - 1n), deposit("big", 1n)],
    });
    expect(refused).toMatchObject({ ok: false, reason: "AMOUNT_OVERFLOW", index: 1 });
    expect(await t.ledger.getWallet(caller, "big")).toBeNull();
  });

  it("answers the refusals of the single commands: a hold of another wallet for a scoped caller looks not found", async () => {
    const caller = await t.newTenant();
    await t.ledger.executeBatch(caller, {
      idempotencyKey: key(),
      commands: [deposit("mine", 100n), deposit("theirs", 100n), { kind: "reserve", input: { walletId: "theirs", asset: "USD", amount: 5n, holdId: "theirs_hold", ttlSeconds: 60, metadata: {} } }],
    });
    const scoped: Caller = { ...caller, scopeWalletId: "mine" };
    const refused = await t.ledger.executeBatch(scoped, {
      idempotencyKey: key(),
      commands: [spend("mine", 1n), { kind: "capture", input: { holdId: "theirs_hold", amount: null, metadata: {} } }],
    });
    expect(refused).toMatchObject({ ok: false, reason: "HOLD_NOT_FOUND", index: 1 });
    expect(await available("mine", "USD", caller)).toBe(100n);
    await expect(
      t.ledger.executeBatch(scoped, {
        idempotencyKey: key(),
        commands: [{ kind: "createGrant", input: { walletId: "mine", asset: "USD", amount: 1n, grantId: "", category: null, priority: null, startsAt: null, expiresAt: null, metadata: {} } }],
      }),
    ).rejects.toMatchObject({ reason: "PERMISSION_DENIED" });
  });
});

describe("concurrent batches", () => {
  const WALLETS = ["w0", "w1", "w2", "w3", "w4", "w5"];
  const BATCHES = 300;
  const SINGLES = 120;
  /**
   * Calls in flight at once: together more than the pool's 20 connections, so calls queue for
   * one, but few enough that none waits past the pool's connect timeout behind batches that
   * lock most of the wallets.
   */
  const BATCHES_IN_FLIGHT = 32;
  const SINGLES_IN_FLIGHT = 8;

  /** Runs the calls with at most `limit` in flight; their outcomes in input order. */
  async function inFlight<T>(limit: number, calls: (() => Promise<T>)[]): Promise<T[]> {
    const outcomes: T[] = [];
    let next = 0;
    const worker = async () => {
      for (let i = next++; i < calls.length; i = next++) outcomes[i] = await calls[i]!();
    };
    await Promise.all(Array.from({ length: limit }, worker));
    return outcomes;
  }

  type Step = { kind: "spend" | "deposit"; wallet: number; amount: number } | { kind: "transfer"; from: number; to: number; amount: number };
  // Spends outweigh deposits, so that the wallets run dry and batches meet the floor.
  const stepArb: fc.Arbitrary<Step> = fc.oneof(
    { weight: 3, arbitrary: fc.record({ kind: fc.constant("spend" as const), wallet: fc.nat(WALLETS.length - 1), amount: fc.integer({ min: 1, max: 40 }) }) },
    { weight: 1, arbitrary: fc.record({ kind: fc.constant("deposit" as const), wallet: fc.nat(WALLETS.length - 1), amount: fc.integer({ min: 1, max: 40 }) }) },
    {
      weight: 2,
      arbitrary: fc
        .record({ kind: fc.constant("transfer" as const), from: fc.nat(WALLETS.length - 1), to: fc.nat(WALLETS.length - 1), amount: fc.integer({ min: 1, max: 40 }) })
        .filter((s) => s.from !== s.to),
    },
  );

  function toCommand(step: Step): BatchCommandInput {
    if (step.kind === "transfer") return transfer(WALLETS[step.from]!, WALLETS[step.to]!, BigInt(step.amount));
    return (step.kind === "spend" ? spend : deposit)(WALLETS[step.wallet]!, BigInt(step.amount));
  }

  /**
   * Deadlocks PostgreSQL detected in a database. The ledger retries a deadlocked batch, so only
   * this counter shows whether one happened; a backend reports it when its session ends.
   */
  async function deadlocks(database: string): Promise<number> {
    await t.pool.query("select pg_stat_clear_snapshot()");
    const { rows } = await t.pool.query<{ deadlocks: number }>("select deadlocks::int from pg_stat_database where datname = $1", [database]);
    return rows[0]!.deadlocks;
  }

  it(`runs ${BATCHES} batches over ${WALLETS.length} wallets in random orders beside queued single commands: no deadlock, every invariant`, async () => {
    // A ledger of its own, whose sessions can be ended to count the deadlocks they met.
    const u = await createTestLedger({ groupCommit: true });
    const database = new URL(u.db.url).pathname.slice(1);
    try {
      await concurrentRun(u);
      await u.pool.end();
      expect(await deadlocks(database), `deadlocks with HOLDFAST_TEST_SEED=${seed}`).toBe(0);
    } finally {
      await u.db.drop();
    }
  });

  async function concurrentRun(u: Awaited<ReturnType<typeof createTestLedger>>) {
    const caller = u.caller;
    for (const walletId of WALLETS) {
      await u.ledger.deposit(caller, { walletId, asset: "USD", amount: 200n, idempotencyKey: key(), metadata: {} });
    }
    const batches = fc.sample(fc.array(stepArb, { minLength: 2, maxLength: 8 }), { seed, numRuns: BATCHES });
    const singles = fc.sample(fc.record({ wallet: fc.nat(WALLETS.length - 1), amount: fc.integer({ min: 1, max: 20 }) }), { seed: seed + 1, numRuns: SINGLES });
    try {
      // Single spends queue for their wallet (group commit) while batches bypass the queues and
      // take the same wallets' locks.
      const [outcomes, singleOutcomes] = await Promise.all([
        inFlight(BATCHES_IN_FLIGHT, batches.map((steps) => () => u.ledger.executeBatch(caller, { idempotencyKey: key(), commands: steps.map(toCommand) }))),
        inFlight(
          SINGLES_IN_FLIGHT,
          singles.map((s) => () => u.ledger.spend(caller, { walletId: WALLETS[s.wallet]!, asset: "USD", amount: BigInt(s.amount), idempotencyKey: key(), metadata: {} })),
        ),
      ]);
      // What the applied batches and spends add up to, wallet by wallet.
      const expected = new Map(WALLETS.map((w) => [w, 200n]));
      const add = (w: string, amount: bigint) => expected.set(w, expected.get(w)! + amount);
      let refused = 0;
      outcomes.forEach((outcome, i) => {
        if (!outcome.ok) {
          expect(outcome.reason).toBe("INSUFFICIENT_FUNDS");
          refused++;
          return;
        }
        for (const step of batches[i]!) {
          if (step.kind === "deposit") add(WALLETS[step.wallet]!, BigInt(step.amount));
          else if (step.kind === "spend") add(WALLETS[step.wallet]!, -BigInt(step.amount));
          else {
            add(WALLETS[step.from]!, -BigInt(step.amount));
            add(WALLETS[step.to]!, BigInt(step.amount));
          }
        }
      });
      singleOutcomes.forEach((outcome, i) => {
        if (outcome.ok) add(WALLETS[singles[i]!.wallet]!, -BigInt(singles[i]!.amount));
        else expect(outcome.reason).toBe("INSUFFICIENT_FUNDS");
      });
      // Both kinds of outcome happened: the run pushed against the floor and applied batches too.
      expect(refused).toBeGreaterThan(0);
      expect(refused).toBeLessThan(BATCHES);
      for (const walletId of WALLETS) {
        const wallet = await u.ledger.getWallet(caller, walletId);
        expect(wallet?.balances[0]?.available, walletId).toBe(expected.get(walletId));
      }
      expect(await checkInvariants(u.pool)).toEqual([]);
      // Every committed journal row got exactly its hash chain link; rolled-back ones none.
      const { rows } = await u.pool.query<{ unlinked: number; links: number; transfers: number }>(
        `select (select count(*)::int from transfers t where not exists (select 1 from journal_chain c where c.tenant_id = t.tenant_id and c.transfer_id = t.transfer_id)) as unlinked,
                (select count(*)::int from journal_chain) as links, (select count(*)::int from transfers) as transfers`,
      );
      expect(rows[0]).toEqual({ unlinked: 0, links: rows[0]!.transfers, transfers: rows[0]!.transfers });
    } catch (err) {
      throw new Error(`concurrent batches failed with HOLDFAST_TEST_SEED=${seed}: ${String(err)}`, { cause: err });
    }
  }
});
