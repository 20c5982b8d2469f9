// Goal: the fast path of a wallet with only its default grant (migration 0017) answers exactly
// what the grants machinery answers, and the count it relies on, accounts.grants_other, is
// right after every grant transition: a grant created (started, scheduled, or used up at once
// repaying an overdraft), drawn to exhaustion, refilled by a refund, expired with and without
// holds on it, its breakage posted by a command or by the grant-expiry pass, and voided (the
// default grant too); and that such a wallet keeps its default grant's amounts in the
// account's columns (migration 0019) until a command that can add a live grant writes them
// back into the row, and again from its next debit.
// Method: `ledger_command` called directly through pg with a hand-moved clock, on a fresh
// database cloned from the migrated template. After every step, for every account: the count
// against the grants table, and the balance a command answers and the balance a read answers
// (ledger_balance_at, ledger_balance_read) and every grant as GetGrant answers it, against
// the same functions made to take the slow path (the account row with grants_other forced
// above 0, and the default grant's amounts written into its row where the account kept them,
// migration 0019); then the invariant check.
import { createHash, randomUUID } from "node:crypto";
import type pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { uuidV7 } from "@holdfast/common/ids";
import { checkInvariants } from "@holdfast/ledger/invariants";
import { createTestDatabase, type TestDatabase } from "./support/db.js";

type Json = Record<string, any>;

const CLOCK_START_MS = Date.parse("2026-01-01T00:00:00Z");
const SECOND_MS = 1000;

let db: TestDatabase;
let tenant: string;
let nowMs = CLOCK_START_MS;

const now = () => new Date(nowMs);
const at = (seconds: number) => new Date(CLOCK_START_MS + seconds * SECOND_MS).toISOString();
const setClock = (seconds: number) => {
  nowMs = CLOCK_START_MS + seconds * SECOND_MS;
};

beforeAll(async () => {
  db = await createTestDatabase();
  tenant = randomUUID();
  await db.pool.query("insert into tenants (id, name) values ($1, $2)", [tenant, `tenant-${tenant}`]);
});
afterAll(async () => {
  await db.drop();
});

/** One wallet command, as the service sends it: one round trip, a fresh transfer id. */
async function ok(name: string, args: Json): Promise<Json> {
  const fingerprint = createHash("sha256").update(JSON.stringify([name, args])).digest();
  const result = await db.pool.query<{ r: Json }>(
    "select ledger_command($1, $2, $3, $4, $5, $6) as r",
    [tenant, name, randomUUID(), fingerprint, now(), { ...args, transfer_id: uuidV7() }],
  );
  const r = result.rows[0]!.r;
  if (r["ok"] !== true) {
    throw new Error(`${name} refused: ${JSON.stringify(r)}`);
  }
  return r;
}

const deposit = (walletId: string, amount: number) => ok("Deposit", { wallet_id: walletId, asset: "USD", amount: String(amount) });
const spend = (walletId: string, amount: number) => ok("Spend", { wallet_id: walletId, asset: "USD", amount: String(amount) });
const reserve = (walletId: string, holdId: string, amount: number, ttlSeconds: number) =>
  ok("Reserve", { wallet_id: walletId, asset: "USD", amount: String(amount), hold_id: holdId, ttl_seconds: ttlSeconds });
const capture = (holdId: string, amount: number) => ok("Capture", { hold_id: holdId, amount: String(amount) });
const createGrant = (walletId: string, grantId: string, amount: number, o: { startsAt?: string; expiresAt?: string } = {}) =>
  ok("CreateGrant", {
    wallet_id: walletId,
    asset: "USD",
    amount: String(amount),
    grant_id: grantId,
    category: "promotional",
    priority: 10,
    starts_at: o.startsAt ?? null,
    expires_at: o.expiresAt ?? null,
    metadata: {},
  });

/** The account's grants_other. */
async function grantsOther(walletId: string): Promise<number> {
  const r = await db.pool.query<{ n: number }>(
    "select grants_other as n from accounts where tenant_id = $1 and wallet_id = $2 and asset = 'USD'",
    [tenant, walletId],
  );
  return r.rows[0]!.n;
}

/**
 * Every account's count against the grants table, and both balances of every account on the
 * fast path (when it applies) against the slow path, at the current clock and a minute later
 * (when scheduled grants have started, grants expired and holds lapsed).
 */
