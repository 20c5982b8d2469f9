// Goal: postpaid statements (docs/statements.md) tell the truth about the journal: a month of
// usage on a wallet with a credit line gives the figures the test adds up itself from what each
// command answered; adjacent closed periods chain (closing = next opening); a closed period
// never changes afterwards, whatever a late capture or a lagging clock does; commands running
// while a statement closes are neither lost nor dated inside the closed period; breakage is
// counted when its journal row is written; a Deposit of the amount due repays the credit line;
// invariant 8 catches a statement the journal no longer agrees with; the processes' database
// role runs every statement call but cannot rewrite statements or switch the trigger off.
// Method: the ledger core on a fresh database with a manual clock (no RPC; statements-rpc.test.ts
// covers the wire), a seeded random month of commands (fast-check; the seed is printed on
// failure), a second ledger core on the same database with a clock that lags to play a replica
// whose clock is behind, and SQL over the journal and the events for the facts a command does
// not answer. Every test ends with the invariant check.
import { randomBytes } from "node:crypto";
import fc from "fast-check";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createManualClock, uuidV7 } from "@holdfast/common/ids";
import { createLedger, type Outcome } from "@holdfast/ledger/domain";
import { checkInvariants } from "@holdfast/ledger/invariants";
import { createTestLedger, key } from "./support/ledger.js";

let t: Awaited<ReturnType<typeof createTestLedger>>;
const seed = Number(process.env["HOLDFAST_TEST_SEED"] ?? Date.now() % 2 ** 31);

const HOUR_MS = 3_600_000;
const DAY_MS = 24 * HOUR_MS;
const JAN = new Date("2026-01-01T00:00:00Z");
const FEB = new Date("2026-02-01T00:00:00Z");
const MAR = new Date("2026-03-01T00:00:00Z");
const APR = new Date("2026-04-01T00:00:00Z");

function withSeed<T>(label: string, run: () => Promise<T>): Promise<T> {
  return run().catch((err: unknown) => {
    throw new Error(`${label} failed with HOLDFAST_TEST_SEED=${seed}: ${String(err)}`, { cause: err });
  });
}

/** The result of an outcome that must have succeeded. */
function ok<T>(outcome: Outcome<T>): T & { ok: true; replayed: boolean } {
  if (!outcome.ok) {
    throw new Error(`expected success, got ${outcome.reason}: ${outcome.message}`);
  }
  return outcome;
}

/** The reason of an outcome that must have been refused. */
function refusal(outcome: Outcome<unknown>): { reason: string; message: string; metadata: Record<string, string> } {
  if (outcome.ok) {
    throw new Error("expected a refusal, the command succeeded");
  }
  return outcome;
}

const get = (walletId: string, periodStart: Date, periodEnd: Date, groupBy = "") =>
  t.ledger.getStatement(t.caller, { walletId, asset: "USD", periodStart, periodEnd, groupBy });
const close = (walletId: string, periodEnd: Date, groupBy = "", idempotencyKey = key()) =>
  t.ledger.closeStatement(t.caller, { walletId, asset: "USD", periodEnd, groupBy, idempotencyKey });

async function posted(walletId: string): Promise<bigint> {
  return (await t.ledger.getWallet(t.caller, walletId))!.balances.find((b) => b.asset === "USD")!.posted;
}

/** The posted balance just before `at`, summed by the test from the journal rows themselves. */
async function journalPostedBefore(walletId: string, at: Date): Promise<bigint> {
  const { rows } = await t.pool.query<{ n: string }>(
    `select coalesce(sum(case when credit_wallet_id = $2 then amount else -amount end), 0)::text as n
       from transfers
      where tenant_id = $1 and asset = 'USD' and created_at < $3
        and (credit_wallet_id = $2 or (debit_wallet_id = $2 and kind not in ('reserve', 'release', 'expire')))`,
    [t.caller.tenantId, walletId, at],
  );
  return BigInt(rows[0]!.n);
}

/** What the test expects of a period: lines keyed "side kind group", and the sums. */
class Expected {
  readonly lines = new Map<string, { count: bigint; amount: bigint }>();
  debits = 0n;
  credits = 0n;

