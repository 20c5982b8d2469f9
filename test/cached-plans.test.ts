// Goal: the commands' SQL helpers cost no parse and plan per call (migration 0021). A LANGUAGE
// sql function the planner cannot inline is parsed, analysed and planned again by every
// transaction that calls it; PL/pgSQL keeps its plans per connection, and an inlined function
// is no call at all. Method: one transaction per command with function tracking on
// (`track_functions = all` counts every call that is not inlined), the commands of every kind
// the service sends, then the calls of LANGUAGE sql functions counted from
// pg_stat_xact_user_functions; and the rewritten ledger_uuidv7 checked for its layout.
import { createHash, randomUUID } from "node:crypto";
import type pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { uuidV7 } from "@holdfast/common/ids";
import { checkInvariants } from "@holdfast/ledger/invariants";
import { createTestLedger } from "./support/ledger.js";

type Json = Record<string, any>;

type TestLedger = Awaited<ReturnType<typeof createTestLedger>>;

// The ledger's own test setup (a migrated database, one tenant); only its pool is used here.
let t: TestLedger;
let tenant: string;

beforeAll(async () => {
  t = await createTestLedger();
  tenant = t.caller.tenantId;
});
afterAll(async () => {
  await t.close();
});

/** Calls so far of each LANGUAGE sql function, as the statistics have them. */
async function sqlFunctionCalls(client: pg.PoolClient): Promise<Map<string, number>> {
  // Make this session send its pending counts now (they go out when it is next idle), then
  // read the shared statistics afresh.
  await client.query("select pg_stat_force_next_flush()");
  await client.query("select 1");
  await client.query("select pg_stat_clear_snapshot()");
  const { rows } = await client.query<{ funcname: string; calls: string }>(
    `select f.funcname, f.calls::text from pg_stat_user_functions f
       join pg_proc p on p.oid = f.funcid join pg_language l on l.oid = p.prolang
      where l.lanname = 'sql'`,
  );
  return new Map(rows.map((r) => [r.funcname, Number(r.calls)]));
}

/**
 * Runs one command in its own transaction, as the service does, with function tracking on
 * (`track_functions = all` counts every call of a function that was not inlined), and returns
 * its answer and the LANGUAGE sql functions it called, name → calls.
 */
async function tracked(client: pg.PoolClient, name: string, args: Json): Promise<{ r: Json; sqlCalls: Record<string, number> }> {
  const before = await sqlFunctionCalls(client);
  const fingerprint = createHash("sha256").update(JSON.stringify([name, args])).digest();
  const { rows } = await client.query<{ r: Json }>("select ledger_command($1, $2, $3, $4, now(), $5) as r", [
    tenant,
    name,
    randomUUID(),
    fingerprint,
    { ...args, transfer_id: uuidV7() },
  ]);
  const after = await sqlFunctionCalls(client);
  const sqlCalls: Record<string, number> = {};
  for (const [f, calls] of after) {
    if (calls > (before.get(f) ?? 0)) sqlCalls[f] = calls - (before.get(f) ?? 0);
  }
  return { r: rows[0]!.r, sqlCalls };
}

describe("the commands' SQL helpers", () => {
  it("call no LANGUAGE sql function that the planner has to parse and plan per transaction", async () => {
    const client = await t.pool.connect();
    try {
      await client.query("set track_functions = 'all'");
      // The first executions of a statement in a session get custom plans, whose planning
      // evaluates immutable functions of constant arguments once; from the sixth on, the
      // cached generic plan runs. So every kind of command runs a few rounds first, and the
      // last round, the steady state of a service's connection, is the one counted.
      const rounds = 8;
      let seen: Record<string, Record<string, number>> = {};
      for (let round = 0; round < rounds; round++) {
        seen = {};
        const run = async (name: string, args: Json): Promise<Json> => {
          const { r, sqlCalls } = await tracked(client, name, args);
          expect(r["ok"], `${name}: ${JSON.stringify(r)}`).toBe(true);
          seen[name] = sqlCalls;
          return r;
        };
        const usd = { asset: "USD", metadata: {} };
        const [a, b, g, h1, h2] = ["a", "b", "g", "h1", "h2"].map((n) => `${n}${round}`) as [string, string, string, string, string];
        await run("Deposit", { wallet_id: a, amount: "1000", ...usd });
        await run("CreateGrant", { wallet_id: a, amount: "50", category: "promo", priority: 10, grant_id: g, ...usd });
        const spend = await run("Spend", { wallet_id: a, amount: "30", ...usd });
        await run("Reserve", { wallet_id: a, amount: "100", hold_id: h1, ttl_seconds: 60, ...usd });
        await run("Capture", { hold_id: h1, amount: "70", metadata: {} });
        await run("Reserve", { wallet_id: a, amount: "10", hold_id: h2, ttl_seconds: 60, ...usd });
        await run("ExtendHold", { hold_id: h2, ttl_seconds: 120 });
        await run("Release", { hold_id: h2 });
        await run("Refund", { refund_transfer_id: spend["transfer"]["transfer_id"], amount: "5", metadata: {} });
        await run("Transfer", { from_wallet_id: a, to_wallet_id: b, amount: "20", ...usd });
        await run("VoidGrant", { grant_id: g });
      }
      // Every kind of command ran and none of them called a LANGUAGE sql function.
      expect(Object.keys(seen)).toHaveLength(10);
      expect(seen).toEqual(Object.fromEntries(Object.keys(seen).map((k) => [k, {}])));
      expect(await checkInvariants(t.pool, { tenantId: tenant })).toEqual([]);
    } finally {
      client.release();
    }
  });
});

describe("ledger_uuidv7", () => {
  it("puts the millisecond timestamp in the first 48 bits, version 7, the RFC 4122 variant and random bits after", async () => {
    const at = "2026-12-02T19:30:00.123Z";
    const { rows } = await t.pool.query<{ id: string }>("select ledger_uuidv7($1)::text as id from generate_series(1, 500)", [at]);
    const ids = rows.map((r) => r.id);
    expect(new Set(ids).size).toBe(ids.length);
    for (const id of ids) {
      expect(id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
      expect(parseInt(id.replace(/-/g, "").slice(0, 12), 16)).toBe(Date.parse(at));
    }
  });
});
