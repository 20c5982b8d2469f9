// Goal: holds past their TTL are voided exactly once and their funds come back, even with two
// expiry workers running at once; a capture after expiry fails with HOLD_EXPIRED.
// Method: hundreds of short-TTL holds on a fresh database with a manual clock; the clock moves
// past every expiry; two workers run passes concurrently until nothing is due; then the holds,
// the journal, the events and the invariants are checked.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createHoldExpirer } from "@holdfast/hold-expiry/expirer";
import { checkInvariants } from "@holdfast/ledger/invariants";
import { createTestLedger, key, quietLogger } from "./support/ledger.js";

let t: Awaited<ReturnType<typeof createTestLedger>>;

beforeAll(async () => {
  t = await createTestLedger({ poolMax: 10 });
});
afterAll(async () => {
  await t.close();
});

const expirer = () =>
  createHoldExpirer({ pool: t.pool, clock: t.clock, logger: quietLogger, walletsPerPassMax: 7, idleMs: 10, retryDelayMsMax: 100 });

describe("hold-expiry worker", () => {
  it("two workers expire every due hold exactly once and return the funds", async () => {
    const wallets = Array.from({ length: 30 }, (_, i) => `exp_${i}`);
    const holdIds: string[] = [];
    await Promise.all(
      wallets.map(async (walletId) => {
        await t.ledger.deposit(t.caller, { walletId, asset: "USD", amount: 1_000n, idempotencyKey: key(), metadata: {} });
        for (let i = 0; i < 10; i++) {
          const r = await t.ledger.reserve(t.caller, {
            walletId,
            asset: "USD",
            amount: 10n,
            holdId: `${walletId}_h${i}`,
            ttlSeconds: 1 + (i % 5),
            idempotencyKey: key(),
            metadata: {},
          });
          expect(r.ok).toBe(true);
          holdIds.push(`${walletId}_h${i}`);
        }
      }),
    );
    // A hold that is not yet due stays pending.
    await t.ledger.reserve(t.caller, { walletId: "exp_0", asset: "USD", amount: 10n, holdId: "long", ttlSeconds: 3600, idempotencyKey: key(), metadata: {} });
    t.clock.advance(10_000);

    const a = expirer();
    const b = expirer();
    const results = { a: 0, b: 0 };
    for (;;) {
      const [ra, rb] = await Promise.all([a.pass(), b.pass()]);
      results.a += ra.expired;
      results.b += rb.expired;
      if (ra.expired === 0 && rb.expired === 0) break;
    }
    expect(results.a + results.b).toBe(holdIds.length);
    // Lag is measured from each hold's expiry to the pass that voided it.
    expect(a.totals().lagMsMax + b.totals().lagMsMax).toBeGreaterThan(0);

    const { rows } = await t.pool.query<{ status: string; n: number }>(
      "select status, count(*)::int as n from holds where hold_id <> 'long' group by status",
    );
    expect(rows).toEqual([{ status: "expired", n: holdIds.length }]);
    const events = await t.pool.query<{ n: number }>("select count(*)::int as n from events where type = 'holdfast.hold.expired'");
    expect(events.rows[0]?.n).toBe(holdIds.length);
    for (const walletId of wallets) {
      const balance = (await t.ledger.getWallet(t.caller, walletId))!.balances[0]!;
      expect(balance.held).toBe(walletId === "exp_0" ? 10n : 0n);
      expect(balance.posted).toBe(1_000n);
    }
    expect((await t.ledger.getHold(t.caller, "long"))?.status).toBe("pending");
    const capture = await t.ledger.capture(t.caller, { holdId: holdIds[0]!, amount: null, idempotencyKey: key(), metadata: {} });
    expect(capture.ok ? "captured" : capture.reason).toBe("HOLD_EXPIRED");
    expect(await checkInvariants(t.pool)).toEqual([]);
  });

  it("two workers break each expired grant exactly once: its unheld remainder goes to @breakage", async () => {
    const wallets = Array.from({ length: 20 }, (_, i) => `gexp_${i}`);
    const expiresAt = new Date(t.clock().getTime() + 5_000);
    const grant = (walletId: string, grantId: string, amount: bigint, expires: Date | null) =>
      t.ledger.createGrant(t.caller, {
        walletId,
        asset: "USD",
        amount,
        grantId,
        category: "promotional",
        priority: 10,
        startsAt: null,
        expiresAt: expires,
        idempotencyKey: key(),
        metadata: {},
      });
    await Promise.all(
      wallets.map(async (walletId) => {
        for (let i = 0; i < 3; i++) {
          expect((await grant(walletId, `${walletId}_g${i}`, 100n, expiresAt)).ok).toBe(true);
        }
        expect((await grant(walletId, `${walletId}_forever`, 100n, null)).ok).toBe(true);
        // A hold that outlives the grants draws 30 on the first one: the hold keeps it.
        const hold = { walletId, asset: "USD", amount: 30n, holdId: `${walletId}_h`, ttlSeconds: 3600, idempotencyKey: key(), metadata: {} };
        const r = await t.ledger.reserve(t.caller, hold);
        expect(r.ok && r.hold.allocations).toEqual([{ grantId: `${walletId}_g0`, amount: 30n }]);
      }),
    );
    t.clock.advance(10_000);

    const a = expirer();
    const b = expirer();
    let broken = 0;
    for (;;) {
      const [ra, rb] = await Promise.all([a.pass(), b.pass()]);
      broken += ra.grantsExpired + rb.grantsExpired;
      if (ra.grantsExpired + rb.grantsExpired + ra.expired + rb.expired === 0) break;
    }
    expect(broken).toBe(wallets.length * 3);
    expect(a.totals().grantsExpired + b.totals().grantsExpired).toBe(broken);

    const rows = await t.pool.query<{ grant_id: string; n: number; amount: string }>(
      `select grants->0->>'grant_id' as grant_id, count(*)::int as n, sum(amount)::text as amount
         from transfers where kind = 'breakage' and credit_wallet_id = '@breakage' group by 1`,
    );
    expect(rows.rows).toHaveLength(wallets.length * 3);
    for (const row of rows.rows) {
      expect(row.n).toBe(1);
      expect(row.amount).toBe(row.grant_id.endsWith("_g0") ? "70" : "100");
    }
    const events = await t.pool.query<{ n: number }>("select count(*)::int as n from events where type = 'holdfast.grant.expired'");
    expect(events.rows[0]?.n).toBe(wallets.length * 3);
    for (const walletId of wallets) {
      const balance = (await t.ledger.getWallet(t.caller, walletId))!.balances[0]!;
      expect(balance).toMatchObject({ posted: 130n, held: 30n, available: 100n, scheduled: 0n });
      const g0 = await t.ledger.getGrant(t.caller, `${walletId}_g0`);
      expect(g0).toMatchObject({ status: "expired", remaining: 0n, held: 30n, expired: 70n });
    }
    // Another round finds nothing: each remainder was posted once.
    expect((await Promise.all([a.pass(), b.pass()])).map((r) => r.grantsExpired)).toEqual([0, 0]);
    expect(await checkInvariants(t.pool)).toEqual([]);
  });

  it("runs as a loop and stops cleanly", async () => {
    await t.ledger.deposit(t.caller, { walletId: "loop_w", asset: "USD", amount: 100n, idempotencyKey: key(), metadata: {} });
    await t.ledger.reserve(t.caller, { walletId: "loop_w", asset: "USD", amount: 40n, holdId: "loop_h", ttlSeconds: 1, idempotencyKey: key(), metadata: {} });
    t.clock.advance(2_000);
    const worker = expirer();
    worker.start();
    const deadline = Date.now() + 10_000;
    while (worker.totals().expired < 1 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 20));
    }
    await worker.stop();
    expect(worker.totals().expired).toBe(1);
    const { rows } = await t.pool.query("select status from holds where hold_id = 'loop_h'");
    expect(rows[0].status).toBe("expired");
  });
});
