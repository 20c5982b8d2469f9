// The benchmark's databases, created from scratch on every invocation on the server of
// BENCH_ADMIN_DATABASE_URL (default postgres://postgres@127.0.0.1:5432/postgres): the ledger's
// (migrated, one tenant, a writer key, funded wallets; with --grants a second tenant whose
// wallets hold their funds in grants, with --alert on a third with a balance alert), the naive service's (its own schema, the same wallets
// and funds, the raw baseline's hot row, and the plain double-entry baseline's tables and
// function), and with --baseline the other checkout's ledger database, set up by that
// checkout's own code (baseline.ts).
import pg from "pg";
import pino from "pino";
import { createPool } from "@holdfast/common/pg";
import { systemClock } from "@holdfast/common/ids";
import { createApiKey, createTenant } from "@holdfast/ledger/auth/api-keys";
import { createRateCards } from "@holdfast/ledger/domain/rate-cards";
import { migrate } from "@holdfast/db/migrate";
import { NAIVE_SCHEMA } from "./naive-service.js";
import { fundPlainAccounts, PLAIN_SCHEMA } from "./plain-double-entry.js";
import { HOT_ROW_TABLE_SQL } from "./raw-hot-row.js";
import { ASSET, HOT_WALLET_ID, MODEL, MODEL_PRICES, RATE_CARD_ID } from "./workloads.js";

/** The uniform workload's wallets, unless --wallets says otherwise. */
export const WALLETS_TOTAL_DEFAULT = 10_000;
/** Each uniform wallet's funds: enough for far more commands than a run sends to it. */
const WALLET_FUNDS = 1_000_000_000n;
/** The hot wallet's funds: ~10^5 s of commands at 10,000/s of at most 10 units each. */
const HOT_WALLET_FUNDS = 10n ** 15n;
/** Connections of the orchestrator's own pools (setup and invariant checks). */
const SETUP_POOL_MAX = 4;
const SETUP_CONNECT_TIMEOUT_MS = 5000;
/** Invariant checks scan the whole journal: allow them minutes, not the service's 5 s. */
const SETUP_STATEMENT_TIMEOUT_MS = 600_000;
/** Connections left free for everything else when the raw baseline sizes itself. */
const CONNECTIONS_SPARE = 10;

export const ADMIN_URL = process.env["BENCH_ADMIN_DATABASE_URL"] ?? "postgres://postgres@127.0.0.1:5432/postgres";

function databaseUrl(name: string): string {
  const url = new URL(ADMIN_URL);
  url.pathname = `/${name}`;
  return url.toString();
}

/**
 * Drops and creates the database `name` on the admin server and returns its URL. Every bench
 * command (this harness, bench:events, bench:webhooks, the billing-stream bench) starts from one.
 */
export async function recreateDatabase(name: string): Promise<string> {
  if (!/^[a-z_][a-z0-9_]{0,62}$/.test(name)) throw new Error(`not a plain database name: ${name}`);
  const admin = new pg.Client({ connectionString: ADMIN_URL, connectionTimeoutMillis: SETUP_CONNECT_TIMEOUT_MS });
  await admin.connect();
  try {
    await admin.query(`drop database if exists ${name} with (force)`);
    await admin.query(`create database ${name}`);
  } finally {
    await admin.end();
  }
  return databaseUrl(name);
}

export interface LedgerDatabase {
  url: string;
  pool: pg.Pool;
  tenantId: string;
  apiKey: string;
}

/**
 * Deposits each wallet's funds (w0 … and the hot wallet) for `tenantId`. Funding goes through
 * the ledger's own command function (one statement, ~10,000 deposits), so the invariants cover
 * it like any other command.
 */
async function fundWallets(pool: pg.Pool, tenantId: string, walletsTotal: number): Promise<void> {
  await pool.query(
    `select ledger_command($1, 'Deposit', 'fund-' || i, '\\x00', now(),
       jsonb_build_object('wallet_id', case when i = $2 then $6 else 'w' || i end, 'asset', $5::text,
         'amount', case when i = $2 then $4::text else $3::text end, 'transfer_id', gen_random_uuid()))
       from generate_series(0, $2) i`,
    [tenantId, walletsTotal, WALLET_FUNDS.toString(), HOT_WALLET_FUNDS.toString(), ASSET, HOT_WALLET_ID],
  );
}

/** The wallet whose holds {@link settleHolds} leaves behind; no workload names it. */
const SETTLED_WALLET_ID = "bench_settled";
/** Holds reserved and captured before the runs: enough for the statistics to tell indexes apart. */
const SETTLED_HOLDS = 1000;