  add(side: "debit" | "credit", kind: string, group: string, amount: bigint) {
    const k = `${side} ${kind} ${group}`;
    const line = this.lines.get(k) ?? { count: 0n, amount: 0n };
    this.lines.set(k, { count: line.count + 1n, amount: line.amount + amount });
    if (side === "debit") this.debits += amount;
    else this.credits += amount;
  }
}

type Line = { side: string; kind: string; groupValue: string; count: bigint; amount: bigint };
const linesOf = (lines: Line[]) => new Map(lines.map((l) => [`${l.side} ${l.kind} ${l.groupValue}`, { count: l.count, amount: l.amount }]));

beforeAll(async () => {
  t = await createTestLedger({ groupCommit: true });
});
afterAll(async () => {
  await t?.close();
});

type Op =
  | { kind: "spend"; amount: number; model: number }
  | { kind: "reserve"; amount: number; model: number; then: "capture" | "release" | "expire"; capture: number }
  | { kind: "deposit"; amount: number }
  | { kind: "refund"; pick: number }
  | { kind: "transfer"; amount: number; out: boolean };

const MODELS = ["model-a", "model-b", "model-c"];

const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 5, arbitrary: fc.record({ kind: fc.constant("spend" as const), amount: fc.integer({ min: 1, max: 400 }), model: fc.nat(2) }) },
  {
    weight: 4,
    arbitrary: fc.record({
      kind: fc.constant("reserve" as const),
      amount: fc.integer({ min: 1, max: 300 }),
      model: fc.nat(2),
      then: fc.constantFrom("capture" as const, "release" as const, "expire" as const),
      capture: fc.integer({ min: 1, max: 400 }),
    }),
  },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("deposit" as const), amount: fc.integer({ min: 100, max: 3000 }) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("refund" as const), pick: fc.nat() }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("transfer" as const), amount: fc.integer({ min: 1, max: 200 }), out: fc.boolean() }) },
);

describe("a month of usage on a wallet with a credit line", () => {
  it("gives the figures the commands add up to, grouped by kind and by a metadata key", () =>
    withSeed("month", async () => {
      t.clock.set(JAN);
      const w = "month_wallet";
      const peer = "month_peer";
      ok(await t.ledger.createWallet(t.caller, w, {}));
      ok(await t.ledger.updateWallet(t.caller, { walletId: w, status: null, creditLimits: [{ asset: "USD", creditLimit: 5_000n }], metadata: {} }));
      ok(await t.ledger.deposit(t.caller, { walletId: peer, asset: "USD", amount: 1_000_000n, idempotencyKey: key(), metadata: {} }));

      const byKind = new Expected();
      const byModel = new Expected();
      const record = (side: "debit" | "credit", kind: string, model: string, amount: bigint) => {
        byKind.add(side, kind, "", amount);
        byModel.add(side, kind, model, amount);
      };
      const refundable: { transferId: string; left: bigint; model: string }[] = [];
      // About 4 hours apart, 200 commands would span more than the month: the month ends first.
      const ops = fc.sample(fc.tuple(opArb, fc.integer({ min: 1, max: 8 * HOUR_MS })), { seed, numRuns: 200 });
      let ran = 0;
      for (const [op, gapMs] of ops) {
        t.clock.advance(gapMs);
        if (t.clock().getTime() >= FEB.getTime() - HOUR_MS) break;
        await runOp(w, peer, op, record, refundable);
        ran++;
      }
      expect(ran).toBeGreaterThan(100);
      t.clock.set(new Date(FEB.getTime() + HOUR_MS));

      const s = ok(await get(w, JAN, FEB)).statement;
      expect(s).toMatchObject({ walletId: w, asset: "USD", periodStart: JAN, periodEnd: FEB, groupBy: "", openingPosted: 0n, statementId: null, closedAt: null });
      expect(linesOf(s.lines)).toEqual(byKind.lines);
      expect([s.totalDebits, s.totalCredits]).toEqual([byKind.debits, byKind.credits]);
      expect(s.closingPosted).toBe(byKind.credits - byKind.debits);
      expect(s.amountDue).toBe(s.closingPosted < 0n ? -s.closingPosted : 0n);
      // Nothing happened since the last command: the wallet's posted balance is the closing one.
      expect(await posted(w)).toBe(s.closingPosted);
      expect(await journalPostedBefore(w, FEB)).toBe(s.closingPosted);
      // Debit lines come first, then by kind and group.
      expect(s.lines.map((l) => l.side)).toEqual([...s.lines.map((l) => l.side)].sort().reverse());

      const grouped = ok(await get(w, JAN, FEB, "model")).statement;
      expect(linesOf(grouped.lines)).toEqual(byModel.lines);
      expect([grouped.totalDebits, grouped.totalCredits, grouped.closingPosted]).toEqual([s.totalDebits, s.totalCredits, s.closingPosted]);

      // Closing the month stores the same figures, grouped as asked.
      const closed = ok(await close(w, FEB, "model")).statement;
      expect(closed.statementId).toMatch(/^[0-9a-f-]{36}$/);
      expect(closed.closedAt).toEqual(t.clock());
      expect({ ...closed, statementId: null, closedAt: null }).toEqual(grouped);
      expect(await checkInvariants(t.pool)).toEqual([]);
    }));
});

