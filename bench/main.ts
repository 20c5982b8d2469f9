// npm run bench: Holdfast against its baselines, in one invocation, on one database server.
//
//   npm run bench -- [--duration 8] [--warmup 2] [--concurrency 1,16,64,256]
//                    [--workloads uniform,retries,hot] [--systems holdfast,solo,naive,raw,core,empty-rpc,plain]
//                    [--rate 0] [--client grpc-js|connect] [--nats on|off] [--json report.json]
//                    [--database holdfast_bench] [--wallets 10000]
//                    [--baseline DIR] [--grants 0] [--alert off|on] [--cpu-prof DIR]
//
// It recreates the databases holdfast_bench and holdfast_bench_naive on the PostgreSQL server
// of BENCH_ADMIN_DATABASE_URL (default postgres://postgres@127.0.0.1:5432/postgres), starts a
// private nats-server (if one is on PATH), the Holdfast ledger with group commit on and off
// ("solo") and the naive service as child processes, and runs one load-generator process per
// row; "raw" is the raw hot-row baseline, "core" the ledger core without RPC. After every row
// the invariants are checked; a violation makes the invocation exit 1. See bench/README.md.
//
// Rows that compare Holdfast with itself, next to the "holdfast" row of each workload:
//   --baseline DIR  "holdfast@baseline": the ledger of another built checkout (baseline.ts) on
//                   its own database holdfast_bench_baseline, set up by that checkout's code.
//   --grants N      "holdfast (N grants/wallet)": the same ledger process, on a second tenant
//                   whose wallets hold their funds in N grants each (uniform, hot).
//   --systems …,nolimit  "holdfast, rate limits off": a ledger with both rate limits 0 (uniform,
//                   hot); every other ledger runs its rate limiter with limits no row reaches.
//   --alert on      "holdfast, balance alert on": the same ledger process, on a third tenant
//                   with the first's wallets and deposits and one tenant-wide balance alert
//                   (USD, below ALERT_BELOW, which no wallet reaches) (uniform, hot).
//   --workloads pairs,metered  Reserve → Capture pairs against ReserveUsage → CaptureUsage
//                   pairs on a rate card written at setup, both on the uniform wallets.
//
// Baselines besides naive and raw:
//   --systems …,plain      "plain double entry" (plain-double-entry.ts), under the transfers
//                   workload: one SQL function per transfer, against the core's Transfer.
//   --systems …,empty-rpc  "empty RPC" (empty-rpc-main.ts), under hot: the ledger's server, auth
//                   and interceptors with constant handlers, against the hot wallet's service.
//   --cpu-prof DIR  the "holdfast" ledger runs under node's --cpu-prof; once it has stopped, the
//                   report ends with its top costs (cpu-profile.ts) and DIR keeps the profile.
import { mkdir, readdir, readFile, writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import type pg from "pg";
import { startNatsServer } from "@holdfast/testing/nats-server";
import { checkInvariants } from "@holdfast/ledger/invariants";
import { loadBaseline } from "./baseline.js";
import { addAlertTenant, addGrantsTenant, addRateCard, connectionsFree, prepareLedgerDatabase, prepareNaiveDatabase, WALLETS_TOTAL_DEFAULT, type LedgerDatabase } from "./databases.js";
import { machineFacts, measureFdatasyncUs } from "./machine.js";
import { checkNaiveInvariants } from "./naive-service.js";
import { emptyResult, type LoadResult } from "./measure.js";
import { profileText, summarizeCpuProfile, type CpuProfile } from "./cpu-profile.js";
import { checkPlainInvariants } from "./plain-double-entry.js";
import { runLoadgen, startEmptyRpc, startLedger, startNaive, stopAll, type Service } from "./processes.js";
import { comparisonLines, grantsSystem, reportText, SYSTEMS, targetLines, type Row, type RunSettings } from "./report.js";
import { CLIENT_KINDS, CONNECTIONS_PER_CLIENT, putTenantAlert } from "./rpc-client.js";
import { ASSET, TRANSFER_WALLETS, WORKLOAD_NAMES } from "./workloads.js";

const { values: args } = parseArgs({
  options: {
    duration: { type: "string", default: "8" },
    warmup: { type: "string", default: "2" },
    concurrency: { type: "string", default: "1,16,64,256" },
    workloads: { type: "string", default: "uniform,retries,hot" },
    systems: { type: "string", default: "holdfast,solo,naive,raw,core,empty-rpc,plain" },
    rate: { type: "string", default: "0" },
    client: { type: "string", default: "grpc-js" },
    json: { type: "string", default: "" },
    database: { type: "string", default: "holdfast_bench" },
    nats: { type: "string", default: "on" },
    wallets: { type: "string", default: String(WALLETS_TOTAL_DEFAULT) },
    baseline: { type: "string", default: "" },
    grants: { type: "string", default: "0" },
    alert: { type: "string", default: "off" },
    "cpu-prof": { type: "string", default: "" },
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
/**
 * The balance alert of --alert on: below 1 minor unit, so every change evaluates it and none
 * crosses it (the funds are far larger than a run spends): what the evaluation itself costs.
 */
const ALERT_BELOW = 1n;
/** Grants per wallet at most (--grants): each is one command per wallet at setup. */
const GRANTS_PER_WALLET_MAX = 100;
/** The baseline ledger's NATS namespace: its database is another deployment, with a stream of its own. */
const BASELINE_NAMESPACE = "holdfast-baseline";

/**
 * The `--systems` names and the table rows they select; "baseline", "grants" and "alert" are
 * added by --baseline, --grants and --alert on, and need them.
 */
const SYSTEM_FLAGS = ["holdfast", "baseline", "grants", "nolimit", "alert", "solo", "naive", "raw", "core", "plain", "empty-rpc"] as const;
/** Which systems run under which workload: the baselines only where the issue compares them. */
const WORKLOAD_SYSTEMS: Record<string, readonly (typeof SYSTEM_FLAGS)[number][]> = {
  uniform: ["holdfast", "baseline", "grants", "nolimit", "alert", "solo", "naive"],
  hot: ["holdfast", "baseline", "grants", "nolimit", "alert", "solo", "naive", "empty-rpc", "raw", "core"],
  retries: ["holdfast", "baseline", "naive"],
  pairs: ["holdfast"],
  metered: ["holdfast"],
  transfers: ["holdfast", "core", "plain"],
};

interface Context {
  ledgerDb: LedgerDatabase;
  naiveDb: { url: string; pool: pg.Pool };
  holdfast: Service;
  holdfastSolo: Service | null;
  holdfastNoLimit: Service | null;
  naive: Service;
  /** The empty-RPC baseline's process, when a chosen workload runs it. */
  emptyRpc: Service | null;
  /** --baseline: the other checkout's ledger, its database and its own invariant check. */
  baseline: { service: Service; db: LedgerDatabase; check: () => Promise<string[]> } | null;
  /** --grants: the tenant whose wallets hold their funds in grants, and the row's name. */
  grants: { apiKey: string; system: string } | null;
  /** --alert on: the writer key of the tenant with the balance alert. */
  alertKey: string | null;
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
  const services = [ctx.holdfast, ctx.baseline?.service, ctx.holdfastNoLimit, ctx.holdfastSolo, ctx.naive, ctx.emptyRpc];
  const labels = services.flatMap((s) => (s ? [`${s.name}=${s.pid}`] : [])).join(",");
  const holdfastArgv = ["--target", ctx.holdfast.target, "--client", args.client, "--watch-pid", String(ctx.holdfast.pid)];
  const out: Planned[] = [];
  for (const flag of wanted) {
    if (flag === "holdfast") out.push({ system: SYSTEMS.holdfast, argv: [...holdfastArgv, "--key", ctx.ledgerDb.apiKey], check: holdfastCheck });
    if (flag === "baseline" && ctx.baseline) {
      const { service, db, check } = ctx.baseline;
      out.push({ system: SYSTEMS.baseline, argv: ["--target", service.target, "--key", db.apiKey, "--client", args.client, "--watch-pid", String(service.pid)], check });
    }
    if (flag === "grants" && ctx.grants) out.push({ system: ctx.grants.system, argv: [...holdfastArgv, "--key", ctx.grants.apiKey], check: holdfastCheck });
    if (flag === "alert" && ctx.alertKey) out.push({ system: SYSTEMS.alert, argv: [...holdfastArgv, "--key", ctx.alertKey], check: holdfastCheck });
    if (flag === "nolimit" && ctx.holdfastNoLimit) {
      out.push({ system: SYSTEMS.holdfastNoLimit, argv: ["--target", ctx.holdfastNoLimit.target, ...key, "--watch-pid", String(ctx.holdfastNoLimit.pid)], check: holdfastCheck });
    }
    if (flag === "solo" && ctx.holdfastSolo) {
      out.push({ system: SYSTEMS.holdfastSolo, argv: ["--target", ctx.holdfastSolo.target, ...key, "--watch-pid", String(ctx.holdfastSolo.pid)], check: holdfastCheck });
    }
    if (flag === "naive") {
      out.push({ system: SYSTEMS.naive, argv: ["--target", ctx.naive.target, "--client", args.client, "--watch-pid", String(ctx.naive.pid)], check: () => checkNaiveInvariants(ctx.naiveDb.pool) });
    }
    if (flag === "empty-rpc" && ctx.emptyRpc) {
      // Nothing to check: its handlers write nothing.
      out.push({ system: SYSTEMS.emptyRpc, argv: ["--target", ctx.emptyRpc.target, ...key, "--watch-pid", String(ctx.emptyRpc.pid)], check: async () => [] });
    }
    if (flag === "plain") {
      out.push({ system: SYSTEMS.plain, argv: ["--plain", ctx.naiveDb.url, "--pool-max", String(SERVICE_POOL_MAX)], check: () => checkPlainInvariants(ctx.naiveDb.pool) });
    }
    if (flag === "raw") {
      const clients = Math.min(concurrency, await connectionsFree(ctx.naiveDb.pool));
      out.push({ system: SYSTEMS.raw, argv: ["--raw", ctx.naiveDb.url, "--raw-clients", String(clients)], check: () => checkRawRow(ctx.naiveDb.pool) });
    }
    if (flag === "core") {
      out.push({ system: SYSTEMS.core, argv: [...core, "--group-commit", "on"], check: holdfastCheck });
      // A Transfer touches two wallets and always runs alone, so group commit off would be the same row.
      if (workload !== "transfers") out.push({ system: SYSTEMS.coreSolo, argv: [...core, "--group-commit", "off"], check: holdfastCheck });
    }
  }
  const databases = [ctx.ledgerDb.url, ctx.naiveDb.url, ...(ctx.baseline ? [ctx.baseline.db.url] : [])].map((u) => new URL(u).pathname.slice(1)).join(",");
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

/** Functions and packages the service profile lists. */
const PROFILE_TOP = 25;

/** The .cpuprofile node wrote for process `pid` into `dir` (CPU.<date>.<time>.<pid>.<thread>.<seq>.cpuprofile), summarized. */
async function ledgerProfile(dir: string, pid: number): Promise<{ file: string; summary: ReturnType<typeof summarizeCpuProfile> }> {
  const name = (await readdir(dir)).filter((f) => f.endsWith(".cpuprofile") && f.split(".")[3] === String(pid)).sort().at(-1);
  if (!name) throw new Error(`--cpu-prof: no profile of the ledger (pid ${pid}) in ${dir}; did it exit cleanly? see its log`);
  const file = join(dir, name);
  return { file, summary: summarizeCpuProfile(JSON.parse(await readFile(file, "utf8")) as CpuProfile, PROFILE_TOP) };
}

/**
 * The LedgerService calls a ledger answered since it started, from its /metrics
 * (holdfast_rpc_requests_total, every method and code); null when it cannot say.
 */
async function ledgerServiceCalls(target: string): Promise<number | null> {
  const text = await fetch(`http://${target}/metrics`).then((r) => (r.ok ? r.text() : ""), () => "");
  const lines = text.split("\n").filter((l) => l.startsWith("holdfast_rpc_requests_total{") && l.includes('service="holdfast.v1.LedgerService"'));
  return lines.length === 0 ? null : lines.reduce((sum, l) => sum + Number(l.slice(l.lastIndexOf(" ") + 1)), 0);
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

/** The --systems chosen, with "baseline", "grants" and "alert" added by --baseline, --grants and --alert on (and needing them). */
function chosenSystems(grantsPerWallet: number): string[] {
  const chosen: string[] = listOption("systems", args.systems, SYSTEM_FLAGS);
  const alert = listOption("alert", args.alert, ["off", "on"] as const)[0] === "on";
  if (args.baseline && !chosen.includes("baseline")) chosen.push("baseline");
  if (grantsPerWallet > 0 && !chosen.includes("grants")) chosen.push("grants");
  if (alert && !chosen.includes("alert")) chosen.push("alert");
  if (chosen.includes("alert") && !alert) throw new Error("--systems alert needs --alert on");
  if (chosen.includes("baseline") && !args.baseline) throw new Error("--systems baseline needs --baseline <dir>, a built checkout to compare with");
  if (chosen.includes("grants") && grantsPerWallet === 0) throw new Error("--systems grants needs --grants <n>, the grants per wallet");
  return chosen;
}

async function main(): Promise<void> {
  const workloads = listOption("workloads", args.workloads, WORKLOAD_NAMES);
  const grantsPerWallet = numberOption("grants", args.grants, 0, GRANTS_PER_WALLET_MAX);
  if (!Number.isInteger(grantsPerWallet)) throw new Error(`--grants: expected a whole number, got ${args.grants}`);
  const chosen = chosenSystems(grantsPerWallet);
  const walletsTotal = numberOption("wallets", args.wallets, 1, WALLETS_MAX);
  if (workloads.includes("transfers") && walletsTotal < TRANSFER_WALLETS) throw new Error(`--workloads transfers: needs --wallets ${TRANSFER_WALLETS} or more, got ${walletsTotal}`);
  const concurrencies = args.concurrency.split(",").map((c) => numberOption("concurrency", c, 1, CONCURRENCY_MAX));
  const settings: RunSettings = {
    durationSeconds: numberOption("duration", args.duration, 0.1, 3600),
    warmupSeconds: numberOption("warmup", args.warmup, 0, 600),
    ratePerSecond: numberOption("rate", args.rate, 0, 1_000_000),
    client: listOption("client", args.client, CLIENT_KINDS)[0]!,
    connectionsPerClient: CONNECTIONS_PER_CLIENT,
    walletsTotal,
  };
  // Loaded first: a checkout that is not built fails the invocation before any setup.
  // A system's setup and process only when some chosen workload runs it.
  const runs = (system: string) => chosen.includes(system) && workloads.some((w) => WORKLOAD_SYSTEMS[w]!.some((s) => s === system));
  const baseline = runs("baseline") ? await loadBaseline(args.baseline) : null;
  progress("measuring the disk's fdatasync with pg_test_fsync");
  const fsyncUs = await measureFdatasyncUs();
  progress(`creating ${args.database} and ${args.database}_naive (${settings.walletsTotal} funded wallets each)`);
  const ledgerDb = await prepareLedgerDatabase(args.database, settings.walletsTotal);
  const naiveDb = await prepareNaiveDatabase(`${args.database}_naive`, settings.walletsTotal);
  if (workloads.includes("metered")) await addRateCard(ledgerDb);
  const grantsTenant = runs("grants");
  if (grantsTenant) progress(`adding the tenant bench_grants to ${args.database}: ${grantsPerWallet} grants on each of its ${settings.walletsTotal + 1} wallets`);
  const grants = grantsTenant ? await addGrantsTenant(ledgerDb, settings.walletsTotal, grantsPerWallet) : null;
  if (runs("alert")) progress(`adding the tenant bench_alert to ${args.database}: the same wallets and deposits, and a balance alert`);
  const alertTenant = runs("alert") ? await addAlertTenant(ledgerDb, settings.walletsTotal) : null;
  if (baseline) progress(`creating ${args.database}_baseline with the code of ${baseline.dir} (${baseline.commit})`);
  const baselineDb = baseline ? await prepareLedgerDatabase(`${args.database}_baseline`, settings.walletsTotal, baseline.schema) : null;
  progress("starting nats-server, the ledgers and the naive service");
  const nats = await startNats(listOption("nats", args.nats, ["on", "off"] as const)[0] === "on");
  try {
    const ledger = { databaseUrl: ledgerDb.url, natsUrl: nats.url, poolMax: SERVICE_POOL_MAX, groupCommit: true, rateLimits: true };
    const cpuProfileDir = args["cpu-prof"] ? resolve(args["cpu-prof"]) : undefined;
    if (cpuProfileDir) await mkdir(cpuProfileDir, { recursive: true });
    const holdfast = await startLedger({ ...ledger, name: "holdfast ledger", ...(cpuProfileDir ? { cpuProfileDir } : {}) });
    const holdfastSolo = chosen.includes("solo") ? await startLedger({ ...ledger, name: "holdfast ledger, group commit off", groupCommit: false }) : null;
    const holdfastNoLimit = runs("nolimit") ? await startLedger({ ...ledger, name: "holdfast ledger, rate limits off", rateLimits: false }) : null;
    const baselineLedger =
      baseline && baselineDb
        ? {
            service: await startLedger({ ...ledger, databaseUrl: baselineDb.url, name: "baseline ledger", script: baseline.ledgerScript, namespace: BASELINE_NAMESPACE }),
            db: baselineDb,
            check: baseline.checkInvariants ? () => baseline.checkInvariants!(baselineDb.pool) : async () => [],
          }
        : null;
    if (alertTenant) await putTenantAlert(holdfast.target, alertTenant.adminKey, ASSET, ALERT_BELOW);
    const naive = await startNaive(naiveDb.url, SERVICE_POOL_MAX);
    const emptyRpc = runs("empty-rpc") ? await startEmptyRpc({ ...ledger, name: "empty RPC" }) : null;
    const context: Context = {
      ledgerDb,
      naiveDb,
      holdfast,
      holdfastSolo,
      holdfastNoLimit,
      naive,
      emptyRpc,
      baseline: baselineLedger,
      grants: grants ? { apiKey: grants.apiKey, system: grantsSystem(grantsPerWallet) } : null,
      alertKey: alertTenant?.apiKey ?? null,
    };
    const rows = await runMatrix(context, settings, workloads, concurrencies, chosen);
    const facts: Record<string, string> = { ...(await machineFacts(ledgerDb.pool, fsyncUs)), nats: nats.note };
    if (baseline) facts["baseline"] = baseline.note;
    // The profile is written when the ledger exits: count its calls, then stop the services before the report.
    const profiledCalls = cpuProfileDir ? await ledgerServiceCalls(holdfast.target) : null;
    await stopAll();
    const profile = cpuProfileDir ? { ...(await ledgerProfile(cpuProfileDir, holdfast.pid)), calls: profiledCalls } : null;
    process.stdout.write(reportText(rows, facts, settings, fsyncUs));
    if (profile) {
      const title = "## Service profile (the holdfast ledger from its start to its stop: every row it served, warm-ups and its start included)";
      const relayNote = chosen.includes("core") ? ["Its outbox relay also published the events of the core rows, which answered no call of it: profile without core for costs per call.", ""] : [];
      process.stdout.write(["", title, "", ...relayNote, ...profileText(profile.summary, profile.file, profile.calls), ""].join("\n"));
    }
    const ok = rows.every((r) => r.violations.length === 0 && !r.failure);
    const json = { ok, facts, settings, rows, targets: targetLines(rows, fsyncUs), comparisons: comparisonLines(rows), ...(profile ? { profile } : {}) };
    if (args.json) await writeFile(args.json, JSON.stringify(json, null, 2) + "\n");
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
    await baselineDb?.pool.end();
    progress("done");
  }
}

await main().catch((err: unknown) => {
  process.stderr.write(`bench failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exitCode = 1;
});
