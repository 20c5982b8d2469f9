// Goal: the processes' database role cannot rewrite the journal (issue 12, finding 6). A login
// role in holdfast_runtime, the role the ledger, the workers and the CLI run as, is refused
// ALTER TABLE ... DISABLE TRIGGER, UPDATE, DELETE, INSERT and TRUNCATE on the journal, direct
// writes to balances, chain heads and the audit log, and the internal SQL steps that could move
// money without a journal row; yet the whole ledger works through it: a ledger started on
// that role's URL skips migrating (nothing is pending) and serves commands, admin calls,
// webhooks and rate cards, and the worker, relay, sweep and checkpoint statements run as it.
// Migrating is the owner's job: the runtime role refuses to start on a pending migration.
// Method: a fresh database cloned from the template (migrated by the superuser, the owner in
// tests); a login role with a unique name per run (roles are cluster-wide), member of
// holdfast_runtime, dropped at the end; a real ledger server on port 0 on that role's URL.
import { randomBytes, randomUUID } from "node:crypto";
import { cp, mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { createClient, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { AdminService, Role } from "@holdfast/gen/holdfast/v1/admin_pb";
import { LedgerService } from "@holdfast/gen/holdfast/v1/ledger_pb";
import { RateCardService } from "@holdfast/gen/holdfast/v1/rate_cards_pb";
import { WalletStatus } from "@holdfast/gen/holdfast/v1/types_pb";
import { WebhookService } from "@holdfast/gen/holdfast/v1/webhooks_pb";
import { main } from "@holdfast/cli/main";
import { verifyLedger } from "@holdfast/cli/verify";
import { defaultMigrationsDir, mayMigrate, migrateIfPermitted, MigrationError, pendingMigrations } from "@holdfast/db/migrate";
import { startLedgerApp, type LedgerApp } from "@holdfast/ledger/app";
import { createApiKey, createTenant } from "@holdfast/ledger/auth/api-keys";
import { startChainCheckpoints } from "@holdfast/ledger/chain-checkpoints";
import { loadLedgerConfig } from "@holdfast/ledger/config";
import { createTestDatabase, type TestDatabase } from "./support/db.js";
import { key, quietLogger } from "./support/ledger.js";
import { loopback_networks } from "./support/webhooks.js";

let db: TestDatabase;
let roleName: string;
let runtimeUrl: string;
let runtime: pg.Pool;

beforeAll(async () => {
  db = await createTestDatabase();
  roleName = `holdfast_app_t_${randomBytes(6).toString("hex")}`;
  const password = randomBytes(16).toString("hex");
  await db.pool.query(`create role ${roleName} login password '${password}' in role holdfast_runtime`);
  const url = new URL(db.url);
  url.username = roleName;
  url.password = password;
  runtimeUrl = url.toString();
  runtime = new pg.Pool({ connectionString: runtimeUrl, max: 4 });
});

afterAll(async () => {
  await runtime?.end();
  // The role holds no privilege of its own (they belong to holdfast_runtime), so it drops
  // once its sessions are gone; the database goes first.
  await db?.drop();
  const admin = new pg.Client({ connectionString: inject("adminDatabaseUrl") });
  await admin.connect();
  try {
    await admin.query(`drop role if exists ${roleName}`);
  } finally {
    await admin.end();
  }
});

/** The SQLSTATE a statement run as the runtime role fails with, or "ok". */
async function asRuntime(sql: string, values: unknown[] = []): Promise<string> {
  return runtime.query(sql, values).then(
    () => "ok",
    (err: { code?: string }) => err.code ?? "?",
  );
}

describe("the runtime role", () => {
  const tenantId = randomUUID();
  beforeAll(async () => {
    // Some journal to attack, written the normal way.
    await db.pool.query("insert into tenants (id, name) values ($1, $2)", [tenantId, `t-${tenantId}`]);
    await db.pool.query("select ledger_command($1, 'Deposit', 'd1', '\\x01', now(), $2)", [
      tenantId,
      { wallet_id: "w", asset: "USD", amount: "100", transfer_id: randomUUID() },
    ]);
  });

  it("cannot disable the journal's triggers, alter it or drop them", async () => {
    expect(await asRuntime("alter table transfers disable trigger transfers_no_update")).toBe("42501");
    expect(await asRuntime("alter table transfers disable trigger all")).toBe("42501");
    expect(await asRuntime("drop trigger transfers_chain_link on transfers")).toBe("42501");
    expect(await asRuntime("alter table transfers add column forged text")).toBe("42501");
    expect(await asRuntime("create or replace function ledger_refuse_change() returns trigger language plpgsql as 'begin return new; end'")).toBe("42501");
  });

  it("cannot update, delete, insert or truncate journal rows", async () => {
    expect(await asRuntime("update transfers set amount = 1")).toBe("42501");
    expect(await asRuntime("delete from transfers")).toBe("42501");
    expect(await asRuntime("truncate transfers")).toBe("42501");
    const row = [tenantId, randomUUID(), "deposit", "@world", "w", "USD", 5, new Date()];
    const insert = "insert into transfers (tenant_id, transfer_id, kind, debit_wallet_id, credit_wallet_id, asset, amount, created_at) values ($1, $2, $3, $4, $5, $6, $7, $8)";
    expect(await asRuntime(insert, row)).toBe("42501");
  });

  it("cannot move balances, the chain, checkpoints, events or the audit log around the entry points", async () => {
    expect(await asRuntime("update accounts set credits_posted = credits_posted + 1000")).toBe("42501");
    expect(await asRuntime("select ledger_credit($1, 'w', 'USD', 1000)", [tenantId])).toBe("42501");
    expect(await asRuntime("select ledger_emit($1, 'w', 'holdfast.deposit.completed', 'USD', now(), '{}')", [tenantId])).toBe("42501");
    expect(await asRuntime("select ledger_command_dispatch($1, 'Deposit', 'd2', '\\x02', now(), '{}')", [tenantId])).toBe("42501");
    expect(await asRuntime("update journal_chain_heads set chain_seq = 0")).toBe("42501");
    expect(await asRuntime("update journal_chain set row_hash = prev_hash")).toBe("42501");
    expect(await asRuntime("delete from journal_chain")).toBe("42501");
    expect(await asRuntime("select ledger_chain_append(t) from transfers t limit 1")).toBe("42501");
    expect(await asRuntime("alter table journal_chain disable trigger journal_chain_append_only")).toBe("42501");
    expect(await asRuntime("insert into journal_chain_checkpoints values ($1, 1, '\\x00', now())", [tenantId])).toBe("42501");
    expect(await asRuntime("update events set data = '{}'")).toBe("42501");
    expect(await asRuntime("update audit_log set target = 'x'")).toBe("42501");
    expect(await asRuntime("delete from audit_log")).toBe("42501");
    expect(await asRuntime("create table forged (x int)")).toBe("42501");
  });

  it("runs the statements the workers, the relay and the sweep run", async () => {
    expect(await asRuntime("select * from ledger_expire_batch(now(), 100)")).toBe("ok");
    expect(await asRuntime("select * from ledger_expire_grants_batch(now(), 100)")).toBe("ok");
    expect(await asRuntime("update events set published_at = now() where tenant_id = $1", [tenantId])).toBe("ok");
    expect(await asRuntime("delete from idempotency_keys where created_at < now() - interval '100 years'")).toBe("ok");
    const checkpoints = startChainCheckpoints({ pool: runtime, logger: quietLogger, intervalSeconds: 0 });
    expect((await checkpoints.checkpoint()).map((c) => c.tenantId)).toContain(tenantId);
    checkpoints.stop();
  });

  it("may not migrate, and refuses to start on a pending migration, naming it", async () => {
    expect(await mayMigrate(db.pool)).toBe(true);
    expect(await mayMigrate(runtime)).toBe(false);
    expect(await pendingMigrations(runtime)).toEqual([]);
    const dir = await mkdtemp(path.join(tmpdir(), "holdfast-migrations-"));
    try {
      await cp(defaultMigrationsDir(), dir, { recursive: true });
      const next = (await readdir(dir)).filter((f) => f.endsWith(".sql")).length + 1;
      const name = `${String(next).padStart(4, "0")}_pending.sql`;
      await writeFile(path.join(dir, name), "select 1;\n");
      const refused = await migrateIfPermitted(runtime, quietLogger, dir).catch((e: unknown) => e);
      expect(refused).toBeInstanceOf(MigrationError);
      expect((refused as Error).message).toContain(`first ${name}`);
      expect((refused as Error).message).toContain("HOLDFAST_MIGRATE_DATABASE_URL");
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe("a ledger on the runtime role's URL", () => {
  let app: LedgerApp;
  let secret: string;

  beforeAll(async () => {
    const config = loadLedgerConfig({
      DATABASE_URL: runtimeUrl,
      HOLDFAST_PORT: "0",
      HOLDFAST_HOST: "127.0.0.1",
      HOLDFAST_AUTH_CACHE_MS: "0",
      HOLDFAST_WEBHOOK_ALLOWED_NETWORKS: loopback_networks,
    });
    // migrate defaults to on: the runtime role finds nothing pending and starts.
    app = await startLedgerApp({ config, logger: quietLogger, relay: false });
    const { tenantId } = await createTenant(app.pool, `tenant-${randomUUID()}`);
    secret = (await createApiKey(app.pool, { tenantId, name: "admin", role: "admin" })).secret;
  });
  afterAll(async () => {
    await app?.stop();
  });

  function client<S extends Parameters<typeof createClient>[0]>(service: S) {
    const auth: Interceptor = (next) => async (req) => {
      req.header.set("authorization", `Bearer ${secret}`);
      return next(req);
    };
    return createClient(service, createConnectTransport({ baseUrl: app.url, httpVersion: "2", interceptors: [auth] }));
  }

  it("serves the wallet commands and reads", async () => {
    const ledger = client(LedgerService);
    await ledger.createWallet({ walletId: "alice" });
    await ledger.deposit({ walletId: "alice", asset: "USD", amount: 1000n, idempotencyKey: key() });
    const hold = await ledger.reserve({ walletId: "alice", asset: "USD", amount: 300n, ttlSeconds: 60, idempotencyKey: key() });
    await ledger.capture({ holdId: hold.hold!.holdId, amount: 250n, idempotencyKey: key() });
    const spent = await ledger.spend({ walletId: "alice", asset: "USD", amount: 100n, idempotencyKey: key() });
    await ledger.refund({ transferId: spent.transfer!.transferId, idempotencyKey: key() });
    await ledger.transfer({ fromWalletId: "alice", toWalletId: "bob", asset: "USD", amount: 50n, idempotencyKey: key() });
    const released = await ledger.reserve({ walletId: "alice", asset: "USD", amount: 10n, ttlSeconds: 60, idempotencyKey: key() });
    await ledger.release({ holdId: released.hold!.holdId, idempotencyKey: key() });
    const wallet = await ledger.getWallet({ walletId: "alice" });
    expect(wallet.wallet!.balances[0]).toMatchObject({ asset: "USD", posted: 700n });
    expect((await ledger.listTransfers({ walletId: "alice" })).transfers.length).toBeGreaterThan(5);
  });

  it("serves admin calls, webhooks and rate cards, and records them in the audit log", async () => {
    const admin = client(AdminService);
    await admin.updateWallet({ walletId: "alice", status: WalletStatus.FROZEN, creditLimits: [{ asset: "USD", creditLimit: 10n }] });
    const made = await admin.createApiKey({ name: "ci", role: Role.READER });
    await admin.revokeApiKey({ keyId: made.apiKey!.keyId });
    const hooks = client(WebhookService);
    const endpoint = await hooks.createEndpoint({ url: "http://127.0.0.1:9/hooks" });
    await hooks.rotateEndpointSecret({ endpointId: endpoint.endpoint!.endpointId });
    await hooks.deleteEndpoint({ endpointId: endpoint.endpoint!.endpointId });
    const card = await client(RateCardService).putRateCard({
      rateCardId: "default",
      asset: "USD",
      markupBps: 0,
      idempotencyKey: key(),
      models: [{ model: "m1", inputNanoPerMtok: 1_000_000_000n, outputNanoPerMtok: 2_000_000_000n }],
    });
    expect(card.rateCard).toMatchObject({ version: 1 });
    const log = await admin.listAuditLog({});
    expect(log.entries.map((e) => e.action)).toEqual([
      "webhook_endpoint.deleted",
      "webhook_endpoint.secret_rotated",
      "webhook_endpoint.created",
      "api_key.revoked",
      "api_key.created",
      "wallet.updated",
    ]);
  });

  it("leaves a journal that verifies, read as the runtime role", async () => {
    const report = await verifyLedger(runtime);
    expect(report.invariantViolations).toEqual([]);
    expect(report.tenants.flatMap((t) => t.problems)).toEqual([]);
    expect(report.ok).toBe(true);
  });
});

describe("holdfast migrate", () => {
  it("uses HOLDFAST_MIGRATE_DATABASE_URL, the owner's, unless --database-url is given", async () => {
    const saved = process.env["HOLDFAST_MIGRATE_DATABASE_URL"];
    process.env["HOLDFAST_MIGRATE_DATABASE_URL"] = "postgres://owner@127.0.0.1:1/holdfast";
    try {
      const err: string[] = [];
      const output = { out: () => undefined, err: (l: string) => void err.push(l) };
      expect(await main(["node", "holdfast", "migrate"], output)).toBe(1);
      expect(err.join("\n")).toContain("127.0.0.1:1");
      const out: string[] = [];
      expect(await main(["node", "holdfast", "--database-url", db.url, "migrate"], { out: (l) => void out.push(l), err: () => undefined })).toBe(0);
      expect(out).toContain("database is up to date");
    } finally {
      if (saved === undefined) delete process.env["HOLDFAST_MIGRATE_DATABASE_URL"];
      else process.env["HOLDFAST_MIGRATE_DATABASE_URL"] = saved;
    }
  });
});
