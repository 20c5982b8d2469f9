// npm run bench: Holdfast against its baselines, in one invocation, on one database server.
//
//   npm run bench -- [--duration 8] [--warmup 2] [--concurrency 1,16,64,256]
//                    [--workloads uniform,retries,hot] [--systems holdfast,solo,naive,raw,core]
//                    [--rate 0] [--client grpc-js|connect] [--nats on|off] [--json report.json]
//                    [--database holdfast_bench] [--wallets 10000]
//
// It recreates the databases holdfast_bench and holdfast_bench_naive on the PostgreSQL server
// of BENCH_ADMIN_DATABASE_URL (default postgres://postgres@127.0.0.1:5432/postgres), starts a
// private nats-server (if one is on PATH), the Holdfast ledger with group commit on and off
// ("solo") and the naive service as child processes, and runs one load-generator process per
// row; "raw" is the raw hot-row baseline, "core" the ledger core without RPC. After every row
// the invariants are checked; a violation makes the invocation exit 1. See bench/README.md.
import { writeFile } from "node:fs/promises";
import { parseArgs } from "node:util";
import type pg from "pg";
import { startNatsServer } from "@holdfast/testing/nats-server";
import { checkInvariants } from "@holdfast/ledger/invariants";
import { connectionsFree, prepareLedgerDatabase, prepareNaiveDatabase, WALLETS_TOTAL_DEFAULT, type LedgerDatabase } from "./databases.js";
import { machineFacts, measureFdatasyncUs } from "./machine.js";
import { checkNaiveInvariants } from "./naive-service.js";
import { emptyResult, type LoadResult } from "./measure.js";
import { runLoadgen, startLedger, startNaive, stopAll, type Service } from "./processes.js";
import { reportText, SYSTEMS, targetLines, type Row, type RunSettings } from "./report.js";
import { CLIENT_KINDS, CONNECTIONS_PER_CLIENT } from "./rpc-client.js";
import { WORKLOAD_NAMES } from "./workloads.js";

const { values: args } = parseArgs({
  options: {
    duration: { type: "string", default: "8" },
    warmup: { type: "string", default: "2" },
    concurrency: { type: "string", default: "1,16,64,256" },
    workloads: { type: "string", default: "uniform,retries,hot" },
    systems: { type: "string", default: "holdfast,solo,naive,raw,core" },
    rate: { type: "string", default: "0" },
    client: { type: "string", default: "grpc-js" },
    json: { type: "string", default: "" },
    database: { type: "string", default: "holdfast_bench" },
    nats: { type: "string", default: "on" },
    wallets: { type: "string", default: String(WALLETS_TOTAL_DEFAULT) },
  },
});

/** PostgreSQL connections per service process (each ledger, the naive service, the core rows). */
const SERVICE_POOL_MAX = 16;
/** Characters of a failed run's error kept for the report. */
const FAILURE_TEXT_LENGTH_MAX = 200;
/** Funded wallets at most: funding is one statement, and 10^6 of them take minutes. */
const WALLETS_MAX = 1_000_000;
/** Callers per row: more would exceed the services' in-flight bound and this machine's memory. */
const CONCURRENCY_MAX = 4096;
/** The `--systems` names and the table rows they select. */
const SYSTEM_FLAGS = ["holdfast", "solo", "naive", "raw", "core"] as const;
/** Which systems run under which workload: the baselines only where the issue compares them. */
const WORKLOAD_SYSTEMS: Record<string, readonly (typeof SYSTEM_FLAGS)[number][]> = {
  uniform: ["holdfast", "solo", "naive"],
  hot: ["holdfast", "solo", "naive", "raw", "core"],
  retries: ["holdfast", "naive"],
};

interface Context {
  ledgerDb: LedgerDatabase;
  naiveDb: { url: string; pool: pg.Pool };
  holdfast: Service;
  holdfastSolo: Service | null;
  naive: Service;
}

interface Planned {
  system: string;
  argv: string[];
  check: () => Promise<string[]>;
}

const STARTED_MS = performance.now();

/** A progress line on stderr, stamped with the seconds since the start. */
function progress(text: string): void {
  process.stderr.write(`[${((performance.now() - STARTED_MS) / 1000).toFixed(1)} s] ${text}\n`);
}

function listOption<T extends string>(name: string, value: string, allowed: readonly T[]): T[] {
  const items = value.split(",").map((s) => s.trim()).filter(Boolean);
  const bad = items.filter((i) => !allowed.includes(i as T));
  if (bad.length > 0 || items.length === 0) throw new Error(`--${name}: expected some of ${allowed.join(",")}, got ${value}`);
  return items as T[];
}

