// Goal: the rows bench:growth loads (bench/growth-load.ts) are valid ledger data: every invariant
// holds, `holdfast verify` recomputes the tenant's hash chain and finds it intact, the ledger
// keeps writing the tenant's chain after them, and the listings page through them; bad shapes
// are refused naming the option.
// Method: load a small tenant into a fresh database, then check it as the bench does, write one
// command through the ledger core on the loaded tenant, and check again.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { checkGrowthLoad, defaultBigWalletRows, loadGrowthTenant, type GrowthTenant } from "@holdfast/bench/growth-load";
import { verifyLedger } from "@holdfast/cli/verify";
import { uuidV7 } from "@holdfast/common/ids";
import { createLedger } from "@holdfast/ledger/domain";
import { checkInvariants } from "@holdfast/ledger/invariants";
import { createTestLedger, key } from "./support/ledger.js";

const LOAD = { wallets: 40, journalRows: 300, bigWalletRows: 60 };

let t: Awaited<ReturnType<typeof createTestLedger>>;
let tenant: GrowthTenant;

beforeAll(async () => {
  t = await createTestLedger();
  tenant = await loadGrowthTenant(t.pool, LOAD);
});

afterAll(async () => {
  await t.close();
});

describe("loadGrowthTenant", () => {
  it("loads the rows asked for: every wallet with its deposit, the big wallet with its rows", async () => {
    const q = (sql: string) => t.pool.query<{ n: string }>(sql, [tenant.tenantId]).then((r) => Number(r.rows[0]!.n));
    expect(await q("select count(*) as n from transfers where tenant_id = $1")).toBe(LOAD.journalRows);
    expect(await q("select count(*) as n from wallets where tenant_id = $1")).toBe(LOAD.wallets);
    expect(await q("select count(*) as n from transfers where tenant_id = $1 and kind = 'deposit'")).toBe(LOAD.wallets);
    expect(await q("select count(*) as n from events where tenant_id = $1")).toBe(LOAD.journalRows);
    expect(await q("select count(*) as n from events where tenant_id = $1 and published_at is null")).toBe(0);
    expect(await q("select count(*) as n from holds where tenant_id = $1 and wallet_id = 'g0'")).toBe(tenant.bigWalletHolds);
    expect(await q("select event_seq as n from wallets where tenant_id = $1 and wallet_id = 'g0'")).toBe(LOAD.bigWalletRows);
    // The staging table and its function are gone.
    expect(await t.pool.query("select 1 from pg_class where relname = 'bench_growth_rows'").then((r) => r.rowCount)).toBe(0);
  });

  it("leaves every invariant holding and the hash chain intact", async () => {
    expect(await checkInvariants(t.pool)).toEqual([]);
    const report = await verifyLedger(t.pool, { tenantId: tenant.tenantId });
    expect(report.tenants[0]!.problems).toEqual([]);
    expect(report.tenants[0]!.rows).toBe(LOAD.journalRows);
    expect(report.ok).toBe(true);
  });

  it("lets the ledger go on writing the tenant: its next row links after the loaded chain", async () => {
    const caller = { tenantId: tenant.tenantId, scopeWalletId: null };
    const ledger = createLedger({ pool: t.pool, clock: t.clock, newId: uuidV7 });
    const spent = await ledger.spend(caller, { walletId: "g1", asset: "USD", amount: 3n, idempotencyKey: key(), metadata: {} });
    expect(spent.ok).toBe(true);
    const page = await ledger.listTransfers(caller, "g0", "", 7, "");
    expect(page.items).toHaveLength(7);
    expect(await checkInvariants(t.pool)).toEqual([]);
    const report = await verifyLedger(t.pool, { tenantId: tenant.tenantId });
    expect(report.ok).toBe(true);
    expect(report.tenants[0]!.rows).toBe(LOAD.journalRows + 1);
  });
});

describe("checkGrowthLoad", () => {
  it("refuses shapes it cannot load, naming the option", () => {
    expect(() => checkGrowthLoad({ wallets: 0, journalRows: 10, bigWalletRows: 1 })).toThrow(/--preload-wallets/);
    expect(() => checkGrowthLoad({ wallets: 10, journalRows: 1.5, bigWalletRows: 1 })).toThrow(/--preload-journal/);
    expect(() => checkGrowthLoad({ wallets: 10, journalRows: 10, bigWalletRows: 5 })).toThrow(/--preload-journal: 10 rows leave fewer/);
    expect(() => checkGrowthLoad({ wallets: 1, journalRows: 10, bigWalletRows: 5 })).toThrow(/--preload-big-wallet-rows/);
    expect(() => checkGrowthLoad({ wallets: 10, journalRows: 100, bigWalletRows: defaultBigWalletRows(10, 100) })).not.toThrow();
  });
});