/** Runs one op of the month; records every journal row it makes that a statement counts. */
async function runOp(
  w: string,
  peer: string,
  op: Op,
  record: (side: "debit" | "credit", kind: string, model: string, amount: bigint) => void,
  refundable: { transferId: string; left: bigint; model: string }[],
) {
  const l = t.ledger;
  switch (op.kind) {
    case "spend": {
      const model = MODELS[op.model]!;
      const r = await l.spend(t.caller, { walletId: w, asset: "USD", amount: BigInt(op.amount), idempotencyKey: key(), metadata: { model } });
      if (!r.ok) return expect(r.reason).toBe("INSUFFICIENT_FUNDS");
      record("debit", "spend", model, r.transfer.amount);
      refundable.push({ transferId: r.transfer.transferId, left: r.transfer.amount, model });
      return;
    }
    case "reserve": {
      const model = MODELS[op.model]!;
      const ttlSeconds = op.then === "expire" ? 60 : 3600;
      const r = await l.reserve(t.caller, { walletId: w, asset: "USD", amount: BigInt(op.amount), holdId: "", ttlSeconds, idempotencyKey: key(), metadata: { model } });
      if (!r.ok) return expect(r.reason).toBe("INSUFFICIENT_FUNDS");
      if (op.then === "expire") return; // The next command expires it: an expire row, never a line.
      if (op.then === "release") return void ok(await l.release(t.caller, { holdId: r.hold.holdId, idempotencyKey: key() }));
      const c = await l.capture(t.caller, { holdId: r.hold.holdId, amount: BigInt(op.capture), idempotencyKey: key(), metadata: {} });
      if (!c.ok) {
        expect(c.reason).toBe("INSUFFICIENT_FUNDS");
        return void ok(await l.release(t.caller, { holdId: r.hold.holdId, idempotencyKey: key() }));
      }
      record("debit", "capture", model, c.transfer.amount);
      refundable.push({ transferId: c.transfer.transferId, left: c.transfer.amount, model });
      return;
    }
    case "deposit": {
      const r = ok(await l.deposit(t.caller, { walletId: w, asset: "USD", amount: BigInt(op.amount), idempotencyKey: key(), metadata: {} }));
      record("credit", "deposit", "", r.transfer.amount);
      return;
    }
    case "refund": {
      const open = refundable.filter((x) => x.left > 0n);
      if (open.length === 0) return;
      const target = open[op.pick % open.length]!;
      const amount = target.left > 1n ? target.left / 2n : 1n;
      const r = ok(await l.refund(t.caller, { transferId: target.transferId, amount, idempotencyKey: key(), metadata: { model: target.model } }));
      target.left -= r.transfer.amount;
      record("credit", "refund", target.model, r.transfer.amount);
      return;
    }
    case "transfer": {
      const [from, to] = op.out ? [w, peer] : [peer, w];
      const r = await l.transfer(t.caller, { fromWalletId: from, toWalletId: to, asset: "USD", amount: BigInt(op.amount), idempotencyKey: key(), metadata: {} });
      if (!r.ok) return expect(r.reason).toBe("INSUFFICIENT_FUNDS");
      record(op.out ? "debit" : "credit", "transfer", "", r.transfer.amount);
      return;
    }
  }
}