/**
 * Reserves and captures {@link SETTLED_HOLDS} holds on a wallet of their own, so that the
 * `vacuum analyze` after setup sees a holds table with rows. Without them, holds is empty when
 * analyzed, and a lookup by (tenant_id, hold_id) costs the same through holds_pkey as through
 * holds_by_wallet (tenant_id, wallet_id, created_at, hold_id); the planner may pick the second,
 * and each connection keeps that plan while the table grows, so that every Capture scans all
 * the tenant's holds. A production server's autovacuum analyzes holds after its first few dozen
 * rows, which makes new plans; this machine's PostgreSQL runs with autovacuum off, so the bench
 * does it once here (docs/performance.md, "Plans made on an empty table").
 */
async function settleHolds(pool: pg.Pool, tenantId: string): Promise<void> {
  const values = [tenantId, SETTLED_HOLDS, SETTLED_WALLET_ID, ASSET];
  await pool.query(
    `select ledger_command($1, 'Deposit', 'settle-fund', '\\x00', now(), jsonb_build_object('wallet_id', $3::text,
       'asset', $4::text, 'amount', $2::text, 'transfer_id', gen_random_uuid()))`,
    values,
  );
  await pool.query(
    `select ledger_command($1, 'Reserve', 'settle-reserve-' || i, '\\x00', now(), jsonb_build_object('wallet_id', $3::text,
       'asset', $4::text, 'amount', '1', 'hold_id', 'settled-' || i, 'ttl_seconds', 60, 'transfer_id', gen_random_uuid()))
       from generate_series(1, $2::int) i`,
    values,
  );
  await pool.query(
    `select ledger_command($1, 'Capture', 'settle-capture-' || i, '\\x00', now(),
       jsonb_build_object('hold_id', 'settled-' || i, 'transfer_id', gen_random_uuid()))
       from generate_series(1, $2::int) i`,
    [tenantId, SETTLED_HOLDS],
  );
}

/**
 * The code that sets up a ledger database: this checkout's, or a baseline checkout's own
 * (baseline.ts), whose schema, tenants and keys may differ from today's.
 */
export interface LedgerSchema {
  migrate(pool: pg.Pool): Promise<unknown>;
  createTenant(pool: pg.Pool, name: string): Promise<{ tenantId: string }>;
  createApiKey(pool: pg.Pool, input: { tenantId: string; name: string; role: "writer" }): Promise<{ secret: string }>;
}

const CURRENT_SCHEMA: LedgerSchema = { migrate: (pool) => migrate(pool), createTenant, createApiKey };

/**
 * A ledger database: migrated, one tenant, a writer key, funded wallets and the hot one, set up
 * by `schema` (this checkout's unless given).
 */
export async function prepareLedgerDatabase(name: string, walletsTotal: number, schema: LedgerSchema = CURRENT_SCHEMA): Promise<LedgerDatabase> {
  const url = await recreateDatabase(name);
  const pool = createPool(
    { databaseUrl: url, pgPoolMax: SETUP_POOL_MAX, pgConnectTimeoutMs: SETUP_CONNECT_TIMEOUT_MS, pgStatementTimeoutMs: SETUP_STATEMENT_TIMEOUT_MS },
    pino({ level: "silent" }),
    { applicationName: "holdfast-bench" },
  );
  await schema.migrate(pool);
  const { tenantId } = await schema.createTenant(pool, "bench");
  const { secret } = await schema.createApiKey(pool, { tenantId, name: "bench", role: "writer" });
  await fundWallets(pool, tenantId, walletsTotal);
  await settleHolds(pool, tenantId);
  await pool.query("vacuum analyze");
  return { url, pool, tenantId, apiKey: secret };
}

/** The metered workload's rate card (workloads.ts), in effect from now, in the first tenant. */
export async function addRateCard(db: LedgerDatabase): Promise<void> {
  await createRateCards({ pool: db.pool, clock: systemClock }).put(db.tenantId, {
    rateCardId: RATE_CARD_ID,
    asset: ASSET,
    tokenAsset: "TOKENS",
    models: [{ model: MODEL, prices: MODEL_PRICES, tiers: [] }],
    markupBps: 0,
    effectiveAt: null,
    idempotencyKey: "bench-rate-card",
  });
}

/**
 * A third tenant in the ledger database, "bench_alert", with the same wallets and deposits as
 * the first, a writer key for the load and an admin key for its balance alert, which the
 * orchestrator creates over AdminService once the ledger serves (rpc-client.ts). Served by the
 * same ledger process, so the row differs from "holdfast" in the alert alone.
 */
export async function addAlertTenant(db: LedgerDatabase, walletsTotal: number): Promise<{ apiKey: string; adminKey: string }> {
  const { tenantId } = await createTenant(db.pool, "bench_alert");
  const { secret } = await createApiKey(db.pool, { tenantId, name: "bench_alert", role: "writer" });
  const admin = await createApiKey(db.pool, { tenantId, name: "bench_alert_admin", role: "admin" });
  await fundWallets(db.pool, tenantId, walletsTotal);
  await db.pool.query("vacuum analyze");
  return { apiKey: secret, adminKey: admin.secret };
}