async function expectFastPathExact(): Promise<void> {
  const counts = await db.pool.query<{ wallet_id: string; grants_other: number; live_other: number }>(
    `select a.wallet_id, a.grants_other,
            (select count(*)::integer from grants g
              where g.tenant_id = a.tenant_id and g.wallet_id = a.wallet_id and g.asset = a.asset
                and g.live and not (g.is_default and g.voided_at is null)) as live_other
       from accounts a where a.tenant_id = $1 order by a.wallet_id`,
    [tenant],
  );
  expect(counts.rows.length).toBeGreaterThan(0);
  for (const row of counts.rows) {
    expect({ wallet: row.wallet_id, count: row.grants_other }).toEqual({ wallet: row.wallet_id, count: row.live_other });
  }
  // The fast path answers from the account's columns, and a lazy account's default grant keeps
  // its amounts there too (migration 0019): the slow path is taken in a transaction that first
  // writes every lazy default grant's amounts into its row, and is rolled back.
  const client = await db.pool.connect();
  try {
    await client.query("begin");
    const fast = await balancesAndGrants(client);
    await client.query(
      "select ledger_grants_materialise(tenant_id, wallet_id, asset) from accounts where tenant_id = $1 and grants_lazy",
      [tenant],
    );
    const slow = await balancesAndGrants(client, '{"grants_other": 1}');
    expect(fast).toEqual(slow);
  } finally {
    await client.query("rollback");
    client.release();
  }
  expect(await checkInvariants(db.pool)).toEqual([]);
}

/**
 * Every account's balances (a command's and a read's, at the current clock and a minute later,
 * when scheduled grants have started, grants expired and holds lapsed) and every grant as
 * GetGrant answers it; with `force`, the account row as the slow path sees it.
 */
async function balancesAndGrants(client: pg.PoolClient, force = "{}"): Promise<Json[]> {
  const out: Json[] = [];
  for (const when of [now(), new Date(nowMs + 60 * SECOND_MS)]) {
    const balances = await client.query<{ wallet_id: string; at: Json; read: Json }>(
      `select a.wallet_id,
              ledger_balance_at(jsonb_populate_record(a, $3::jsonb), $2) as at,
              ledger_balance_read(jsonb_populate_record(a, $3::jsonb), $2) as read
         from accounts a where a.tenant_id = $1 order by a.wallet_id`,
      [tenant, when, force],
    );
    out.push(...balances.rows);
    const grants = await client.query<{ grant_id: string; g: Json }>(
      "select grant_id, ledger_get_grant($1, grant_id, null, $2) as g from grants where tenant_id = $1 order by grant_id",
      [tenant, when],
    );
    out.push(...grants.rows);
  }
  return out;
}

