// The benchmark's databases, created from scratch on every invocation on the server of
// BENCH_ADMIN_DATABASE_URL (default postgres://postgres@127.0.0.1:5432/postgres): the ledger's
// (migrated, one tenant, a writer key, funded wallets) and the naive service's (its own schema,
// the same wallets and funds, and the raw baseline's hot row).
import pg from "pg";
import pino from "pino";
import { createPool } from "@holdfast/common/pg";
import { createApiKey, createTenant } from "@holdfast/ledger/auth/api-keys";
import { migrate } from "@holdfast/db/migrate";
import { NAIVE_SCHEMA } from "./naive-service.js";
import { HOT_ROW_TABLE_SQL } from "./raw-hot-row.js";
import { ASSET, HOT_WALLET_ID } from "./workloads.js";

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

/** The ledger database: migrated, one tenant, a writer key, funded wallets and the hot one. */
export async function prepareLedgerDatabase(name: string, walletsTotal: number): Promise<LedgerDatabase> {
  const url = await recreateDatabase(name);
  const pool = createPool(
    { databaseUrl: url, pgPoolMax: SETUP_POOL_MAX, pgConnectTimeoutMs: SETUP_CONNECT_TIMEOUT_MS, pgStatementTimeoutMs: SETUP_STATEMENT_TIMEOUT_MS },
    pino({ level: "silent" }),
    { applicationName: "holdfast-bench" },
  );
  await migrate(pool);
  const { tenantId } = await createTenant(pool, "bench");
  const { secret } = await createApiKey(pool, { tenantId, name: "bench", role: "writer" });
  // Funding goes through the ledger's own command function (one statement, ~10,000 deposits),
  // so the invariants cover it like any other command.
  await pool.query(
    `select ledger_command($1, 'Deposit', 'fund-' || i, '\\x00', now(),
       jsonb_build_object('wallet_id', case when i = $2 then $6 else 'w' || i end, 'asset', $5::text,
         'amount', case when i = $2 then $4::text else $3::text end, 'transfer_id', gen_random_uuid()))
       from generate_series(0, $2) i`,
    [tenantId, walletsTotal, WALLET_FUNDS.toString(), HOT_WALLET_FUNDS.toString(), ASSET, HOT_WALLET_ID],
  );
  await pool.query("vacuum analyze");
  return { url, pool, tenantId, apiKey: secret };
}

/** The naive service's database, with the same wallets and funds, and the raw baseline's row. */
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