/** Where the grants of `--grants` are consumed in order: far in the future, a day apart. */
const GRANT_EXPIRY_YEARS = 10;

/**
 * A second tenant in the ledger database, "bench_grants", with a writer key and the same wallet
 * names and funds as the first, each wallet's funds split over `grantsPerWallet` active grants
 * (CreateGrant through ledger_command, no Deposit, so no default grant): categories
 * `bench_0` … (distinct; the workloads name none, so every grant is eligible), priorities 0, 1,
 * … and expiries GRANT_EXPIRY_YEARS from now a day apart. Served by the same ledger process as
 * the first tenant, so the row differs from "holdfast" in the grants alone.
 */
export async function addGrantsTenant(db: LedgerDatabase, walletsTotal: number, grantsPerWallet: number): Promise<{ tenantId: string; apiKey: string }> {
  const { tenantId } = await createTenant(db.pool, "bench_grants");
  const { secret } = await createApiKey(db.pool, { tenantId, name: "bench_grants", role: "writer" });
  // One statement per grant index, each ~walletsTotal commands; the first grant takes what the
  // division leaves, so each wallet's grants add up to exactly its usual funds.
  for (let g = 0; g < grantsPerWallet; g++) {
    await db.pool.query(
      `select ledger_command($1, 'CreateGrant', 'grant-' || i || '-' || $7::int, '\\x00', now(),
         jsonb_build_object('wallet_id', case when i = $2 then $6 else 'w' || i end, 'asset', $5::text,
           'amount', (f / $8 + case when $7::int = 0 then f % $8 else 0 end)::text,
           'grant_id', 'bench_' || i || '_' || $7::int, 'category', 'bench_' || $7::int, 'priority', $7::int,
           'expires_at', now() + make_interval(years => $9, days => $7::int), 'transfer_id', gen_random_uuid()))
         from generate_series(0, $2) i, lateral (select case when i = $2 then $4::bigint else $3::bigint end as f) funds`,
      [tenantId, walletsTotal, WALLET_FUNDS.toString(), HOT_WALLET_FUNDS.toString(), ASSET, HOT_WALLET_ID, g, grantsPerWallet, GRANT_EXPIRY_YEARS],
    );
  }
  // ledger_command answers a refusal instead of raising: count what was created.
  const created = await db.pool.query<{ n: string }>("select count(*) as n from grants where tenant_id = $1", [tenantId]);
  const wanted = (walletsTotal + 1) * grantsPerWallet;
  if (Number(created.rows[0]!.n) !== wanted) throw new Error(`--grants: ${created.rows[0]!.n} grants created, ${wanted} wanted`);
  await db.pool.query("vacuum analyze");
  return { tenantId, apiKey: secret };
}

/**
 * The naive service's database, with the same wallets and funds, the raw baseline's row, and the
 * plain double-entry baseline's accounts (the same wallets and funds) and function.
 */
export async function prepareNaiveDatabase(name: string, walletsTotal: number): Promise<{ url: string; pool: pg.Pool }> {
  const url = await recreateDatabase(name);
  const pool = new pg.Pool({ connectionString: url, max: SETUP_POOL_MAX, connectionTimeoutMillis: SETUP_CONNECT_TIMEOUT_MS });
  await pool.query(NAIVE_SCHEMA);
  await pool.query(
    `insert into balances (wallet_id, asset, balance)
     select case when i = $1 then $5 else 'w' || i end, $4, case when i = $1 then $3::bigint else $2::bigint end
       from generate_series(0, $1) i`,
    [walletsTotal, WALLET_FUNDS.toString(), HOT_WALLET_FUNDS.toString(), ASSET, HOT_WALLET_ID],
  );
  await pool.query("insert into journal (wallet_id, kind, amount) select wallet_id, 'deposit', balance from balances");
  await pool.query(HOT_ROW_TABLE_SQL);
  await pool.query("insert into bench_hot_row values (1, $1)", [HOT_WALLET_FUNDS.toString()]);
  await pool.query(PLAIN_SCHEMA);
  await fundPlainAccounts(pool);
  await pool.query("vacuum analyze");
  return { url, pool };
}

/** Connections the server can still open now, less a spare for everyone else. */
export async function connectionsFree(pool: pg.Pool): Promise<number> {
  const r = await pool.query<{ free: number }>(
    `select current_setting('max_connections')::int - current_setting('superuser_reserved_connections')::int
            - (select count(*) from pg_stat_activity where backend_type = 'client backend')::int as free`,
  );
  return Math.max(1, r.rows[0]!.free - CONNECTIONS_SPARE);
}
