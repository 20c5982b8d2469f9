// npm run bench:growth: what the ledger's size costs. The same command workload on an empty
// ledger database and on one loaded with N wallets and M journal rows (growth-load.ts), in one
// invocation, row against row; the listings' page times from the first page to the last of a
// wallet with many rows; and the database's bytes per million commands.
//
//   npm run bench:growth -- [--preload-wallets 1000000] [--preload-journal 5000000]
//                           [--preload-big-wallet-rows N] [--runs hot:64,uniform:64,uniform:1]
//                           [--duration 8] [--warmup 2] [--wallets 10000] [--page-size 100]
//                           [--page-repeats 15] [--database holdfast_growth] [--json report.json]
//
// Two databases on the server of BENCH_ADMIN_DATABASE_URL, each set up as npm run bench sets up
// its own (databases.ts: one tenant, a writer key, --wallets funded wallets and the hot one):
// <database>_empty, and <database>_loaded, which also holds the tenant bench_growth with the
// loaded wallets and rows. One ledger process per database (group commit on, a private
// nats-server each), and per run one load-generator process against each, the empty database first;
// both ledgers serve the bench tenant, whose commands are the same on both sides, so a row
// differs from its pair in the database's size alone.
//
// Checks: after loading, `holdfast verify --tenant` walks bench_growth's hash chain and checks
// its invariants; after every run the invariants of the bench tenant (the only one the runs
// write), on the empty database the whole database; at the end the whole loaded database, and
// `holdfast verify --tenant` walks the bench tenant's chain on both. A violation makes the
// invocation exit 1.
import { execFile } from "node:child_process";
import { writeFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { parseArgs } from "node:util";
import { createClient, type Client } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { LedgerService } from "@holdfast/gen/holdfast/v1/ledger_pb";
import { startNatsServer } from "@holdfast/testing/nats-server";
import { checkInvariants } from "@holdfast/ledger/invariants";
import type pg from "pg";
import { prepareLedgerDatabase, type LedgerDatabase } from "./databases.js";
import { checkGrowthLoad, defaultBigWalletRows, loadGrowthTenant, type GrowthLoad, type GrowthTenant } from "./growth-load.js";
import { machineFacts } from "./machine.js";
import { emptyResult, type LoadResult } from "./measure.js";
import { runLoadgen, startLedger, stopAll, type Service } from "./processes.js";
import { WORKLOAD_NAMES } from "./workloads.js";

const { values: args } = parseArgs({
  options: {
    "preload-wallets": { type: "string", default: "1000000" },
    "preload-journal": { type: "string", default: "5000000" },
    "preload-big-wallet-rows": { type: "string", default: "" },
    runs: { type: "string", default: "hot:64,uniform:64,uniform:1" },
    duration: { type: "string", default: "8" },
    warmup: { type: "string", default: "2" },
    wallets: { type: "string", default: "10000" },
    "page-size": { type: "string", default: "100" },
    "page-repeats": { type: "string", default: "15" },
    database: { type: "string", default: "holdfast_growth" },
    json: { type: "string", default: "" },
  },
});

const REPO_ROOT = fileURLToPath(new URL("../../", import.meta.url));
const SERVICE_POOL_MAX = 16;
/** Funded wallets of the bench tenant at most, as npm run bench allows. */
const WALLETS_MAX = 1_000_000;
/** The listings' page size at most (ListTransfers, ListHolds). */
const PAGE_SIZE_MAX = 500;
const CONCURRENCY_MAX = 4096;
/** The tables whose bytes the report breaks down: every one a command writes. */
const SIZED_TABLES = ["transfers", "events", "journal_chain", "idempotency_keys", "holds", "accounts", "wallets", "grants"] as const;
/** Timing one page: repeats of it at most, each a call through the ledger. */
const PAGE_REPEATS_MAX = 1000;

const STARTED_MS = performance.now();
function progress(text: string): void {
  process.stderr.write(`[${((performance.now() - STARTED_MS) / 1000).toFixed(1)} s] ${text}\n`);
}

function numberOption(name: string, value: string, min: number, max: number): number {
  const n = Number(value);
  if (value.trim() === "" || !Number.isFinite(n) || n < min || n > max) throw new Error(`--${name}: expected a number in [${min}, ${max}], got ${value}`);
  return n;
}

function wholeOption(name: string, value: string, min: number, max: number): number {
  const n = numberOption(name, value, min, max);
  if (!Number.isInteger(n)) throw new Error(`--${name}: expected a whole number, got ${value}`);
  return n;
}

/** --runs: workload:callers pairs. */
export function parseRuns(value: string): { workload: string; concurrency: number }[] {
  const runs = value.split(",").map((s) => s.trim()).filter(Boolean).map((item) => {
    const [workload, callers, extra] = item.split(":");
    if (!workload || !WORKLOAD_NAMES.includes(workload as (typeof WORKLOAD_NAMES)[number]) || callers === undefined || extra !== undefined) {
      throw new Error(`--runs: expected workload:callers pairs (workloads ${WORKLOAD_NAMES.join(",")}), got ${item}`);
    }
    return { workload, concurrency: wholeOption("runs", callers, 1, CONCURRENCY_MAX) };
  });
  if (runs.length === 0) throw new Error("--runs: expected at least one workload:callers pair");
  return runs;
}

interface Sizes {
  database: number;
  tables: Record<string, number>;
  /** The bench tenant's idempotency keys: one per command that wrote. */
  commands: number;
}

async function sizes(pool: pg.Pool, tenantId: string): Promise<Sizes> {
  const r = await pool.query<{ database: string; tables: Record<string, string>; commands: string }>(
    `select pg_database_size(current_database())::text as database,
            (select jsonb_object_agg(t, pg_total_relation_size(t::regclass)::text) from unnest($1::text[]) t) as tables,
            (select count(*) from idempotency_keys where tenant_id = $2)::text as commands`,
    [SIZED_TABLES, tenantId],
  );
  const row = r.rows[0]!;
  return { database: Number(row.database), tables: Object.fromEntries(Object.entries(row.tables).map(([k, v]) => [k, Number(v)])), commands: Number(row.commands) };
}

/** The growth of a run, in bytes per million commands that wrote. */
interface Growth {
  commands: number;
  databaseBytesPerMillion: number;
  tableBytesPerMillion: Record<string, number>;
}

function growthBetween(before: Sizes, after: Sizes): Growth {
  const commands = after.commands - before.commands;
  const perMillion = (bytes: number) => (commands > 0 ? Math.round((bytes / commands) * 1e6) : 0);
  return {
    commands,
    databaseBytesPerMillion: perMillion(after.database - before.database),
    tableBytesPerMillion: Object.fromEntries(SIZED_TABLES.map((t) => [t, perMillion(after.tables[t]! - before.tables[t]!)])),
  };
}

interface Side {
  name: "empty" | "loaded";
  db: LedgerDatabase;
  ledger: Service;
  /** After each run: the whole database (empty) or the bench tenant (loaded, the only one the runs write). */
  check: () => Promise<string[]>;
}

interface RunRow {
  workload: string;
  concurrency: number;
  database: "empty" | "loaded";
  result: LoadResult;
  growth: Growth;
  violations: string[];
}

/** `holdfast verify --tenant`: the chain walk and the tenant's invariants, by the CLI as an operator runs it. */
async function verifyTenant(url: string, tenantId: string): Promise<{ ok: boolean; seconds: number; output: string }> {
  const started = performance.now();
  const run = promisify(execFile)(process.execPath, [`${REPO_ROOT}tools/cli/bin/holdfast.js`, "verify", "--tenant", tenantId], {
    env: { ...process.env, DATABASE_URL: url },
    maxBuffer: 1 << 20,
  });
  const { ok, output } = await run.then(
    (r) => ({ ok: true, output: r.stdout.trim() }),
    (err: { stdout?: string; stderr?: string; message: string }) => ({ ok: false, output: `${err.stdout ?? ""}${err.stderr ?? err.message}`.trim() }),
  );
  return { ok, seconds: (performance.now() - started) / 1000, output };
}

/** One listing page's time, over repeats of the same call. */
interface PageTime {
  page: "first" | "middle" | "last";
  index: number;
  items: number;
  medianMs: number;
  p90Ms: number;
}

interface ListingTimes {
  listing: string;
  pages: number;
  items: number;
  /** The whole walk, first page to last, in seconds (every page once). */
  walkSeconds: number;
  times: PageTime[];
}

type Lister = (pageToken: string) => Promise<{ items: number; next: string }>;

/**
 * Walks a listing from its first page to its last, keeping each page's token, then times the
 * first, middle and last page, interleaved, `repeats` times each.
 */
async function timeListing(listing: string, list: Lister, repeats: number): Promise<ListingTimes> {
  const tokens = [""];
  let items = 0;
  const started = performance.now();
  for (;;) {
    const page = await list(tokens.at(-1)!);
    items += page.items;
    if (!page.next) break;
    tokens.push(page.next);
  }
  const walkSeconds = (performance.now() - started) / 1000;
  const chosen = [
    { page: "first" as const, index: 0 },
    { page: "middle" as const, index: Math.floor((tokens.length - 1) / 2) },
    { page: "last" as const, index: tokens.length - 1 },
  ];
  const samples = chosen.map(() => [] as number[]);
  const counts = chosen.map(() => 0);
  for (let r = 0; r < repeats; r++) {
    for (const [i, c] of chosen.entries()) {
      const t0 = performance.now();
      const page = await list(tokens[c.index]!);
      samples[i]!.push(performance.now() - t0);
      counts[i] = page.items;
    }
  }
  const times = chosen.map((c, i) => {
    const sorted = samples[i]!.sort((a, b) => a - b);
    const at = (p: number) => sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]!;
    return { ...c, items: counts[i]!, medianMs: at(0.5), p90Ms: at(0.9) };
  });
  return { listing, pages: tokens.length, items, walkSeconds, times };
}