describe("accounts.grants_other and the default-grant fast path", () => {
  it("stays 0 on a wallet that only sees deposits, spends, holds and lapsed holds", async () => {
    setClock(0);
    await deposit("plain", 100);
    await spend("plain", 30);
    await reserve("plain", "plain-h1", 20, 60);
    await capture("plain-h1", 15);
    await reserve("plain", "plain-h2", 10, 5);
    setClock(10);
    // The read sees plain-h2 lapsed before any command voided it.
    await expectFastPathExact();
    expect(await grantsOther("plain")).toBe(0);
    await spend("plain", 1);
    expect(await grantsOther("plain")).toBe(0);
    // Its default grant's row is no longer written: the account keeps the amounts (0019).
    const lazy = await db.pool.query("select grants_lazy from accounts where tenant_id = $1 and wallet_id = 'plain'", [tenant]);
    expect(lazy.rows[0].grants_lazy).toBe(true);
    await expectFastPathExact();
  });

  it("counts a grant from its creation until it is exhausted, and again when a refund refills it", async () => {
    setClock(100);
    await deposit("promo", 50);
    await createGrant("promo", "promo-g1", 40);
    expect(await grantsOther("promo")).toBe(1);
    await expectFastPathExact();
    // Priority 10 is consumed before the default grant (priority 100): this exhausts it.
    const s = await spend("promo", 40);
    expect(s["transfer"]["grants"]).toEqual([{ grant_id: "promo-g1", amount: "40" }]);
    expect(await grantsOther("promo")).toBe(0);
    await expectFastPathExact();
    await ok("Refund", { refund_transfer_id: s["transfer"]["transfer_id"], amount: "15" });
    expect(await grantsOther("promo")).toBe(1);
    await expectFastPathExact();
  });

  it("counts a held grant until the capture consumes what it held, and a scheduled grant until it is spent", async () => {
    setClock(200);
    await deposit("held", 10);
    await createGrant("held", "held-g1", 30);
    await reserve("held", "held-h1", 30, 60);
    // Nothing remains in held-g1, but the hold draws on it: still live.
    expect(await grantsOther("held")).toBe(1);
    await capture("held-h1", 30);
    expect(await grantsOther("held")).toBe(0);
    await expectFastPathExact();
    const scheduled = await createGrant("held", "held-later", 25, { startsAt: at(230) });
    // The answer's balance is read after the grant counted: not the default grant's formula.
    expect(scheduled["balance"]["scheduled"]).toBe("25");
    expect(await grantsOther("held")).toBe(1);
    // Scheduled: in posted and scheduled, not in available, on both paths.
    await expectFastPathExact();
    setClock(240);
    await spend("held", 25);
    expect(await grantsOther("held")).toBe(0);
    await expectFastPathExact();
  });

  it("does not count a grant that repays an overdraft in full", async () => {
    setClock(300);
    await deposit("owing", 1);
    const updated = await db.pool.query<{ r: Json }>("select ledger_update_wallet($1, $2, $3) as r", [
      tenant,
      now(),
      { wallet_id: "owing", credit_limits: [{ asset: "USD", credit_limit: "100" }], metadata: {} },
    ]);
    expect(updated.rows[0]!.r["ok"]).toBe(true);
    await spend("owing", 41);
    await createGrant("owing", "owing-g1", 40);
    expect(await grantsOther("owing")).toBe(0);
    await expectFastPathExact();
  });

  it("counts an expired grant until its breakage is posted, by a command or by the expiry pass", async () => {
    setClock(400);
    await deposit("lapse", 5);
    await createGrant("lapse", "lapse-g1", 20, { expiresAt: at(410) });
    await createGrant("lapse", "lapse-g2", 20, { expiresAt: at(410) });
    await reserve("lapse", "lapse-h1", 8, 60);
    setClock(420);
    // Expired, not yet broken: reads already leave it out, on both paths.
    await expectFastPathExact();
    expect(await grantsOther("lapse")).toBe(2);
    await db.pool.query("select * from ledger_expire_grants_batch($1, 10)", [now()]);
    // lapse-g2's remainder went to @breakage; lapse-g1 keeps what the hold draws on.
    expect(await grantsOther("lapse")).toBe(1);
    await expectFastPathExact();
    await capture("lapse-h1", 3);
    // The hold gave 5 back to the expired grant, which went on to @breakage with it.
    expect(await grantsOther("lapse")).toBe(0);
    await expectFastPathExact();

    await createGrant("lapse", "lapse-g3", 10, { expiresAt: at(430) });
    setClock(440);
    await spend("lapse", 1);
    expect(await grantsOther("lapse")).toBe(0);
    await expectFastPathExact();
  });

  it("counts a voided default grant while holds draw on it, and not the new default grant", async () => {
    setClock(500);
    const d = await deposit("void", 30);
    const defaultId = d["transfer"]["grants"][0]["grant_id"] as string;
    await reserve("void", "void-h1", 10, 60);
    await ok("VoidGrant", { grant_id: defaultId });
    expect(await grantsOther("void")).toBe(1);
    await expectFastPathExact();
    const d2 = await deposit("void", 7);
    expect(d2["transfer"]["grants"][0]["grant_id"]).not.toBe(defaultId);
    expect(await grantsOther("void")).toBe(1);
    await ok("Release", { hold_id: "void-h1" });
    expect(await grantsOther("void")).toBe(0);
    await expectFastPathExact();

    await createGrant("void", "void-g1", 12);
    await ok("VoidGrant", { grant_id: "void-g1" });
    expect(await grantsOther("void")).toBe(0);
    await expectFastPathExact();
  });
  it("keeps the default grant's amounts in the account until a command that can add a live grant, and again from the next debit", async () => {
    setClock(900);
    const lazy = async (walletId: string): Promise<boolean> =>
      (await db.pool.query("select grants_lazy from accounts where tenant_id = $1 and wallet_id = $2", [tenant, walletId])).rows[0].grants_lazy;
    const row = async (walletId: string) =>
      (await db.pool.query("select remaining, held, consumed from grants where tenant_id = $1 and wallet_id = $2 and is_default", [tenant, walletId])).rows[0];
    await deposit("flag", 100);
    const s = await spend("flag", 30);
    await reserve("flag", "flag-h1", 20, 600);
    expect(await lazy("flag")).toBe(true);
    // The row still says what the deposit left; GetGrant answers from the account.
    expect(await row("flag")).toEqual({ remaining: "100", held: "0", consumed: "0" });
    await expectFastPathExact();
    await ok("Refund", { refund_transfer_id: s["transfer"]["transfer_id"], amount: "10" });
    expect(await lazy("flag")).toBe(false);
    expect(await row("flag")).toEqual({ remaining: "60", held: "20", consumed: "20" });
    await expectFastPathExact();
    await capture("flag-h1", 5);
    expect(await lazy("flag")).toBe(false);
    await spend("flag", 1);
    expect(await lazy("flag")).toBe(true);
    await createGrant("flag", "flag-g1", 10);
    expect(await lazy("flag")).toBe(false);
    expect(await row("flag")).toEqual({ remaining: "74", held: "0", consumed: "26" });
    await expectFastPathExact();
    // A grant created on a new wallet: the account is created by the grant's credit.
    await createGrant("flag-new", "flag-g2", 10);
    expect(await lazy("flag-new")).toBe(false);
    await expectFastPathExact();
    // Refused debits answer what the account's columns allow.
    const refused = await db.pool.query<{ r: Json }>(
      "select ledger_command($1, 'Spend', $2, '\\x00', $3, $4) as r",
      [tenant, randomUUID(), now(), { wallet_id: "plain", asset: "USD", amount: "100000", transfer_id: uuidV7() }],
    );
    expect(refused.rows[0]!.r["metadata"]?.["available"]).toBe(
      (await db.pool.query("select ledger_balance_at(a, $2)->>'available' as v from accounts a where tenant_id = $1 and wallet_id = 'plain'", [tenant, now()])).rows[0].v,
    );
  });
});