function numberOption(name: string, value: string, min: number, max: number): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n < min || n > max) throw new Error(`--${name}: expected a number in [${min}, ${max}], got ${value}`);
  return n;
}

async function checkRawRow(pool: pg.Pool): Promise<string[]> {
  const r = await pool.query<{ balance: string }>("select balance from bench_hot_row where id = 1");
  return BigInt(r.rows[0]!.balance) < 0n ? ["raw hot row below zero"] : [];
}

/** The rows of one workload at one concurrency, in the order they run. */
async function plan(ctx: Context, workload: string, concurrency: number, chosen: string[]): Promise<Planned[]> {
  const holdfastCheck = () => checkInvariants(ctx.ledgerDb.pool);
  const key = ["--key", ctx.ledgerDb.apiKey, "--client", args.client];
  const core = ["--core", ctx.ledgerDb.url, "--tenant", ctx.ledgerDb.tenantId, "--pool-max", String(SERVICE_POOL_MAX)];
  const wanted = WORKLOAD_SYSTEMS[workload]!.filter((s) => chosen.includes(s));
  const labels = [ctx.holdfast, ctx.holdfastSolo, ctx.naive].flatMap((s) => (s ? [`${s.name}=${s.pid}`] : [])).join(",");
  const out: Planned[] = [];
  for (const flag of wanted) {
    if (flag === "holdfast") out.push({ system: SYSTEMS.holdfast, argv: ["--target", ctx.holdfast.target, ...key, "--watch-pid", String(ctx.holdfast.pid)], check: holdfastCheck });
    if (flag === "solo" && ctx.holdfastSolo) {
      out.push({ system: SYSTEMS.holdfastSolo, argv: ["--target", ctx.holdfastSolo.target, ...key, "--watch-pid", String(ctx.holdfastSolo.pid)], check: holdfastCheck });
    }
    if (flag === "naive") {
      out.push({ system: SYSTEMS.naive, argv: ["--target", ctx.naive.target, "--client", args.client, "--watch-pid", String(ctx.naive.pid)], check: () => checkNaiveInvariants(ctx.naiveDb.pool) });
    }
    if (flag === "raw") {
      const clients = Math.min(concurrency, await connectionsFree(ctx.naiveDb.pool));
      out.push({ system: SYSTEMS.raw, argv: ["--raw", ctx.naiveDb.url, "--raw-clients", String(clients)], check: () => checkRawRow(ctx.naiveDb.pool) });
    }
    if (flag === "core") {
      out.push({ system: SYSTEMS.core, argv: [...core, "--group-commit", "on"], check: holdfastCheck });
      out.push({ system: SYSTEMS.coreSolo, argv: [...core, "--group-commit", "off"], check: holdfastCheck });
    }
  }
  const databases = [new URL(ctx.ledgerDb.url).pathname.slice(1), new URL(ctx.naiveDb.url).pathname.slice(1)].join(",");
  return out.map((p) => ({ ...p, argv: [...p.argv, "--label-pids", labels, "--pg-databases", databases] }));
}

/** A row whose load generator died: kept in the table (and failing the invocation), not fatal. */
function failedRun(err: unknown): LoadResult {
  const lines = (err instanceof Error ? err.message : String(err)).split("\n");
  const message = lines.find((l) => /error/i.test(l)) ?? lines[0] ?? "";
  return emptyResult(message.slice(0, FAILURE_TEXT_LENGTH_MAX));
}

/**
 * Runs every row. Concurrency is the outer loop, so that the rows compared with each other
 * (uniform and retries at 64, say) run minutes apart at most and meet a database of about the
 * same size; the table is sorted back by workload afterwards.
 */
async function runMatrix(ctx: Context, settings: RunSettings, workloads: string[], concurrencies: number[], chosen: string[]): Promise<Row[]> {
  const rows: Row[] = [];
  const base = ["--duration", String(settings.durationSeconds), "--warmup", String(settings.warmupSeconds), "--rate", String(settings.ratePerSecond), "--wallets", String(settings.walletsTotal)];
  const runMs = (settings.durationSeconds + settings.warmupSeconds) * 1000;
  for (const concurrency of concurrencies) {
    for (const workload of workloads) {
      for (const { system, argv, check } of await plan(ctx, workload, concurrency, chosen)) {
        const result = await runLoadgen([...base, "--workload", workload, "--concurrency", String(concurrency), ...argv], runMs).catch(failedRun);
        const violations = await check();
        rows.push({ workload, concurrency, system, ...result, violations });
        const verdict = violations.length === 0 ? "invariants ok" : `INVARIANTS VIOLATED: ${violations.join("; ")}`;
        const failure = result.failure ? `RUN FAILED: ${result.failure}; ` : "";
        progress(`${workload} ${concurrency} ${system}: ${failure}${Math.round(result.perSecond)}/s p99 ${result.p99.toFixed(1)} ms, ${result.errors} errors, ${verdict}`);
      }
    }
  }
  const order = (r: Row) => workloads.indexOf(r.workload) * CONCURRENCY_MAX + concurrencies.indexOf(r.concurrency);
  return rows.map((row, i) => ({ row, i })).sort((a, b) => order(a.row) - order(b.row) || a.i - b.i).map(({ row }) => row);
}

