// Goal: a group-commit batch whose Spends, Reserves and Captures of one wallet account run as one set
// (ledger_debit_run, migration 0025) answers and writes exactly what running its commands one
// at a time does, in the order the set gives them: the set's commands at the position of the
// first, then the rest of the batch in order. Where the set's conditions do not hold (here: a
// balance alert watches the account), the batch runs one command at a time in batch order.
// Method: two tenants with the same wallet and the same history. Tenant A runs a batch through
// ledger_command_batch; tenant B runs the same commands (the same keys, transfer ids, hold ids
// and times) one at a time through ledger_command, in the expected order. Answers, the
// wallet's events, its journal rows, its holds, its account, and the recorded idempotency
// answers must be equal between the tenants once the two tenants' default grant ids are named
// alike. The batch mixes commands that join the set (Spends, a Reserve, a Capture) with an
// ExtendHold between them, replayed keys, a Reserve whose hold a later command of the batch names,
// a Capture beyond its hold, a Spend the default grant cannot cover (which ends the set),
// commands after it, a Spend naming categories and a Reserve of a hold id already taken. The ledger invariants and every
// tenant's hash chain verify after each.
import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { verifyLedger } from "@holdfast/cli/verify";
import { createTestDatabase, type TestDatabase } from "./support/db.js";

type Json = Record<string, unknown>;

interface Command {
  command: string;
  key: string;
  fingerprint: string;
  now: string;
  args: Json;
}

let db: TestDatabase;
const START = Date.parse("2026-12-01T10:00:00Z");

beforeAll(async () => {
  db = await createTestDatabase();
});
afterAll(async () => {
  await db?.drop();
});

async function newTenant(name: string): Promise<string> {
  const id = randomUUID();
  await db.pool.query("insert into tenants (id, name) values ($1, $2)", [id, name]);
  return id;
}

async function runOne(tenant: string, c: Command): Promise<Json> {
  const { rows } = await db.pool.query<{ r: Json }>("select ledger_command($1, $2, $3, decode($4, 'hex'), $5, $6) as r", [
    tenant, c.command, c.key, c.fingerprint, c.now, c.args,
  ]);
  return rows[0]!.r;
}

async function runBatch(tenant: string, commands: Command[]): Promise<Json[]> {
  const payload = commands.map((c) => ({ tenant_id: tenant, ...c }));
  const { rows } = await db.pool.query<{ r: Json[] }>("select ledger_command_batch($1) as r", [JSON.stringify(payload)]);
  return rows[0]!.r;
}

/** The tenant's default grant ids replaced by one name, so two tenants' rows compare equal. */
async function normalizer(tenant: string): Promise<(value: unknown) => unknown> {
  const { rows } = await db.pool.query<{ grant_id: string }>("select grant_id from grants where tenant_id = $1 and is_default", [tenant]);
  const ids = rows.map((r) => r.grant_id);
  return (value) => JSON.parse(ids.reduce((text, id) => text.split(id).join("DEFAULT_GRANT"), JSON.stringify(value)));
}

/** What the wallet's tenant holds after the commands, comparable between tenants. */
async function state(tenant: string, wallet: string) {
  const normalize = await normalizer(tenant);
  const q = async (sql: string, values: unknown[] = [tenant, wallet]) => normalize((await db.pool.query(sql, values)).rows);
  return {
    events: await q(
      "select seq, type, asset, occurred_at, data, key_id from events where tenant_id = $1 and wallet_id = $2 order by seq",
    ),
    transfers: await q(
      `select transfer_id, kind, debit_wallet_id, credit_wallet_id, asset, amount, hold_id, metadata, created_at,
              grants, key_id from transfers where tenant_id = $1 and (debit_wallet_id = $2 or credit_wallet_id = $2)
        order by created_at, transfer_id`,
    ),
    accounts: await q(
      `select wallet_id, asset, credits_posted, debits_posted, debits_pending, credit_limit, version, credit_used,
              credit_held, carry_nano, grants_other, grants_lazy from accounts where tenant_id = $1 and wallet_id = $2`,
    ),
    wallet: await q("select status, event_seq, updated_at from wallets where tenant_id = $1 and wallet_id = $2"),
    holds: await q("select to_jsonb(h) - 'tenant_id' as hold from holds h where tenant_id = $1 and wallet_id = $2 order by hold_id"),
    keys: await q(
      "select idempotency_key, command, fingerprint, created_at, response from idempotency_keys where tenant_id = $1 order by idempotency_key",
      [tenant],
    ),
  };
}

/** Every tenant's hash chain and the ledger invariants, as `holdfast verify` checks them. */
async function expectVerified(): Promise<void> {
  const report = await verifyLedger(db.pool);
  expect(report.invariantViolations).toEqual([]);
  expect(report.tenants.flatMap((t) => t.problems)).toEqual([]);
  expect(report.ok).toBe(true);
}

function command(i: number, name: string, key: string, args: Json, fingerprint = "0a"): Command {
  return { command: name, key, fingerprint, now: new Date(START + i).toISOString(), args: { transfer_id: randomUUID(), ...args } };
}

const spend = (i: number, key: string, amount: number, extra: Json = {}) =>
  command(i, "Spend", key, { wallet_id: "w", asset: "USD", amount: String(amount), metadata: {}, ...extra });
const reserve = (i: number, key: string, amount: number, holdId: string, extra: Json = {}) =>
  command(i, "Reserve", key, { wallet_id: "w", asset: "USD", amount: String(amount), hold_id: holdId, ttl_seconds: 3600, metadata: {}, ...extra });

