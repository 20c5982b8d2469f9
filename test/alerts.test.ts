// Goal: balance alerts are edge-triggered with recovery, in the transaction of the change that
// crosses: a reserve that takes the available balance below the threshold emits one
// holdfast.balance.low, the release that brings it back emits one holdfast.balance.recovered;
// nothing while the balance stays on one side or moves inside the hysteresis band; exactly one
// low event when 200 concurrent spends cross once (with and without group commit); recovery by
// hold expiry (the worker's pass, or the next command on the wallet), low by grant expiry, a
// credit limit raised by UpdateWallet, both wallets of a transfer; event ids derived from
// (alert generation, wallet, episode, kind); other tenants and alert-less tenants untouched; the
// runtime role reaches alerts only through the two entry points.
// Method: the ledger core on a fresh database with a manual clock; alerts are put with the one
// SQL call docs/alerts.md documents (ledger_put_balance_alert); the outbox is read back after
// each step, and checkInvariants runs at the end of each test.
import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createHoldExpirer } from "@holdfast/hold-expiry/expirer";
import type { Caller } from "@holdfast/ledger/domain";
import { checkInvariants } from "@holdfast/ledger/invariants";
import { createTestLedger, key, quietLogger } from "./support/ledger.js";

type TestLedger = Awaited<ReturnType<typeof createTestLedger>>;

let t: TestLedger;

beforeAll(async () => {
  t = await createTestLedger({ poolMax: 10 });
});
afterAll(async () => {
  await t?.close();
});

interface AlertEvent {
  event_id: string;
  seq: string;
  type: string;
  asset: string;
  wallet_id: string;
  occurred_at: Date;
  data: { episode: string; balance: { available: string }; alert: { alert_id: string; below: string }; metadata: Record<string, string> };
}

/** Puts an alert with the documented SQL call; returns its generation. */
async function putAlert(
  l: TestLedger,
  caller: Caller,
  alert: { alertId: string; walletId?: string; asset?: string; below: bigint; hysteresis?: bigint; metadata?: Record<string, string> },
): Promise<string> {
  const args = {
    alert_id: alert.alertId,
    wallet_id: alert.walletId ?? "",
    asset: alert.asset ?? "USD",
    below: String(alert.below),
    hysteresis: String(alert.hysteresis ?? 0n),
    metadata: alert.metadata ?? {},
  };
  const { rows } = await l.pool.query<{ r: { ok: boolean } }>("select ledger_put_balance_alert($1, now(), 100, $2) as r", [caller.tenantId, args]);
  expect(rows[0]!.r.ok).toBe(true);
  const g = await l.pool.query<{ generation: string }>("select generation from balance_alerts where tenant_id = $1 and alert_id = $2", [
    caller.tenantId,
    alert.alertId,
  ]);
  return g.rows[0]!.generation;
}

/** The alert events of a wallet, in sequence order. */
async function alertEvents(l: TestLedger, caller: Caller, walletId: string): Promise<AlertEvent[]> {
  const { rows } = await l.pool.query<AlertEvent>(
    `select e.event_id, e.seq::text as seq, e.type, e.asset, e.wallet_id, e.occurred_at, e.data from events e
      where e.tenant_id = $1 and e.wallet_id = $2 and e.type like 'holdfast.balance.%' order by e.seq`,
    [caller.tenantId, walletId],
  );
  return rows;
}

const kinds = (events: AlertEvent[]) => events.map((e) => `${e.type.replace("holdfast.balance.", "")}#${e.data.episode}@${e.data.balance.available}`);

async function expectedId(l: TestLedger, generation: string, walletId: string, episode: number, kind: string): Promise<string> {
  const { rows } = await l.pool.query<{ id: string }>("select ledger_alert_event_id($1, $2, $3, $4)::text as id", [generation, walletId, episode, kind]);
  return rows[0]!.id;
}

function ok<T extends { ok: boolean }>(outcome: T): T {
  expect(outcome, JSON.stringify(outcome, (_, v: unknown) => (typeof v === "bigint" ? String(v) : v))).toMatchObject({ ok: true });
  return outcome;
}