describe("closed periods", () => {
  it("chain: each statement opens where the previous one closed, and reads of closed periods agree", async () => {
    t.clock.set(JAN);
    const w = "chain_wallet";
    ok(await t.ledger.deposit(t.caller, { walletId: w, asset: "USD", amount: 1_000n, idempotencyKey: key(), metadata: {} }));
    ok(await t.ledger.updateWallet(t.caller, { walletId: w, status: null, creditLimits: [{ asset: "USD", creditLimit: 10_000n }], metadata: {} }));
    const spendAt = async (at: Date, amount: bigint) => {
      t.clock.set(at);
      ok(await t.ledger.spend(t.caller, { walletId: w, asset: "USD", amount, idempotencyKey: key(), metadata: {} }));
    };
    await spendAt(new Date(JAN.getTime() + 10 * DAY_MS), 300n);
    // A row dated exactly at a period's end belongs to the next period.
    await spendAt(FEB, 2_000n);
    await spendAt(new Date(FEB.getTime() + 3 * DAY_MS), 500n);
    await spendAt(MAR, 40n);

    t.clock.set(new Date(APR.getTime() + HOUR_MS));
    const jan = ok(await close(w, FEB)).statement;
    const feb = ok(await close(w, MAR)).statement;
    const mar = ok(await close(w, APR)).statement;
    expect([jan.periodStart, jan.periodEnd, feb.periodStart, feb.periodEnd, mar.periodStart, mar.periodEnd]).toEqual([JAN, FEB, FEB, MAR, MAR, APR]);
    expect([jan.openingPosted, jan.closingPosted, jan.amountDue]).toEqual([0n, 700n, 0n]);
    expect([feb.openingPosted, feb.closingPosted, feb.amountDue]).toEqual([700n, -1_800n, 1_800n]);
    expect([mar.openingPosted, mar.closingPosted, mar.amountDue]).toEqual([-1_800n, -1_840n, 1_840n]);
    expect(feb.lines).toEqual([{ kind: "spend", side: "debit", groupValue: "", count: 2n, amount: 2_500n }]);

    // A read of a closed period answers what was stored; a read across periods adds them up.
    for (const stored of [jan, feb, mar]) {
      const read = ok(await get(w, stored.periodStart, stored.periodEnd)).statement;
      expect({ ...stored, statementId: null, closedAt: null }).toEqual(read);
    }
    const quarter = ok(await get(w, JAN, APR)).statement;
    expect([quarter.openingPosted, quarter.closingPosted, quarter.totalDebits, quarter.totalCredits]).toEqual([0n, -1_840n, 2_840n, 1_000n]);
    // A period starting inside a closed one: its opening is summed from the journal itself.
    const mid = ok(await get(w, new Date(JAN.getTime() + 15 * DAY_MS), new Date(FEB.getTime() + 15 * DAY_MS))).statement;
    expect(mid.openingPosted).toBe(await journalPostedBefore(w, new Date(JAN.getTime() + 15 * DAY_MS)));
    expect(mid.closingPosted).toBe(await journalPostedBefore(w, new Date(FEB.getTime() + 15 * DAY_MS)));

    // ListStatements: newest period first, paged by the last statement id.
    const page1 = await t.ledger.listStatements(t.caller, { walletId: w, asset: "", pageSize: 2, pageToken: "" });
    expect(page1.items.map((s) => s.periodEnd)).toEqual([APR, MAR]);
    const page2 = await t.ledger.listStatements(t.caller, { walletId: w, asset: "USD", pageSize: 2, pageToken: page1.nextPageToken });
    expect(page2.items.map((s) => s.statementId)).toEqual([jan.statementId]);
    expect(page2.nextPageToken).toBe("");
    expect(await checkInvariants(t.pool)).toEqual([]);
  });

  it("a late capture lands in the next period; a command whose clock lags is dated at the closed end", async () => {
    t.clock.set(JAN);
    const w = "late_wallet";
    ok(await t.ledger.deposit(t.caller, { walletId: w, asset: "USD", amount: 1_000n, idempotencyKey: key(), metadata: {} }));
    t.clock.set(new Date(FEB.getTime() - HOUR_MS));
    const hold = ok(await t.ledger.reserve(t.caller, { walletId: w, asset: "USD", amount: 200n, holdId: "late_hold", ttlSeconds: 7 * 24 * 3600, idempotencyKey: key(), metadata: {} })).hold;
    t.clock.set(new Date(FEB.getTime() + HOUR_MS));
    const jan = ok(await close(w, FEB)).statement;
    expect([jan.closingPosted, jan.lines.length]).toEqual([1_000n, 1]);

    // The hold was reserved in January and is captured after January closed: February's.
    const captured = ok(await t.ledger.capture(t.caller, { holdId: hold.holdId, amount: 150n, idempotencyKey: key(), metadata: {} }));
    expect(captured.transfer.createdAt).toEqual(t.clock());

    // A replica whose clock still reads January: its rows are dated at the closed end.
    const lagging = createManualClock(new Date(FEB.getTime() - 2 * DAY_MS));
    const behind = createLedger({ pool: t.pool, clock: lagging, newId: uuidV7 });
    const spent = ok(await behind.spend(t.caller, { walletId: w, asset: "USD", amount: 25n, idempotencyKey: key(), metadata: {} }));
    expect(spent.transfer.createdAt).toEqual(FEB);
    // A transfer into the wallet from a wallet without statements is held to the same floor.
    ok(await behind.deposit(t.caller, { walletId: "late_peer", asset: "USD", amount: 10n, idempotencyKey: key(), metadata: {} }));
    const sent = ok(await behind.transfer(t.caller, { fromWalletId: "late_peer", toWalletId: w, asset: "USD", amount: 10n, idempotencyKey: key(), metadata: {} }));
    expect(sent.transfer.createdAt).toEqual(FEB);

    expect(ok(await get(w, JAN, FEB)).statement).toEqual({ ...jan, statementId: null, closedAt: null });
    const feb = ok(await get(w, FEB, MAR)).statement;
    expect(feb.openingPosted).toBe(jan.closingPosted);
    expect(feb.lines).toEqual([
      { kind: "capture", side: "debit", groupValue: "", count: 1n, amount: 150n },
      { kind: "spend", side: "debit", groupValue: "", count: 1n, amount: 25n },
      { kind: "transfer", side: "credit", groupValue: "", count: 1n, amount: 10n },
    ]);
    expect(feb.closingPosted).toBe(await posted(w));
    const { rows } = await t.pool.query("select 1 from transfers where tenant_id = $1 and $2 in (debit_wallet_id, credit_wallet_id) and created_at < $3 and kind not in ('deposit', 'reserve')", [
      t.caller.tenantId,
      w,
      FEB,
    ]);
    expect(rows).toEqual([]);
    expect(await checkInvariants(t.pool)).toEqual([]);
  });

  it("commands running while a statement closes: none is lost, none lands in the closed period after the close", () =>
    withSeed("concurrent close", async () => {
      t.clock.set(JAN);
      const w = "busy_wallet";
      ok(await t.ledger.deposit(t.caller, { walletId: w, asset: "USD", amount: 100_000n, idempotencyKey: key(), metadata: {} }));
      t.clock.set(new Date(FEB.getTime() + 1000));
      // Half the commands come through a replica whose clock is a second behind the close; both
      // batch a wallet's commands (group commit), as the service does.
      const clock = createManualClock(new Date(FEB.getTime() - 1000));
      const behind = createLedger({ pool: t.pool, clock, newId: uuidV7, groupCommit: { batchMax: 64, queueMax: 10_000 } });
      const amounts = fc.sample(fc.tuple(fc.integer({ min: 1, max: 50 }), fc.boolean(), fc.boolean()), { seed, numRuns: 200 });
      const command = async ([amount, lag, hold]: [number, boolean, boolean]) => {
        const ledger = lag ? behind : t.ledger;
        if (!hold) {
          return ok(await ledger.spend(t.caller, { walletId: w, asset: "USD", amount: BigInt(amount), idempotencyKey: key(), metadata: {} })).transfer.amount;
        }
        const r = ok(await ledger.reserve(t.caller, { walletId: w, asset: "USD", amount: BigInt(amount), holdId: "", ttlSeconds: 600, idempotencyKey: key(), metadata: {} }));
        return ok(await ledger.capture(t.caller, { holdId: r.hold.holdId, amount: null, idempotencyKey: key(), metadata: {} })).transfer.amount;
      };
      // The close is sent between two waves, so that it queues for the wallet's lock among them.
      const first = amounts.slice(0, 100).map(command);
      const closing = close(w, FEB);
      const second = amounts.slice(100).map(command);
      const spent = (await Promise.all([...first, ...second])).reduce((a, b) => a + b, 0n);
      const jan = ok(await closing).statement;

      // What the close stored is what the journal holds before FEB, now that every command is done.
      expect(jan.closingPosted).toBe(await journalPostedBefore(w, FEB));
      expect(ok(await get(w, JAN, FEB)).statement).toEqual({ ...jan, statementId: null, closedAt: null });
      const feb = ok(await get(w, FEB, MAR)).statement;
      expect(jan.totalDebits + feb.totalDebits).toBe(spent);
      expect(feb.closingPosted).toBe(100_000n - spent);
      expect(feb.closingPosted).toBe(await posted(w));
      // The wallet's events are numbered in commit order: every journal row committed after the
      // close (a higher sequence than holdfast.statement.closed) is dated at or after FEB.
      const { rows } = await t.pool.query<{ n: number; late: number }>(
        `with closed as (select seq from events where tenant_id = $1 and wallet_id = $2 and type = 'holdfast.statement.closed')
         select count(*)::int as n,
                count(*) filter (where (e.data->'transfer'->>'created_at')::timestamptz < $3)::int as late
           from events e, closed c
          where e.tenant_id = $1 and e.wallet_id = $2 and e.seq > c.seq and e.data ? 'transfer'`,
        [t.caller.tenantId, w, FEB],
      );
      expect(rows[0]!.late).toBe(0);
      expect(await checkInvariants(t.pool)).toEqual([]);
    }));

  it("expiry and breakage are counted when their journal rows are dated, never back-dated", async () => {
    t.clock.set(JAN);
    const w = "breakage_wallet";
    ok(await t.ledger.createGrant(t.caller, {
      walletId: w,
      asset: "USD",
      amount: 300n,
      grantId: "breakage_promo",
      category: "promotional",
      priority: 10,
      startsAt: null,
      expiresAt: new Date(FEB.getTime() - HOUR_MS),
      idempotencyKey: key(),
      metadata: { model: "promo" },
    }));
    ok(await t.ledger.spend(t.caller, { walletId: w, asset: "USD", amount: 100n, idempotencyKey: key(), metadata: {} }));
    // The grant expires an hour before FEB; nothing touches the wallet until the close, which
    // posts the breakage at its own time: in February.
    t.clock.set(new Date(FEB.getTime() + HOUR_MS));
    expect(await posted(w)).toBe(0n);
    const jan = ok(await close(w, FEB)).statement;
    expect([jan.openingPosted, jan.closingPosted]).toEqual([0n, 200n]);
    expect(await posted(w)).toBe(0n);
    const feb = ok(await get(w, FEB, MAR, "model")).statement;
    expect(feb.lines).toEqual([{ kind: "breakage", side: "debit", groupValue: "promo", count: 1n, amount: 200n }]);
    expect(feb.closingPosted).toBe(0n);
    expect(await checkInvariants(t.pool)).toEqual([]);
  });

  it("the amount due is repaid by a Deposit, which repays the credit line first", async () => {
    t.clock.set(JAN);
    const w = "due_wallet";
    ok(await t.ledger.createWallet(t.caller, w, {}));
    ok(await t.ledger.updateWallet(t.caller, { walletId: w, status: null, creditLimits: [{ asset: "USD", creditLimit: 1_000n }], metadata: {} }));
    t.clock.set(new Date(JAN.getTime() + DAY_MS));
    ok(await t.ledger.spend(t.caller, { walletId: w, asset: "USD", amount: 640n, idempotencyKey: key(), metadata: {} }));
    t.clock.set(new Date(FEB.getTime() + DAY_MS));
    const jan = ok(await close(w, FEB)).statement;
    expect([jan.closingPosted, jan.amountDue]).toEqual([-640n, 640n]);
    const paid = ok(await t.ledger.deposit(t.caller, { walletId: w, asset: "USD", amount: jan.amountDue, idempotencyKey: key(), metadata: { invoice: "2026-01" } }));
    expect(paid.balance).toMatchObject({ posted: 0n, available: 1_000n });
    // The deposit's breakdown shows the repaid credit line.
    expect(paid.transfer.grants).toEqual([{ grantId: "@credit", amount: 640n }]);
    t.clock.set(new Date(MAR.getTime() + DAY_MS));
    const feb = ok(await close(w, MAR)).statement;
    expect([feb.openingPosted, feb.closingPosted, feb.amountDue, feb.totalCredits]).toEqual([-640n, 0n, 0n, 640n]);
    expect(await checkInvariants(t.pool)).toEqual([]);
  });
});