describe("a batch's debits as one set", () => {
  it("answers and writes what the commands do one at a time, the set first", async () => {
    const a = await newTenant("set");
    const b = await newTenant("one_at_a_time");
    const history = [
      command(0, "Deposit", "dep", { wallet_id: "w", asset: "USD", amount: "200", metadata: {} }),
      reserve(1, "earlier_hold", 20, "h0", { metadata: { job: "j-0" } }),
      reserve(2, "earlier_hold_8", 10, "h8"),
      reserve(3, "earlier_hold_9", 10, "h9"),
      spend(4, "earlier", 4),
    ];
    for (const tenant of [a, b]) {
      for (const c of history) expect((await runOne(tenant, c))["ok"]).toBe(true);
    }

    // 156 available: the set takes 0, 2, 3 and 5, and 9 asks for more than is left.
    const batch = [
      /* 0 */ spend(10, "s1", 10),
      /* 1 */ command(11, "ExtendHold", "x8", { hold_id: "h8", ttl_seconds: 7200 }), // not a set command: alone
      /* 2 */ command(12, "Capture", "c0", { hold_id: "h0", amount: "15", metadata: { step: "2" } }),
      /* 3 */ reserve(13, "r1", 30, "h1", { metadata: { job: "j-1" } }),
      /* 4 */ spend(14, "s1", 10), // the key of 0: a replay
      /* 5 */ spend(15, "s3", 15, { key_id: "key_x", metadata: { order: "o-5" } }),
      /* 6 */ reserve(16, "r7", 2, "h7"), // its hold is named again below (13): alone
      /* 7 */ command(17, "Capture", "c9", { hold_id: "h9", amount: "50", metadata: {} }), // beyond its hold: alone
      /* 8 */ spend(18, "earlier", 4), // recorded before the batch: a replay
      /* 9 */ spend(19, "s4", 1_000), // more than the default grant holds: ends the set, refused
      /* 10 */ spend(20, "s5", 3), // after the set's end: alone
      /* 11 */ spend(21, "s6", 2, { categories: ["compute"] }), // names categories: alone, refused
      /* 12 */ reserve(22, "r2", 5, "h2"), // after the set's end: alone
      /* 13 */ command(23, "Capture", "c7", { hold_id: "h7", amount: "2", metadata: {} }),
      /* 14 */ reserve(24, "r3", 1, "h8"), // a hold id already taken: alone, refused
    ];
    const order = [0, 2, 3, 5, 1, 4, 6, 7, 8, 9, 10, 11, 12, 13, 14];

    const fromBatch = await runBatch(a, batch);
    const oneAtATime: Json[] = [];
    for (const i of order) oneAtATime[i] = await runOne(b, batch[i]!);

    const [na, nb] = [await normalizer(a), await normalizer(b)];
    expect(fromBatch).toHaveLength(batch.length);
    expect(na(fromBatch)).toEqual(nb(oneAtATime));
    expect(fromBatch.map((r) => r["ok"])).toEqual([
      true, true, true, true, true, true, true, true, true, false, true, false, true, true, false,
    ]);
    expect(fromBatch[4]!["replayed"]).toBe(true);
    expect(fromBatch[8]!["replayed"]).toBe(true);
    expect(fromBatch[9]!["reason"]).toBe("INSUFFICIENT_FUNDS");
    expect(fromBatch[14]!["reason"]).toBe("HOLD_ALREADY_EXISTS");
    expect(await state(a, "w")).toEqual(await state(b, "w"));
    // The set ran before the ExtendHold between its commands: its events come first.
    const types = (await db.pool.query<{ type: string }>(
      "select type from events where tenant_id = $1 and wallet_id = 'w' order by seq", [a])).rows.map((e) => e.type);
    expect(types.slice(5, 9)).toEqual([
      "holdfast.spend.completed", "holdfast.hold.captured", "holdfast.hold.created", "holdfast.spend.completed",
    ]);
    await expectVerified();
  });

  it("runs the batch in order when a balance alert watches the account", async () => {
    const a = await newTenant("alert_set");
    const b = await newTenant("alert_one_at_a_time");
    const funding = command(0, "Deposit", "dep", { wallet_id: "w", asset: "USD", amount: "100", metadata: {} });
    for (const tenant of [a, b]) {
      expect((await runOne(tenant, funding))["ok"]).toBe(true);
      const { rows } = await db.pool.query<{ r: Json }>("select ledger_put_balance_alert($1, $2, 10, $3) as r", [
        tenant, new Date(START).toISOString(), { alert_id: "low", wallet_id: "w", asset: "USD", below: "60" },
      ]);
      expect(rows[0]!.r["ok"]).toBe(true);
    }
    const batch = [
      spend(10, "s1", 30),
      reserve(11, "r1", 20, "h1"),
      spend(12, "s2", 20),
      spend(13, "s3", 5),
    ];
    const fromBatch = await runBatch(a, batch);
    const oneAtATime: Json[] = [];
    for (const c of batch) oneAtATime.push(await runOne(b, c));

    const [na, nb] = [await normalizer(a), await normalizer(b)];
    expect(na(fromBatch)).toEqual(nb(oneAtATime));
    expect(await state(a, "w")).toEqual(await state(b, "w"));
    // The alert fired between the Spends, where the balance crossed 60: after s1 and r1 (50).
    const types = (await db.pool.query<{ type: string }>(
      "select type from events where tenant_id = $1 and wallet_id = 'w' order by seq", [a])).rows.map((e) => e.type);
    expect(types).toEqual([
      "holdfast.deposit.completed", "holdfast.spend.completed", "holdfast.hold.created", "holdfast.balance.low",
      "holdfast.spend.completed", "holdfast.spend.completed",
    ]);
    await expectVerified();
  });
});