async function timeListings(target: string, tenant: GrowthTenant, pageSize: number, repeats: number): Promise<ListingTimes[]> {
  const client: Client<typeof LedgerService> = createClient(LedgerService, createGrpcTransport({ baseUrl: `http://${target}` }));
  const headers = { authorization: `Bearer ${tenant.readerKey}` };
  const walletId = tenant.bigWalletId;
  const transfers: Lister = async (pageToken) => {
    const r = await client.listTransfers({ walletId, asset: "", pageSize, pageToken }, { headers });
    return { items: r.transfers.length, next: r.nextPageToken };
  };
  const holds: Lister = async (pageToken) => {
    const r = await client.listHolds({ walletId, pageSize, pageToken }, { headers });
    return { items: r.holds.length, next: r.nextPageToken };
  };
  const out: ListingTimes[] = [];
  progress(`timing ListTransfers of ${walletId}: walking every page, then the first, middle and last ${repeats} times each`);
  out.push(await timeListing(`ListTransfers ${walletId}`, transfers, repeats));
  progress(`timing ListHolds of ${walletId}`);
  out.push(await timeListing(`ListHolds ${walletId}`, holds, repeats));
  return out;
}

const mb = (bytes: number) => `${(bytes / 1e6).toFixed(0)} MB`;
const ms = (x: number) => x.toFixed(2);