describe("refusals", () => {
  it("refuses a period_end in the future, not after the period's start, an unknown wallet, and too many groups", async () => {
    t.clock.set(JAN);
    const w = "refused_wallet";
    ok(await t.ledger.deposit(t.caller, { walletId: w, asset: "USD", amount: 10_000n, idempotencyKey: key(), metadata: {} }));
    t.clock.set(new Date(JAN.getTime() + DAY_MS));
    const future = refusal(await close(w, new Date(JAN.getTime() + 2 * DAY_MS)));
    expect(future).toMatchObject({ reason: "INVALID_FIELD", message: "period_end: must not be in the future", metadata: { field: "period_end" } });
    const beforeCreation = refusal(await close(w, JAN));
    expect(beforeCreation.message).toBe("period_end: must be after the period's start, 2026-01-01T00:00:00.000Z (the wallet's creation)");
    ok(await close(w, new Date(JAN.getTime() + HOUR_MS)));
    const again = refusal(await close(w, new Date(JAN.getTime() + HOUR_MS)));
    expect(again.message).toBe("period_end: must be after the period's start, 2026-01-01T01:00:00.000Z (the end of the last closed period)");
    expect(refusal(await close("no_such_wallet", JAN)).reason).toBe("WALLET_NOT_FOUND");
    expect(refusal(await get("no_such_wallet", JAN, FEB)).reason).toBe("WALLET_NOT_FOUND");

    // The same key with the same request replays; with another request it is refused.
    const k = key();
    const first = ok(await close(w, new Date(JAN.getTime() + 2 * HOUR_MS), "", k));
    const replay = ok(await close(w, new Date(JAN.getTime() + 2 * HOUR_MS), "", k));
    expect([first.replayed, replay.replayed]).toEqual([false, true]);
    expect(replay.statement).toEqual(first.statement);
    expect(refusal(await close(w, new Date(JAN.getTime() + 3 * HOUR_MS), "", k)).reason).toBe("IDEMPOTENCY_KEY_REUSED");
    const { rows } = await t.pool.query("select count(*)::int as n from statements where tenant_id = $1 and wallet_id = $2", [t.caller.tenantId, w]);
    expect(rows[0]).toEqual({ n: 2 });

    // A group per request id would be a line per row: more than 500 lines are refused.
    for (let i = 0; i < 501; i++) {
      ok(await t.ledger.spend(t.caller, { walletId: w, asset: "USD", amount: 1n, idempotencyKey: key(), metadata: { request: `r${i}` } }));
    }
    const tooMany = refusal(await get(w, JAN, FEB, "request"));
    expect(tooMany).toMatchObject({ reason: "INVALID_FIELD", metadata: { field: "group_by" } });
    expect(tooMany.message).toMatch(/^group_by: has more than 500 distinct values/);
    expect(ok(await get(w, JAN, FEB)).statement.lines).toHaveLength(2);
    expect(await checkInvariants(t.pool)).toEqual([]);
  });
});