const deposit = (l: TestLedger, caller: Caller, walletId: string, amount: bigint, asset = "USD") =>
  l.ledger.deposit(caller, { walletId, asset, amount, idempotencyKey: key(), metadata: {} }).then(ok);
const spend = (l: TestLedger, caller: Caller, walletId: string, amount: bigint) =>
  l.ledger.spend(caller, { walletId, asset: "USD", amount, idempotencyKey: key(), metadata: {} }).then(ok);
const reserve = (l: TestLedger, caller: Caller, walletId: string, amount: bigint, holdId: string, ttlSeconds = 60) =>
  l.ledger.reserve(caller, { walletId, asset: "USD", amount, holdId, ttlSeconds, idempotencyKey: key(), metadata: {} }).then(ok);

async function expectInvariants(l: TestLedger): Promise<void> {
  expect(await checkInvariants(l.pool)).toEqual([]);
}

describe("balance alerts", () => {
  it("a reserve crossing below emits one low event and the release that restores it one recovered event", async () => {
    const generation = await putAlert(t, t.caller, { alertId: "rr", walletId: "rr_w", below: 500n, metadata: { notify: "ops" } });
    await deposit(t, t.caller, "rr_w", 1_000n);
    expect(await alertEvents(t, t.caller, "rr_w")).toEqual([]);

    await reserve(t, t.caller, "rr_w", 600n, "rr_h");
    let events = await alertEvents(t, t.caller, "rr_w");
    expect(kinds(events)).toEqual(["low#1@400"]);
    const low = events[0]!;
    expect(low).toMatchObject({ asset: "USD", event_id: await expectedId(t, generation, "rr_w", 1, "low") });
    expect(low.data.alert).toMatchObject({ alert_id: "rr", below: "500" });
    expect(low.data.metadata).toEqual({ notify: "ops" });
    // The low event follows the hold.created event of the same command, in the wallet's sequence.
    const { rows: before } = await t.pool.query<{ type: string }>(
      "select type from events where tenant_id = $1 and wallet_id = 'rr_w' and seq = $2 - 1",
      [t.caller.tenantId, low.seq],
    );
    expect(before[0]!.type).toBe("holdfast.hold.created");

    await t.ledger.release(t.caller, { holdId: "rr_h", idempotencyKey: key(), metadata: {} }).then(ok);
    events = await alertEvents(t, t.caller, "rr_w");
    expect(kinds(events)).toEqual(["low#1@400", "recovered#1@1000"]);
    expect(events[1]!.event_id).toBe(await expectedId(t, generation, "rr_w", 1, "recovered"));

    // The next crossing is a new episode with ids of its own.
    await spend(t, t.caller, "rr_w", 501n);
    events = await alertEvents(t, t.caller, "rr_w");
    expect(kinds(events)).toEqual(["low#1@400", "recovered#1@1000", "low#2@499"]);
    expect(events[2]!.event_id).toBe(await expectedId(t, generation, "rr_w", 2, "low"));
    await expectInvariants(t);
  });

  it("emits nothing while the balance stays on one side or moves inside the hysteresis band", async () => {
    await putAlert(t, t.caller, { alertId: "band", walletId: "band_w", below: 500n, hysteresis: 200n });
    await deposit(t, t.caller, "band_w", 1_000n);
    // Above the threshold: up and down, never below.
    await spend(t, t.caller, "band_w", 400n); // 600
    await deposit(t, t.caller, "band_w", 300n); // 900
    await spend(t, t.caller, "band_w", 400n); // 500: not below
    expect(await alertEvents(t, t.caller, "band_w")).toEqual([]);

    await spend(t, t.caller, "band_w", 100n); // 400: low
    // Inside the band, and below it again, while low: nothing.
    await deposit(t, t.caller, "band_w", 150n); // 550
    await spend(t, t.caller, "band_w", 100n); // 450
    await deposit(t, t.caller, "band_w", 249n); // 699
    await spend(t, t.caller, "band_w", 199n); // 500
    await spend(t, t.caller, "band_w", 499n); // 1
    await deposit(t, t.caller, "band_w", 698n); // 699
    expect(kinds(await alertEvents(t, t.caller, "band_w"))).toEqual(["low#1@400"]);

    await deposit(t, t.caller, "band_w", 1n); // 700 = below + hysteresis: recovered
    await deposit(t, t.caller, "band_w", 1n); // 701
    await spend(t, t.caller, "band_w", 100n); // 601: inside the band, not low
    expect(kinds(await alertEvents(t, t.caller, "band_w"))).toEqual(["low#1@400", "recovered#1@700"]);
    await expectInvariants(t);
  });

  it("a wallet without an alert, and a tenant without alerts, get no alert events and no state", async () => {
    const other = await t.newTenant();
    await putAlert(t, t.caller, { alertId: "iso", walletId: "iso_w", below: 500n });
    // The same wallet id in another tenant, and another wallet of the alert's tenant.
    await deposit(t, other, "iso_w", 1_000n);
    await spend(t, other, "iso_w", 900n);
    await deposit(t, t.caller, "iso_other", 1_000n);
    await spend(t, t.caller, "iso_other", 900n);
    expect(await alertEvents(t, other, "iso_w")).toEqual([]);
    expect(await alertEvents(t, t.caller, "iso_other")).toEqual([]);
    const { rows } = await t.pool.query("select 1 from balance_alert_states where tenant_id = $1", [other.tenantId]);
    expect(rows).toEqual([]);
    await expectInvariants(t);
  });

  it("a tenant-wide alert watches every wallet, both wallets of a transfer included", async () => {
    const tenant = await t.newTenant();
    await putAlert(t, tenant, { alertId: "all", below: 100n });
    await deposit(t, tenant, "tw_a", 150n);
    await deposit(t, tenant, "tw_b", 50n); // a new wallet that starts below: low at once
    expect(kinds(await alertEvents(t, tenant, "tw_b"))).toEqual(["low#1@50"]);

    await t.ledger
      .transfer(tenant, { fromWalletId: "tw_a", toWalletId: "tw_b", asset: "USD", amount: 60n, idempotencyKey: key(), metadata: {} })
      .then(ok);
    expect(kinds(await alertEvents(t, tenant, "tw_a"))).toEqual(["low#1@90"]);
    expect(kinds(await alertEvents(t, tenant, "tw_b"))).toEqual(["low#1@50", "recovered#1@110"]);

    // Another asset has no alert.
    await deposit(t, tenant, "tw_a", 5n, "EUR");
    expect((await alertEvents(t, tenant, "tw_a")).map((e) => e.asset)).toEqual(["USD"]);
    await expectInvariants(t);
  });

  it("raising a credit limit with UpdateWallet recovers, lowering it goes low (events without an asset)", async () => {
    await putAlert(t, t.caller, { alertId: "credit", walletId: "cl_w", below: 100n });
    await deposit(t, t.caller, "cl_w", 50n);
    await t.ledger.updateWallet(t.caller, { walletId: "cl_w", status: null, creditLimits: [{ asset: "USD", creditLimit: 100n }], metadata: {} }).then(ok);
    await t.ledger.updateWallet(t.caller, { walletId: "cl_w", status: null, creditLimits: [{ asset: "USD", creditLimit: 0n }], metadata: {} }).then(ok);
    expect(kinds(await alertEvents(t, t.caller, "cl_w"))).toEqual(["low#1@50", "recovered#1@150", "low#2@50"]);
    await expectInvariants(t);
  });

  it("changing an alert's threshold keeps its state; changing its asset, or deleting and re-creating it, starts anew", async () => {
    const first = await putAlert(t, t.caller, { alertId: "edit", walletId: "ed_w", below: 500n });
    await deposit(t, t.caller, "ed_w", 400n); // low #1
    // A lower threshold: the wallet stays low until a change finds it at or above 300.
    expect(await putAlert(t, t.caller, { alertId: "edit", walletId: "ed_w", below: 300n })).toBe(first);
    await spend(t, t.caller, "ed_w", 50n); // 350: recovered #1
    expect(kinds(await alertEvents(t, t.caller, "ed_w"))).toEqual(["low#1@400", "recovered#1@350"]);

    await spend(t, t.caller, "ed_w", 100n); // 250: low #2
    const { rows } = await t.pool.query<{ a: unknown }>("select ledger_delete_balance_alert($1, 'edit') as a", [t.caller.tenantId]);
    expect(rows[0]!.a).toMatchObject({ alert_id: "edit" });
    const states = await t.pool.query("select 1 from balance_alert_states where generation = $1", [first]);
    expect(states.rows).toEqual([]);

    const second = await putAlert(t, t.caller, { alertId: "edit", walletId: "ed_w", below: 300n });
    expect(second).not.toBe(first);
    await spend(t, t.caller, "ed_w", 1n); // 249: low #1 of the new generation, with a new id
    const events = await alertEvents(t, t.caller, "ed_w");
    expect(kinds(events)).toEqual(["low#1@400", "recovered#1@350", "low#2@250", "low#1@249"]);
    expect(events[3]!.event_id).toBe(await expectedId(t, second, "ed_w", 1, "low"));
    expect(events[3]!.event_id).not.toBe(events[0]!.event_id);

    const third = await putAlert(t, t.caller, { alertId: "edit", walletId: "ed_w", asset: "EUR", below: 300n });
    expect(third).not.toBe(second);
    await deposit(t, t.caller, "ed_w", 10n, "EUR");
    expect(kinds(await alertEvents(t, t.caller, "ed_w")).slice(4)).toEqual(["low#1@10"]);
    await expectInvariants(t);
  });
});