function reportText(report: {
  facts: Record<string, string>;
  load: GrowthLoad;
  tenant: GrowthTenant;
  loadSeconds: number;
  loadedSizes: Sizes;
  emptySizes: Sizes;
  totals: { empty: Growth; loaded: Growth };
  verifications: { what: string; ok: boolean; seconds: number }[];
  rows: RunRow[];
  listings: ListingTimes[];
  settings: { duration: number; warmup: number; wallets: number; pageSize: number };
}): string {
  const lines: string[] = [];
  const { load, rows } = report;
  lines.push(`# Cost as the ledger grows: empty database against ${load.wallets} wallets and ${load.journalRows} journal rows`, "");
  lines.push(`Loaded (tenant bench_growth, big wallet ${report.tenant.bigWalletId} with ${load.bigWalletRows} rows and ${report.tenant.bigWalletHolds} holds) in ${report.loadSeconds.toFixed(0)} s:`);
  lines.push(report.tenant.steps.map((s) => `${s.step} ${s.seconds.toFixed(1)} s`).join("; ") + ".");
  lines.push(`Database size after setup: empty ${mb(report.emptySizes.database)}, loaded ${mb(report.loadedSizes.database)} (${SIZED_TABLES.map((t) => `${t} ${mb(report.loadedSizes.tables[t]!)}`).join(", ")}).`, "");
  lines.push("| workload | callers | database | commands/s | p50 ms | p99 ms | errors | loaded ÷ empty (commands/s) | loaded ÷ empty (p50) | CPU: machine / postgres / ledger / other | bytes per million commands | invariants |");
  lines.push("|---|---|---|---|---|---|---|---|---|---|---|---|");
  for (const row of rows) {
    const pair = rows.find((r) => r.workload === row.workload && r.concurrency === row.concurrency && r.database === "empty");
    const ratio = (a: number, b: number | undefined) => (row.database === "loaded" && b ? (a / b).toFixed(2) : "");
    const cpu = row.result.cpu;
    const cpuText = cpu ? `${cpu.machineCores.toFixed(2)} / ${cpu.postgresCores.toFixed(2)} / ${(cpu.serviceCores ?? 0).toFixed(2)} / ${cpu.otherCores.toFixed(2)}` : "-";
    const verdict = row.violations.length === 0 ? "ok" : `VIOLATED: ${row.violations.join("; ")}`;
    const failure = row.result.failure ? ` RUN FAILED: ${row.result.failure}` : "";
    lines.push(
      `| ${row.workload} | ${row.concurrency} | ${row.database} | ${Math.round(row.result.perSecond)} | ${ms(row.result.p50)} | ${ms(row.result.p99)} | ${row.result.errors} | ` +
        `${ratio(row.result.perSecond, pair?.result.perSecond)} | ${ratio(row.result.p50, pair?.result.p50)} | ${cpuText} | ${mb(row.growth.databaseBytesPerMillion)} | ${verdict}${failure} |`,
    );
  }
  lines.push("", "Bytes per million commands, by table (each run's growth over the commands it wrote):", "");
  lines.push(`| workload | callers | database | commands | ${SIZED_TABLES.join(" | ")} |`);
  lines.push(`|---|---|---|---|${SIZED_TABLES.map(() => "---").join("|")}|`);
  for (const row of rows) {
    lines.push(`| ${row.workload} | ${row.concurrency} | ${row.database} | ${row.growth.commands} | ${SIZED_TABLES.map((t) => mb(row.growth.tableBytesPerMillion[t]!)).join(" | ")} |`);
  }
  for (const [name, g] of Object.entries(report.totals)) {
    lines.push(`| every run | | ${name} | ${g.commands} | ${SIZED_TABLES.map((t) => mb(g.tableBytesPerMillion[t]!)).join(" | ")} |`);
  }
  lines.push("", ...Object.entries(report.totals).map(([name, g]) => `Every run on the ${name} database: ${g.commands} commands, ${mb(g.databaseBytesPerMillion)} of database (pg_database_size) per million commands.`));
  lines.push("", `Listing pages of the loaded database (page size ${report.settings.pageSize}; each page timed through the ledger, median and p90 of the repeats):`, "");
  lines.push("| listing | pages | items | walk s | first ms (p90) | middle ms (p90) | last ms (p90) | last ÷ first |");
  lines.push("|---|---|---|---|---|---|---|---|");
  for (const l of report.listings) {
    const t = (p: string) => l.times.find((x) => x.page === p)!;
    lines.push(
      `| ${l.listing} | ${l.pages} | ${l.items} | ${l.walkSeconds.toFixed(1)} | ${ms(t("first").medianMs)} (${ms(t("first").p90Ms)}) | ${ms(t("middle").medianMs)} (${ms(t("middle").p90Ms)}) | ` +
        `${ms(t("last").medianMs)} (${ms(t("last").p90Ms)}) | ${(t("last").medianMs / t("first").medianMs).toFixed(2)} |`,
    );
  }
  lines.push("", "Checks:", "");
  for (const v of report.verifications) lines.push(`- ${v.what}: ${v.ok ? "ok" : "FAILED"} (${v.seconds.toFixed(0)} s)`);
  lines.push("", "Settings and machine:", "");
  lines.push(`- each run ${report.settings.duration} s measured after ${report.settings.warmup} s of warm-up, on ${report.settings.wallets} funded wallets (uniform) or the hot wallet (hot); the empty database's run first, then the loaded one's`);
  for (const [k, v] of Object.entries(report.facts)) lines.push(`- ${k}: ${v}`);
  return lines.join("\n") + "\n";
}

