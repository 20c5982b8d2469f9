// npm run bench: Holdfast against its baselines, in one invocation, on one database server.
//
//   npm run bench -- [--duration 8] [--warmup 2] [--concurrency 1,16,64,256]
//                    [--workloads uniform,hot,retries] [--rate 0] [--json report.json]
//
// It recreates the databases holdfast_bench and holdfast_bench_naive on the PostgreSQL server
// of BENCH_ADMIN_DATABASE_URL (default postgres://postgres@127.0.0.1:5432/postgres), starts a
// private nats-server, the Holdfast ledger (with and without group commit) and the naive
// service as child processes, and runs one load-generator process per measurement. After every
// Holdfast run the ledger invariants are checked; a violation fails the whole run.
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { writeFile } from "node:fs/promises";
import { cpus } from "node:os";
import { parseArgs, promisify } from "node:util";
import { setTimeout as sleep } from "node:timers/promises";
import pg from "pg";
import pino from "pino";
import { createPool } from "../services/common/src/pg.js";
import { createApiKey, createTenant } from "../services/ledger/src/auth/api-keys.js";
import { checkInvariants } from "../services/ledger/src/invariants.js";
import { migrate } from "../services/ledger/src/migrate.js";
import { freePort, startNatsServer } from "../scripts/nats-server.js";
import { checkNaiveInvariants, naive_schema } from "./naive-service.js";
import { printReport, type Row } from "./report.js";

const { values: args } = parseArgs({
  options: {
    duration: { type: "string", default: "8" },
    warmup: { type: "string", default: "2" },
    concurrency: { type: "string", default: "1,16,64,256" },
    workloads: { type: "string", default: "uniform,hot,retries" },
    rate: { type: "string", default: "0" },
    json: { type: "string", default: "" },
  },
});

const wallets_total = 10_000;
const wallet_funds = 1_000_000_000n;
const hot_funds = 10n ** 15n;
const ready_timeout_ms = 30_000;
/** Connections per service (both ledgers and the naive one): all fit in max_connections 100. */
const service_pool_max = 16;
const adminUrl = process.env["BENCH_ADMIN_DATABASE_URL"] ?? "postgres://postgres@127.0.0.1:5432/postgres";
const logger = pino({ level: "silent" });
const children: ChildProcess[] = [];

function databaseUrl(name: string): string {
  const url = new URL(adminUrl);
  url.pathname = `/${name}`;
  return url.toString();
}

async function recreate(name: string): Promise<string> {
  const admin = new pg.Client({ connectionString: adminUrl });
  await admin.connect();
  await admin.query(`drop database if exists ${name} with (force)`);
  await admin.query(`create database ${name}`);
  await admin.end();
  return databaseUrl(name);
}

/** The ledger database: migrated, one tenant, a writer key, 10,000 funded wallets and a hot one. */
async function prepareLedger(): Promise<{ url: string; pool: pg.Pool; key: string; tenantId: string }> {
  const url = await recreate("holdfast_bench");
  const pool = createPool({ databaseUrl: url, pgPoolMax: 4, pgConnectTimeoutMs: 5000, pgStatementTimeoutMs: 600_000 }, logger);
  await migrate(pool);
  const { tenantId } = await createTenant(pool, "bench");
  const { secret } = await createApiKey(pool, { tenantId, name: "bench", role: "writer" });
  // Funding goes through the ledger's own command function, so the invariants cover it.
  await pool.query(
    `select ledger_command($1, 'Deposit', 'fund-' || i, '\\x00', now(),
       jsonb_build_object('wallet_id', case when i = $2 then 'hot' else 'w' || i end, 'asset', 'USD',
         'amount', case when i = $2 then $4::text else $3::text end, 'transfer_id', gen_random_uuid()))
       from generate_series(0, $2) i`,
    [tenantId, wallets_total, wallet_funds.toString(), hot_funds.toString()],
  );
  return { url, pool, key: secret, tenantId };
}

async function prepareNaive(): Promise<{ url: string; pool: pg.Pool }> {
  const url = await recreate("holdfast_bench_naive");
  const pool = new pg.Pool({ connectionString: url, max: 4 });
  await pool.query(naive_schema);
  await pool.query(`insert into balances (wallet_id, balance)
                    select case when i = $1 then 'hot' else 'w' || i end, case when i = $1 then $3::bigint else $2::bigint end
                      from generate_series(0, $1) i`, [wallets_total, wallet_funds.toString(), hot_funds.toString()]);
  await pool.query(`insert into journal (wallet_id, kind, amount) select wallet_id, 'deposit', balance from balances`);
  await pool.query("create table bench_hot_row (id int primary key, balance bigint not null)");
  await pool.query("insert into bench_hot_row values (1, $1)", [hot_funds.toString()]);
  return { url, pool };
}

function startChild(name: string, argv: string[], env: Record<string, string>): ChildProcess {
  const child = spawn(process.execPath, argv, { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "inherit"] });
  child.on("exit", (code) => code && code !== 0 && process.stderr.write(`${name} exited with ${code}\n`));
  children.push(child);
  return child;
}

async function waitReady(url: string): Promise<void> {
  const deadline = Date.now() + ready_timeout_ms;
  while (Date.now() < deadline) {
    const ok = await fetch(`${url}/readyz`).then((r) => r.ok, () => false);
    if (ok) return;
    await sleep(100);
  }
  throw new Error(`${url} did not become ready`);
}