describe("invariant 8", () => {
  it("reports a closed statement the journal no longer agrees with (a row slipped into its period)", async () => {
    t.clock.set(JAN);
    const w = "slipped_wallet";
    ok(await t.ledger.deposit(t.caller, { walletId: w, asset: "USD", amount: 100n, idempotencyKey: key(), metadata: {} }));
    t.clock.set(new Date(FEB.getTime() + HOUR_MS));
    const jan = ok(await close(w, FEB)).statement;
    expect(await checkInvariants(t.pool)).toEqual([]);
    // Only with the journal's trigger off, in a transaction rolled back, can a row land in January.
    const client = await t.pool.connect();
    try {
      await client.query("begin");
      await client.query("alter table transfers disable trigger transfers_statement_floor");
      const args = { wallet_id: w, asset: "USD", amount: "7", transfer_id: uuidV7(), metadata: {} };
      await client.query("select ledger_command($1, 'Spend', $2, '\\x00', $3, $4)", [t.caller.tenantId, key(), new Date(FEB.getTime() - HOUR_MS), args]);
      expect(await checkInvariants(client)).toEqual([`8: a closed statement differs from its journal, its lines or the previous period: ${jan.statementId}`]);
      expect(await checkInvariants(client, { tenantId: t.caller.tenantId })).toHaveLength(1);
    } finally {
      await client.query("rollback");
      client.release();
    }
    expect(await checkInvariants(t.pool)).toEqual([]);
  });
});