async function main(): Promise<void> {
  const wallets = wholeOption("preload-wallets", args["preload-wallets"], 1, 100_000_000);
  const journalRows = wholeOption("preload-journal", args["preload-journal"], 1, 1_000_000_000);
  const bigWalletRows = args["preload-big-wallet-rows"] === "" ? defaultBigWalletRows(wallets, journalRows) : wholeOption("preload-big-wallet-rows", args["preload-big-wallet-rows"], 1, journalRows);
  const load: GrowthLoad = { wallets, journalRows, bigWalletRows };
  checkGrowthLoad(load);
  const runs = parseRuns(args.runs);
  const settings = {
    duration: numberOption("duration", args.duration, 0.1, 3600),
    warmup: numberOption("warmup", args.warmup, 0, 600),
    wallets: wholeOption("wallets", args.wallets, 1, WALLETS_MAX),
    pageSize: wholeOption("page-size", args["page-size"], 1, PAGE_SIZE_MAX),
  };
  const repeats = wholeOption("page-repeats", args["page-repeats"], 1, PAGE_REPEATS_MAX);

  progress(`creating ${args.database}_empty and ${args.database}_loaded (${settings.wallets} funded wallets each)`);
  const empty = await prepareLedgerDatabase(`${args.database}_empty`, settings.wallets);
  const loaded = await prepareLedgerDatabase(`${args.database}_loaded`, settings.wallets);
  const verifications: { what: string; ok: boolean; seconds: number }[] = [];
  // One nats-server per ledger: two deployments may not share a stream namespace.
  const natsServers = [await startNatsServer(), await startNatsServer()];
  try {
    progress(`loading ${wallets} wallets and ${journalRows} journal rows into ${args.database}_loaded`);
    const loadStarted = performance.now();
    const tenant = await loadGrowthTenant(loaded.pool, load, progress);
    const loadSeconds = (performance.now() - loadStarted) / 1000;
    progress(`loaded in ${loadSeconds.toFixed(0)} s; holdfast verify --tenant bench_growth (hash chain and invariants)`);
    const loadedCheck = await verifyTenant(loaded.url, tenant.tenantId);
    verifications.push({ what: `holdfast verify --tenant bench_growth after the load (${journalRows} rows: hash chain, invariants)`, ok: loadedCheck.ok, seconds: loadedCheck.seconds });
    if (!loadedCheck.ok) throw new Error(`the loaded tenant does not verify:\n${loadedCheck.output}`);

    progress("starting the two ledgers, each with its nats-server");
    const ledger = { poolMax: SERVICE_POOL_MAX, groupCommit: true, rateLimits: true };
    const sides: Side[] = [
      { name: "empty", db: empty, ledger: await startLedger({ ...ledger, natsUrl: natsServers[0]!.url, databaseUrl: empty.url, name: "ledger (empty database)" }), check: () => checkInvariants(empty.pool) },
      {
        name: "loaded",
        db: loaded,
        ledger: await startLedger({ ...ledger, natsUrl: natsServers[1]!.url, databaseUrl: loaded.url, name: "ledger (loaded database)" }),
        check: () => checkInvariants(loaded.pool, { tenantId: loaded.tenantId }),
      },
    ];
    const emptySizes = await sizes(empty.pool, empty.tenantId);
    const loadedSizes = await sizes(loaded.pool, loaded.tenantId);
    const labels = sides.map((s) => `${s.ledger.name}=${s.ledger.pid}`).join(",");
    const databases = sides.map((s) => new URL(s.db.url).pathname.slice(1)).join(",");
    const rows: RunRow[] = [];
    const runMs = (settings.duration + settings.warmup) * 1000;
    for (const { workload, concurrency } of runs) {
      for (const side of sides) {
        const before = await sizes(side.db.pool, side.db.tenantId);
        const argv = [
          "--target", side.ledger.target, "--key", side.db.apiKey, "--watch-pid", String(side.ledger.pid), "--workload", workload,
          "--concurrency", String(concurrency), "--duration", String(settings.duration), "--warmup", String(settings.warmup),
          "--wallets", String(settings.wallets), "--label-pids", labels, "--pg-databases", databases,
        ];
        const result = await runLoadgen(argv, runMs).catch((err: unknown) => emptyResult(String(err instanceof Error ? err.message : err).slice(0, 200)));
        const after = await sizes(side.db.pool, side.db.tenantId);
        const violations = await side.check();
        const row: RunRow = { workload, concurrency, database: side.name, result, growth: growthBetween(before, after), violations };
        rows.push(row);
        progress(`${workload} ${concurrency} ${side.name}: ${Math.round(result.perSecond)}/s p50 ${result.p50.toFixed(2)} ms p99 ${result.p99.toFixed(1)} ms, ${result.errors} errors, ${violations.length === 0 ? "invariants ok" : `INVARIANTS VIOLATED: ${violations.join("; ")}`}`);
      }
    }
    // Every run of a side together: more commands than one run, so less rounding by the pages
    // and extents a table grows by.
    const totals = {
      empty: growthBetween(emptySizes, await sizes(empty.pool, empty.tenantId)),
      loaded: growthBetween(loadedSizes, await sizes(loaded.pool, loaded.tenantId)),
    };
    const listings = await timeListings(sides[1]!.ledger.target, tenant, settings.pageSize, repeats);
    const facts = await machineFacts(loaded.pool, null);
    await stopAll();
    progress("checking the whole loaded database's invariants, and walking the bench tenant's chain on both");
    const fullStarted = performance.now();
    const fullViolations = await checkInvariants(loaded.pool);
    verifications.push({ what: `the invariants of the whole loaded database after the runs${fullViolations.length ? `: ${fullViolations.join("; ")}` : ""}`, ok: fullViolations.length === 0, seconds: (performance.now() - fullStarted) / 1000 });
    for (const side of sides) {
      const v = await verifyTenant(side.db.url, side.db.tenantId);
      verifications.push({ what: `holdfast verify --tenant bench on the ${side.name} database after the runs${v.ok ? "" : `: ${v.output}`}`, ok: v.ok, seconds: v.seconds });
    }
    const report = { facts, load, tenant: { ...tenant, readerKey: "(not shown)" }, loadSeconds, loadedSizes, emptySizes, totals, verifications, rows, listings, settings };
    process.stdout.write(reportText(report));
    const ok = verifications.every((v) => v.ok) && rows.every((r) => r.violations.length === 0 && !r.result.failure);
    if (args.json) await writeFile(args.json, JSON.stringify({ ok, ...report, rows: rows.map((r) => ({ ...r, result: { ...r.result, histogram: undefined } })) }, null, 2) + "\n");
    if (!ok) {
      process.stderr.write("an invariant was violated, a check failed or a run failed: see the report\n");
      process.exitCode = 1;
    }
  } finally {
    progress("stopping");
    await stopAll();
    for (const nats of natsServers) await nats.close();
    await empty.pool.end();
    await loaded.pool.end();
    progress("done");
  }
}

await main().catch((err: unknown) => {
  process.stderr.write(`bench:growth failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exitCode = 1;
});