describe("privileges", () => {
  it("the runtime role may put and delete alerts through the entry points, never check, emit or write states itself", async () => {
    const { rows } = await t.pool.query<{ name: string; may: boolean }>(
      `select p.proname as name, has_function_privilege('holdfast_runtime', p.oid, 'execute') as may
         from pg_proc p where p.proname in ('ledger_put_balance_alert', 'ledger_delete_balance_alert',
                                            'ledger_alert_check', 'ledger_alert_emit') order by 1`,
    );
    expect(rows).toEqual([
      { name: "ledger_alert_check", may: false },
      { name: "ledger_alert_emit", may: false },
      { name: "ledger_delete_balance_alert", may: true },
      { name: "ledger_put_balance_alert", may: true },
    ]);
    const { rows: tables } = await t.pool.query<{ t: string; w: boolean }>(
      `select t, has_table_privilege('holdfast_runtime', t, 'insert') or has_table_privilege('holdfast_runtime', t, 'update')
              or has_table_privilege('holdfast_runtime', t, 'delete') as w
         from unnest(array['balance_alerts', 'balance_alert_states']) t order by 1`,
    );
    expect(tables).toEqual([
      { t: "balance_alert_states", w: false },
      { t: "balance_alerts", w: false },
    ]);
  });
});

describe("expiry", () => {
  const expirer = () => createHoldExpirer({ pool: t.pool, clock: t.clock, logger: quietLogger, walletsPerPassMax: 50, idleMs: 10, retryDelayMsMax: 100 });

  it("a hold expired by the worker's pass, or by the wallet's next command, emits recovered", async () => {
    await putAlert(t, t.caller, { alertId: "exp", walletId: "exp_w", below: 500n });
    await deposit(t, t.caller, "exp_w", 1_000n);
    await reserve(t, t.caller, "exp_w", 800n, "exp_h", 10);
    expect(kinds(await alertEvents(t, t.caller, "exp_w"))).toEqual(["low#1@200"]);
    t.clock.advance(11_000);
    // The hold no longer counts once it is past its expiry, but the crossing is seen when the
    // ledger writes the expiry: until then there is no event.
    expect(kinds(await alertEvents(t, t.caller, "exp_w"))).toEqual(["low#1@200"]);

    const worker = expirer();
    let expired = 0;
    for (let pass = await worker.pass(); pass.expired > 0; pass = await worker.pass()) expired += pass.expired;
    expect(expired).toBeGreaterThanOrEqual(1);
    const events = await alertEvents(t, t.caller, "exp_w");
    expect(kinds(events)).toEqual(["low#1@200", "recovered#1@1000"]);
    expect(events[1]!.occurred_at.getTime()).toBe(t.clock().getTime());

    // Holds that expire by the wallet's next command: the recovery comes first, in the
    // command's transaction (when the first due hold is written, the other no longer counts
    // either), then the command's own crossing.
    await putAlert(t, t.caller, { alertId: "exp_lazy", walletId: "exp_lazy_w", below: 500n });
    await deposit(t, t.caller, "exp_lazy_w", 1_000n);
    await reserve(t, t.caller, "exp_lazy_w", 100n, "exp_lazy_h1", 10);
    await reserve(t, t.caller, "exp_lazy_w", 850n, "exp_lazy_h2", 10);
    t.clock.advance(11_000);
    await spend(t, t.caller, "exp_lazy_w", 600n);
    expect(kinds(await alertEvents(t, t.caller, "exp_lazy_w"))).toEqual(["low#1@50", "recovered#1@1000", "low#2@400"]);
    await expectInvariants(t);
  });

  it("a grant that expires takes the balance below the threshold: low when the expiry is written", async () => {
    await putAlert(t, t.caller, { alertId: "grant", walletId: "gr_w", below: 500n });
    await deposit(t, t.caller, "gr_w", 100n); // low #1 at 100
    const expiresAt = new Date(t.clock().getTime() + 60_000);
    await t.ledger
      .createGrant(t.caller, {
        walletId: "gr_w",
        asset: "USD",
        amount: 1_000n,
        grantId: "gr_promo",
        category: "promo",
        priority: 10,
        startsAt: null,
        expiresAt,
        idempotencyKey: key(),
        metadata: {},
      })
      .then(ok);
    expect(kinds(await alertEvents(t, t.caller, "gr_w"))).toEqual(["low#1@100", "recovered#1@1100"]);
    t.clock.advance(61_000);
    const worker = expirer();
    let broken = 0;
    for (let pass = await worker.pass(); pass.grantsExpired > 0; pass = await worker.pass()) broken += pass.grantsExpired;
    expect(broken).toBe(1);
    expect(kinds(await alertEvents(t, t.caller, "gr_w"))).toEqual(["low#1@100", "recovered#1@1100", "low#2@100"]);
    await expectInvariants(t);
  });
});

