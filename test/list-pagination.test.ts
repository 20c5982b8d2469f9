// Goal: ListTransfers and ListHolds cost the same on their last page as on their first
// (docs/performance.md, "As the ledger grows"): each page's index scan starts at the cursor and
// reads one page of rows, also under the generic plan a prepared statement switches to after
// five executions; and paging still lists every row once, newest first.
// Method: a wallet with many journal rows and holds through the ledger core; page through both
// listings while recording the SQL and parameters the ledger sends; then EXPLAIN ANALYZE the
// recorded last page with plan_cache_mode = force_generic_plan and count the rows each index scan
// read (returned plus removed by a filter). No wall-clock time is asserted.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type pg from "pg";
import { createLedger, type Outcome } from "@holdfast/ledger/domain";
import { checkInvariants } from "@holdfast/ledger/invariants";
import { uuidV7 } from "@holdfast/common/ids";
import { createTestLedger, key } from "./support/ledger.js";

const WALLET = "paged";
const SPENDS = 120;
const HOLDS = 60;
const PAGE_SIZE = 10;

let t: Awaited<ReturnType<typeof createTestLedger>>;
/** The ledger core again, on a pool that records each named query it sends. */
let ledger: ReturnType<typeof createLedger>;
const sent: { name: string; text: string; values: unknown[] }[] = [];

function ok<T>(outcome: Outcome<T>): T {
  if (!outcome.ok) throw new Error(`expected success, got ${outcome.reason}: ${outcome.message}`);
  return outcome;
}

function recording(pool: pg.Pool): pg.Pool {
  return new Proxy(pool, {
    get(target, prop, receiver) {
      if (prop !== "query") return Reflect.get(target, prop, receiver) as unknown;
      return (config: unknown, ...rest: unknown[]) => {
        if (typeof config === "object" && config !== null && "name" in config) {
          const c = config as { name: string; text: string; values?: unknown[] };
          sent.push({ name: c.name, text: c.text, values: c.values ?? [] });
        }
        return (target.query as (...a: unknown[]) => unknown)(config, ...rest);
      };
    },
  });
}

beforeAll(async () => {
  t = await createTestLedger();
  ledger = createLedger({ pool: recording(t.pool), clock: t.clock, newId: uuidV7 });
  ok(await t.ledger.deposit(t.caller, { walletId: WALLET, asset: "USD", amount: 1_000_000n, idempotencyKey: key(), metadata: {} }));
  for (let i = 0; i < SPENDS; i++) {
    t.clock.advance(1000);
    ok(await t.ledger.spend(t.caller, { walletId: WALLET, asset: "USD", amount: 1n, idempotencyKey: key(), metadata: {} }));
  }
  for (let i = 0; i < HOLDS; i++) {
    t.clock.advance(1000);
    ok(await t.ledger.reserve(t.caller, { walletId: WALLET, asset: "USD", amount: 1n, holdId: `h${i}`, ttlSeconds: 3600, idempotencyKey: key(), metadata: {} }));
  }
  await t.pool.query("analyze");
});

afterAll(async () => {
  expect(await checkInvariants(t.pool)).toEqual([]);
  await t.close();
});

interface PlanNode {
  "Node Type": string;
  "Relation Name"?: string;
  "Actual Rows": number;
  "Actual Loops": number;
  "Rows Removed by Filter"?: number;
  Plans?: PlanNode[];
}

function indexScans(node: PlanNode): PlanNode[] {
  const own = node["Node Type"].startsWith("Index") ? [node] : [];
  return [...own, ...(node.Plans ?? []).flatMap(indexScans)];
}

/**
 * The rows each index scan of the recorded query read: EXPLAIN ANALYZE of it as a prepared
 * statement under a generic plan, which is what the ledger's named statements run after five
 * executions.
 */
async function rowsReadByGenericPlan(query: { text: string; values: unknown[] }): Promise<number[]> {
  const client = await t.pool.connect();
  try {
    // On a table this small the planner would rather read it whole; what is tested is where the
    // index scan starts, so take the index scan.
    await client.query("set plan_cache_mode = force_generic_plan; set enable_seqscan = off; set enable_bitmapscan = off");
    await client.query(`prepare paged_query as ${query.text}`);
    const params = query.values.map((v) => (v === null ? "null" : client.escapeLiteral(v instanceof Date ? v.toISOString() : String(v))));
    const r = await client.query<{ "QUERY PLAN": { Plan: PlanNode }[] }>(`explain (analyze, format json) execute paged_query(${params.join(", ")})`);
    await client.query("deallocate paged_query");
    return indexScans(r.rows[0]!["QUERY PLAN"][0]!.Plan).map((n) => (n["Actual Rows"] + (n["Rows Removed by Filter"] ?? 0)) * n["Actual Loops"]);
  } finally {
    await client.query("reset plan_cache_mode; reset enable_seqscan; reset enable_bitmapscan");
    client.release();
  }
}

describe("ListTransfers", () => {
  it("lists every journal row of the wallet once, newest first", async () => {
    const ids: string[] = [];
    let token = "";
    do {
      const page = await ledger.listTransfers(t.caller, WALLET, "", PAGE_SIZE, token);
      ids.push(...page.items.map((i) => i.transferId));
      token = page.nextPageToken;
    } while (token);
    expect(ids).toHaveLength(1 + SPENDS + HOLDS);
    expect(new Set(ids).size).toBe(ids.length);
    expect([...ids].sort().reverse()).toEqual(ids);
  });

  it("reads one page of rows on the last page under a generic plan", async () => {
    const pages = sent.filter((q) => q.name === "ledger_list_transfers");
    const last = pages.at(-1)!;
    expect(last.values[3]).not.toBeNull();
    const read = await rowsReadByGenericPlan(last);
    expect(read.length).toBeGreaterThan(0);
    // The wallet's older rows number fewer than a page here; every scan stops within page + 1.
    for (const rows of read) expect(rows).toBeLessThanOrEqual(PAGE_SIZE + 1);
    // The first page reads one page too.
    for (const rows of await rowsReadByGenericPlan(pages[0]!)) expect(rows).toBeLessThanOrEqual(PAGE_SIZE + 1);
  });
});

describe("ListHolds", () => {
  it("lists every hold of the wallet once, newest first", async () => {
    const ids: string[] = [];
    let token = "";
    do {
      const page = await ledger.listHolds(t.caller, WALLET, null, PAGE_SIZE, token);
      ids.push(...page.items.map((h) => h.holdId));
      token = page.nextPageToken;
    } while (token);
    expect(ids).toEqual(Array.from({ length: HOLDS }, (_, i) => `h${HOLDS - 1 - i}`));
  });

  it("reads one page of rows on the last page under a generic plan", async () => {
    const pages = sent.filter((q) => q.name === "ledger_list_holds");
    const last = pages.at(-1)!;
    expect(last.values[3]).not.toBeNull();
    const read = await rowsReadByGenericPlan(last);
    expect(read.length).toBeGreaterThan(0);
    for (const rows of read) expect(rows).toBeLessThanOrEqual(PAGE_SIZE + 1);
  });
});