async function startLedger(dbUrl: string, natsUrl: string, groupCommit: boolean): Promise<string> {
  const port = await freePort();
  startChild(`ledger (group commit ${groupCommit ? "on" : "off"})`, ["dist/services/ledger/src/main.js"], {
    DATABASE_URL: dbUrl,
    NATS_URL: natsUrl,
    HOLDFAST_PORT: String(port),
    HOLDFAST_HOST: "127.0.0.1",
    HOLDFAST_GROUP_COMMIT: groupCommit ? "on" : "off",
    HOLDFAST_MAX_IN_FLIGHT: "4096",
    HOLDFAST_PG_POOL_MAX: String(service_pool_max),
    LOG_LEVEL: "warn",
  });
  await waitReady(`http://127.0.0.1:${port}`);
  return `127.0.0.1:${port}`;
}

async function startNaive(dbUrl: string): Promise<string> {
  const port = await freePort();
  const child = startChild("naive service", ["dist/bench/naive-main.js", "--port", String(port), "--database", dbUrl], {});
  await new Promise<void>((resolve) => child.stdout!.once("data", () => resolve()));
  return `127.0.0.1:${port}`;
}

interface LoadResult {
  perSecond: number;
  p50: number;
  p95: number;
  p99: number;
  refused: number;
  conflict: number;
  errors: number;
  replays: number;
  commands: number;
  errorSample: string;
}

async function runLoad(options: string[]): Promise<LoadResult> {
  const { stdout } = await promisify(execFile)(process.execPath, ["dist/bench/loadgen.js", ...options], { maxBuffer: 1 << 20 });
  return JSON.parse(stdout.trim().split("\n").at(-1)!) as LoadResult;
}

async function machineFacts(pool: pg.Pool): Promise<Record<string, string>> {
  const settings = await pool.query<{ name: string; setting: string; unit: string | null }>(
    `select name, setting, unit from pg_settings
      where name in ('synchronous_commit', 'shared_buffers', 'max_connections', 'wal_sync_method', 'fsync', 'commit_delay')`,
  );
  const version = await pool.query<{ v: string }>("select current_setting('server_version') as v");
  const fsync = await promisify(execFile)("/usr/lib/postgresql/15/bin/pg_test_fsync", ["-s", "1", "-f", "/tmp/holdfast-bench-fsync"])
    .then(({ stdout }) => /fdatasync\s+[\d.]+ ops\/sec\s+(\d+) usecs\/op/.exec(stdout)?.[1] ?? "?", () => "not measured (pg_test_fsync not found)");
  return {
    cores: String(cpus().length),
    cpu: cpus()[0]?.model ?? "?",
    postgres: version.rows[0]?.v ?? "?",
    "fdatasync (pg_test_fsync, one 8 kB write)": fsync === "?" || fsync.startsWith("not") ? fsync : `${fsync} µs`,
    ...Object.fromEntries(settings.rows.map((r) => [r.name, `${r.setting}${r.unit ? ` ${r.unit}` : ""}`])),
  };
}

async function main(): Promise<void> {
  const concurrencies = args.concurrency.split(",").map(Number);
  const workloads = args.workloads.split(",");
  const base = ["--duration", args.duration, "--warmup", args.warmup, "--rate", args.rate, "--wallets", String(wallets_total)];
  const ledgerDb = await prepareLedger();
  const naiveDb = await prepareNaive();
  const nats = await startNatsServer();
  const holdfast = await startLedger(ledgerDb.url, nats.url, true);
  const holdfastSolo = workloads.includes("hot") ? await startLedger(ledgerDb.url, nats.url, false) : null;
  const naive = await startNaive(naiveDb.url);
  const rows: Row[] = [];
  let failed = false;

  for (const workload of workloads) {
    for (const concurrency of concurrencies) {
      const common = [...base, "--workload", workload, "--concurrency", String(concurrency)];
      const systems: [string, string[], () => Promise<string[]>][] = [
        ["holdfast", ["--target", holdfast, "--key", ledgerDb.key], () => checkInvariants(ledgerDb.pool)],
        ["naive service", ["--target", naive], () => checkNaiveInvariants(naiveDb.pool)],
      ];
      if (workload === "hot" && holdfastSolo) {
        systems.splice(1, 0, ["holdfast, group commit off", ["--target", holdfastSolo, "--key", ledgerDb.key], () => checkInvariants(ledgerDb.pool)]);
        systems.push(["raw hot row", ["--raw", naiveDb.url], async () => []]);
      }
      if (workload === "hot") {
        const core = ["--core", ledgerDb.url, "--tenant", ledgerDb.tenantId];
        systems.push(["holdfast core, no RPC", [...core, "--group-commit", "on"], () => checkInvariants(ledgerDb.pool)]);
        systems.push(["holdfast core, no RPC, group commit off", [...core, "--group-commit", "off"], () => checkInvariants(ledgerDb.pool)]);
      }
      for (const [system, options, check] of systems) {
        const result = await runLoad([...common, ...options]);
        const violations = await check();
        failed ||= violations.length > 0;
        rows.push({ workload, concurrency, system, ...result, invariants: violations.length === 0 ? "ok" : violations.join("; ") });
        process.stderr.write(`${workload} c=${concurrency} ${system}: ${Math.round(result.perSecond)}/s p99 ${result.p99.toFixed(1)} ms\n`);
      }
    }
  }
  const facts = await machineFacts(ledgerDb.pool);
  printReport(rows, facts, { duration: args.duration, warmup: args.warmup, rate: args.rate });
  if (args.json) await writeFile(args.json, JSON.stringify({ facts, rows }, null, 2));
  for (const child of children) child.kill("SIGTERM");
  await nats.close();
  await ledgerDb.pool.end();
  await naiveDb.pool.end();
  if (failed) {
    process.stderr.write("an invariant was violated: see the table\n");
    process.exitCode = 1;
  }
}

await main().catch((err: unknown) => {
  for (const child of children) child.kill("SIGKILL");
  process.stderr.write(`bench failed: ${err instanceof Error ? err.stack : String(err)}\n`);
  process.exitCode = 1;
});