describe.each([false, true])("200 concurrent spends (group commit %s)", (groupCommit) => {
  let l: TestLedger;
  beforeAll(async () => {
    l = await createTestLedger({ poolMax: 10, groupCommit });
  });
  afterAll(async () => {
    await l?.close();
  });

  it("crossing the threshold once emit exactly one low event per wallet", async () => {
    const wallets = ["hot_0", "hot_1", "hot_2", "hot_3"];
    await putAlert(l, l.caller, { alertId: `all_${randomUUID()}`, below: 5_000n });
    for (const walletId of wallets) await deposit(l, l.caller, walletId, 10_000n);
    // 50 spends of 130 per wallet: 10 000 → 3 500, crossing 5 000 once, in whatever order.
    const spends = Array.from({ length: 200 }, (_, i) => wallets[i % wallets.length]!);
    const outcomes = await Promise.all(spends.map((walletId) => l.ledger.spend(l.caller, { walletId, asset: "USD", amount: 130n, idempotencyKey: key(), metadata: {} })));
    expect(outcomes.filter((o) => !o.ok)).toEqual([]);
    for (const walletId of wallets) {
      const events = await alertEvents(l, l.caller, walletId);
      expect(events.map((e) => `${e.type}#${e.data.episode}`)).toEqual(["holdfast.balance.low#1"]);
      // The crossing is seen by the spend that crossed: 5 000 > available >= 4 870.
      expect(BigInt(events[0]!.data.balance.available)).toBeLessThan(5_000n);
      expect(BigInt(events[0]!.data.balance.available)).toBeGreaterThanOrEqual(4_870n);
    }
    await expectInvariants(l);
  });
});