/** Where the ledgers' outbox relay publishes while nothing listens: events wait in the outbox. */
const NATS_URL_UNREACHABLE = "nats://127.0.0.1:1";

/**
 * A private nats-server when one is on PATH, so that the relay publishes every event during the
 * runs as in production; otherwise (or with --nats off) the ledgers run as in a NATS outage,
 * their events waiting in the outbox, which shows what publishing costs.
 */
async function startNats(wanted: boolean): Promise<{ url: string; note: string; close(): Promise<void> }> {
  if (!wanted) return { url: NATS_URL_UNREACHABLE, note: "off (--nats off): events wait in the outbox, nothing is published during the runs", close: async () => undefined };
  try {
    const nats = await startNatsServer();
    return { url: nats.url, note: "private nats-server (the outbox relay publishes during the runs)", close: () => nats.close() };
  } catch (err) {
    const note = `no nats-server (${(err as Error).message}): events wait in the outbox, nothing is published during the runs`;
    return { url: NATS_URL_UNREACHABLE, note, close: async () => undefined };
  }
}

async function main(): Promise<void> {
  const workloads = listOption("workloads", args.workloads, WORKLOAD_NAMES);
  const chosen = listOption("systems", args.systems, SYSTEM_FLAGS);
  const concurrencies = args.concurrency.split(",").map((c) => numberOption("concurrency", c, 1, CONCURRENCY_MAX));
  const settings: RunSettings = {
    durationSeconds: numberOption("duration", args.duration, 0.1, 3600),
    warmupSeconds: numberOption("warmup", args.warmup, 0, 600),
    ratePerSecond: numberOption("rate", args.rate, 0, 1_000_000),
    client: listOption("client", args.client, CLIENT_KINDS)[0]!,
    connectionsPerClient: CONNECTIONS_PER_CLIENT,
    walletsTotal: numberOption("wallets", args.wallets, 1, WALLETS_MAX),
  };
  progress("measuring the disk's fdatasync with pg_test_fsync");
  const fsyncUs = await measureFdatasyncUs();
  progress(`creating ${args.database} and ${args.database}_naive (${settings.walletsTotal} funded wallets each)`);
  const ledgerDb = await prepareLedgerDatabase(args.database, settings.walletsTotal);
  const naiveDb = await prepareNaiveDatabase(`${args.database}_naive`, settings.walletsTotal);
  progress("starting nats-server, the ledgers and the naive service");
  const nats = await startNats(listOption("nats", args.nats, ["on", "off"] as const)[0] === "on");
  try {
    const ledger = { databaseUrl: ledgerDb.url, natsUrl: nats.url, poolMax: SERVICE_POOL_MAX };
    const holdfast = await startLedger({ ...ledger, name: "holdfast ledger", groupCommit: true });
    const holdfastSolo = chosen.includes("solo") ? await startLedger({ ...ledger, name: "holdfast ledger, group commit off", groupCommit: false }) : null;
    const naive = await startNaive(naiveDb.url, SERVICE_POOL_MAX);
    const rows = await runMatrix({ ledgerDb, naiveDb, holdfast, holdfastSolo, naive }, settings, workloads, concurrencies, chosen);
    const facts = { ...(await machineFacts(ledgerDb.pool, fsyncUs)), nats: nats.note };
    process.stdout.write(reportText(rows, facts, settings, fsyncUs));
    const ok = rows.every((r) => r.violations.length === 0 && !r.failure);
    if (args.json) await writeFile(args.json, JSON.stringify({ ok, facts, settings, rows, targets: targetLines(rows, fsyncUs) }, null, 2) + "\n");
    if (!ok) {
      process.stderr.write("an invariant was violated or a run failed: see the report\n");
      process.exitCode = 1;
    }
  } finally {
    progress("stopping");
    await stopAll();
    await nats.close();
    await ledgerDb.pool.end();
    await naiveDb.pool.end();
    progress("done");
  }
}

await main().catch((err: unknown) => {
  process.stderr.write(`bench failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exitCode = 1;
});