describe("the runtime role", () => {
  it("runs every statement call, and may not write statements or call the close's inner step", async () => {
    const role = `holdfast_app_s_${randomBytes(6).toString("hex")}`;
    const password = randomBytes(16).toString("hex");
    await t.pool.query(`create role ${role} login password '${password}' in role holdfast_runtime`);
    const url = new URL(t.db.url);
    url.username = role;
    url.password = password;
    const runtime = new pg.Pool({ connectionString: url.toString(), max: 2 });
    try {
      t.clock.set(JAN);
      const ledger = createLedger({ pool: runtime, clock: t.clock, newId: uuidV7 });
      const w = "runtime_wallet";
      ok(await ledger.deposit(t.caller, { walletId: w, asset: "USD", amount: 30n, idempotencyKey: key(), metadata: {} }));
      t.clock.set(new Date(FEB.getTime() + HOUR_MS));
      const jan = ok(await ledger.closeStatement(t.caller, { walletId: w, asset: "USD", periodEnd: FEB, groupBy: "", idempotencyKey: key() })).statement;
      expect(jan.closingPosted).toBe(30n);
      expect(ok(await ledger.getStatement(t.caller, { walletId: w, asset: "USD", periodStart: JAN, periodEnd: FEB, groupBy: "" })).statement.closingPosted).toBe(30n);
      expect((await ledger.listStatements(t.caller, { walletId: w, asset: "", pageSize: 10, pageToken: "" })).items).toHaveLength(1);
      const code = (sql: string, values: unknown[] = []) =>
        runtime.query(sql, values).then(
          () => "ok",
          (err: { code?: string }) => err.code ?? "?",
        );
      expect(await code("update statements set amount_due = 0")).toBe("42501");
      expect(await code("delete from statements")).toBe("42501");
      expect(await code("select ledger_close_statement_apply($1, now(), '{}')", [t.caller.tenantId])).toBe("42501");
      expect(await code("alter table transfers disable trigger transfers_statement_floor")).toBe("42501");
    } finally {
      await runtime.end();
      await t.pool.query(`drop role ${role}`);
    }
    expect(await checkInvariants(t.pool)).toEqual([]);
  });
});
