// Soak of retention: does what retention deletes keep pace with what the ledger writes, at the
// benchmark's peak, so the tables stop growing once their retention period has passed?
//
//   npm run bench:soak -- [--minutes 10] [--retention-seconds 60] [--sample-seconds 30]
//                         [--concurrency 64] [--webhooks on|off] [--endpoint-concurrency 4]
//
// The hot workload (workloads.ts: Spend, or Reserve then Capture, all on one wallet) runs through
// the real ledger process (soak-ledger-main.ts: the ledger's app with idempotency and event
// retention shortened to --retention-seconds) from one load generator with --concurrency
// callers, closed loop, for --minutes. A webhook worker in this process delivers every event to
// a local receiver that answers 204 at once, its finished deliveries retained for
// --retention-seconds too, with at most --endpoint-concurrency requests in flight to it (the
// worker's HOLDFAST_WEBHOOK_ENDPOINT_CONCURRENCY, default 4). Every --sample-seconds this prints, per table (idempotency_keys,
// events, webhook_deliveries, webhook_events), its size on disk (pg_total_relation_size: heap,
// indexes and TOAST), its live and dead rows and the rows inserted and deleted since the last
// sample, and the CPU the interval took (cores: PostgreSQL, the ledger, this process with the
// worker and receiver, the load generator, and everything else on the machine: "other").
//
// It runs a PostgreSQL server of its own (the PostgreSQL 15 binaries of SOAK_PG_BIN, default
// /usr/lib/postgresql/15/bin, a fresh cluster in a temporary folder, removed at the end) with
// autovacuum on, as PostgreSQL ships it: a shared development server often runs with autovacuum
// off, and then no retention can keep a table's size level, since deleted rows' space is never
// made reusable. --pg-url uses an existing server instead (its autovacuum setting is printed).
// It also runs a nats-server of its own. At the end it checks the ledger invariants (which
// account for the pruned events) and prints the series as JSON too.
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { readdirSync, readFileSync } from "node:fs";
import { cpus } from "node:os";
import { setTimeout as sleep } from "node:timers/promises";
import { parseArgs } from "node:util";
import pg from "pg";
import pino from "pino";
import { execFileSync, spawn } from "node:child_process";
import { chmodSync, chownSync, mkdirSync, mkdtempSync, openSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { uuidV7 } from "@holdfast/common/ids";
import { freePort } from "@holdfast/common/net";
import { streamSettingsOf } from "@holdfast/common/nats";
import { checkInvariants } from "@holdfast/ledger/invariants";
import { loadLedgerConfig } from "@holdfast/ledger/config";
import { startNatsServer } from "@holdfast/testing/nats-server";
import { newSigningSecret } from "@holdfast/webhooks-core/secrets";
import { readWebhookSettings } from "@holdfast/webhooks/config";
import { createWebhookWorker } from "@holdfast/webhooks/worker";
import { cpuBetween, cpuSnapshot, type CpuUse } from "./cpu.js";
import { runLoadgen, startLedger, stopAll } from "./processes.js";

const { values: args } = parseArgs({
  options: {
    minutes: { type: "string", default: "10" },
    "retention-seconds": { type: "string", default: "60" },
    "sample-seconds": { type: "string", default: "30" },
    concurrency: { type: "string", default: "64" },
    webhooks: { type: "string", default: "on" },
    "endpoint-concurrency": { type: "string", default: "4" },
    "pg-url": { type: "string" },
  },
});

function positive(name: string, value: string | undefined, integer = true): number {
  const n = Number(value);
  if (!(n > 0) || (integer && !Number.isInteger(n))) throw new Error(`--${name} must be a positive ${integer ? "whole " : ""}number, not ${JSON.stringify(value)}`);
  return n;
}
const MINUTES = positive("minutes", args.minutes, false);
const RETENTION_SECONDS = positive("retention-seconds", args["retention-seconds"]);
const SAMPLE_SECONDS = positive("sample-seconds", args["sample-seconds"]);
const CONCURRENCY = positive("concurrency", args.concurrency);
if (args.webhooks !== "on" && args.webhooks !== "off") throw new Error(`--webhooks must be on or off, not ${JSON.stringify(args.webhooks)}`);
const WEBHOOKS = args.webhooks === "on";
const ENDPOINT_CONCURRENCY = positive("endpoint-concurrency", args["endpoint-concurrency"]);

const DATABASE_NAME = "holdfast_bench_soak";
/** A handful of wallets besides the hot one: the hot workload uses only the hot one. */
const WALLETS_TOTAL = 10;
const SERVICE_POOL_MAX = 16;
const WORKER_POOL_MAX = 10;
const TABLES = ["idempotency_keys", "events", "webhook_deliveries", "webhook_events"] as const;
type Table = (typeof TABLES)[number];

interface TableSample {
  bytes: number;
  live: number;
  dead: number;
  inserted: number;
  deleted: number;
  vacuums: number;
}
interface Sample {
  atSeconds: number;
  tables: Record<Table, TableSample>;
  pendingDeliveries: number;
  unpublishedEvents: number;
  cpu: CpuUse | null;
}

/**
 * A PostgreSQL 15 cluster of this run's own on a free loopback port, with PostgreSQL's default
 * settings (autovacuum on) and the shared server's shared_buffers; run as nobody when this is root.
 */
async function startPrivatePostgres(): Promise<{ adminUrl: string; stop: () => Promise<void> }> {
  const bin = process.env["SOAK_PG_BIN"] ?? "/usr/lib/postgresql/15/bin";
  const dir = mkdtempSync(join(tmpdir(), "holdfast-soak-pg-"));
  chmodSync(dir, 0o755);
  const dataDir = join(dir, "data");
  mkdirSync(dataDir, { mode: 0o700 });
  // PostgreSQL refuses to run as root.
  const owner: { uid?: number; gid?: number } =
    process.getuid?.() === 0 ? { uid: Number(execFileSync("id", ["-u", "nobody"]).toString()), gid: Number(execFileSync("id", ["-g", "nobody"]).toString()) } : {};
  if (owner.uid !== undefined && owner.gid !== undefined) chownSync(dataDir, owner.uid, owner.gid);
  execFileSync(join(bin, "initdb"), ["-D", dataDir, "-U", "postgres", "--auth=trust", "--encoding=UTF8", "--no-locale"], { ...owner, stdio: "ignore" });
  const port = await freePort();
  const log = openSync(join(dir, "postgres.log"), "w");
  const settings = ["listen_addresses=127.0.0.1", "unix_socket_directories=", "autovacuum=on", "shared_buffers=128MB", "max_connections=100"];
  const child = spawn(join(bin, "postgres"), ["-D", dataDir, "-p", String(port), ...settings.flatMap((c) => ["-c", c])], { ...owner, stdio: ["ignore", log, log] });
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  // However this process ends, the server goes with it (immediate shutdown) and so does its
  // folder; stop() below is the orderly way.
  process.once("exit", () => {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGQUIT");
    rmSync(dir, { recursive: true, force: true });
  });
  const adminUrl = `postgres://postgres@127.0.0.1:${port}/postgres`;
  for (let tries = 0; ; tries++) {
    const client = new pg.Client({ connectionString: adminUrl });
    try {
      await client.connect();
      await client.end();
      break;
    } catch (err) {
      await client.end().catch(() => undefined);
      if (tries > 150) throw new Error(`the soak's PostgreSQL did not start; see ${join(dir, "postgres.log")}`, { cause: err });
      await sleep(200);
    }
  }
  return {
    adminUrl,
    async stop() {
      child.kill("SIGINT");
      await exited;
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

const silent = pino({ level: "silent" });
const privatePg = args["pg-url"] === undefined ? await startPrivatePostgres() : null;
// databases.ts reads the server's address when it is loaded.
process.env["BENCH_ADMIN_DATABASE_URL"] = args["pg-url"] ?? privatePg!.adminUrl;
const { prepareLedgerDatabase } = await import("./databases.js");
const nats = await startNatsServer();
const db = await prepareLedgerDatabase(DATABASE_NAME, WALLETS_TOTAL);
const autovacuum = (await db.pool.query<{ autovacuum: string }>("show autovacuum")).rows[0]!.autovacuum;
const ledgerConfig = loadLedgerConfig({ DATABASE_URL: db.url, NATS_URL: nats.url });
process.env["SOAK_RETENTION_SECONDS"] = String(RETENTION_SECONDS);
const ledger = await startLedger({
  name: "holdfast ledger (soak)",
  script: "bench/dist/soak-ledger-main.js",
  databaseUrl: db.url,
  natsUrl: nats.url,
  groupCommit: true,
  poolMax: SERVICE_POOL_MAX,
  rateLimits: true,
});

// The receiver: 204 at once, counted.
let received = 0;
const receiver = createServer((req, res) => {
  req.resume();
  req.on("end", () => {
    received++;
    res.writeHead(204).end();
  });
});
await new Promise<void>((resolve) => receiver.listen(0, "127.0.0.1", resolve));
const receiverUrl = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/hooks`;

const workerPool = new pg.Pool({ connectionString: db.url, max: WORKER_POOL_MAX });
const worker = WEBHOOKS
  ? createWebhookWorker({
      pool: workerPool,
      logger: silent,
      natsUrl: nats.url,
      stream: streamSettingsOf(ledgerConfig),
      settings: { ...readWebhookSettings({ HOLDFAST_WEBHOOK_ALLOWED_NETWORKS: "127.0.0.0/8", HOLDFAST_WEBHOOK_ENDPOINT_CONCURRENCY: String(ENDPOINT_CONCURRENCY) }), retentionHours: RETENTION_SECONDS / 3600 },
    })
  : null;
if (worker) {
  await db.pool.query(
    "insert into webhook_endpoints (tenant_id, endpoint_id, url, secret, created_at, updated_at) values ($1, $2, $3, $4, now(), now())",
    [db.tenantId, uuidV7(), receiverUrl, newSigningSecret()],
  );
  worker.start();
}

/** This process's child processes (the load generator among them), by pid. */
function childPids(): number[] {
  const pids: number[] = [];
  for (const entry of readdirNumeric("/proc")) {
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8");
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      if (ppid === process.pid) pids.push(entry);
    } catch {
      // Gone meanwhile.
    }
  }
  return pids;
}
function readdirNumeric(dir: string): number[] {
  try {
    return readdirSync(dir).filter((n) => /^\d+$/.test(n)).map(Number);
  } catch {
    return []; // No /proc: no CPU figures either.
  }
}

async function tableStats(): Promise<Record<Table, Omit<TableSample, "inserted" | "deleted"> & { insertedTotal: number; deletedTotal: number }>> {
  const { rows } = await db.pool.query<{ relname: Table; bytes: string; live: string; dead: string; ins: string; del: string; vacuums: string }>(
    `select relname, pg_total_relation_size(relid)::text as bytes, n_live_tup::text as live, n_dead_tup::text as dead,
            n_tup_ins::text as ins, n_tup_del::text as del, (vacuum_count + autovacuum_count)::text as vacuums
       from pg_stat_user_tables where relname = any($1)`,
    [TABLES],
  );
  return Object.fromEntries(
    rows.map((r) => [r.relname, { bytes: Number(r.bytes), live: Number(r.live), dead: Number(r.dead), insertedTotal: Number(r.ins), deletedTotal: Number(r.del), vacuums: Number(r.vacuums) }]),
  ) as Record<Table, Omit<TableSample, "inserted" | "deleted"> & { insertedTotal: number; deletedTotal: number }>;
}

const mib = (bytes: number) => (bytes / 1024 / 1024).toFixed(1);
console.log(`machine: ${cpus().length} × ${cpus()[0]?.model ?? "cpu"}, node ${process.version}`);
console.log(
  `soak: hot workload, ${CONCURRENCY} callers, ${MINUTES} min, retention ${RETENTION_SECONDS} s (idempotency records, events` +
    `${WEBHOOKS ? `, webhook deliveries; ${ENDPOINT_CONCURRENCY} requests in flight to the endpoint` : ""}), a sample every ${SAMPLE_SECONDS} s; PostgreSQL ${privatePg ? "of its own" : "at --pg-url"}, autovacuum ${autovacuum}`,
);
console.log("t(s)  | idempotency_keys MiB live dead +ins -del | events MiB live dead +ins -del | webhook_deliveries MiB live +ins -del | webhook_events MiB | pending unpublished | cpu pg ledger self loadgen other");

const samples: Sample[] = [];
const startedMs = performance.now();
let previous = await tableStats();
let previousCpu = cpuSnapshot();
let running = true;
const sampler = (async () => {
  while (running) {
    await sleep(SAMPLE_SECONDS * 1000);
    const now = await tableStats();
    const cpuNow = cpuSnapshot();
    const loadgenPids = childPids().filter((pid) => pid !== ledger.pid);
    const cpu = cpuBetween(previousCpu, cpuNow, {
      watchedPid: ledger.pid,
      labels: new Map([...loadgenPids.map((pid) => [pid, "loadgen"] as const)]),
      databases: [DATABASE_NAME],
    });
    const counts = await db.pool.query<{ pending: string; unpublished: string }>(
      `select (select count(*) from webhook_deliveries where status = 'pending')::text as pending,
              (select count(*) from events where published_at is null)::text as unpublished`,
    );
    const tables = Object.fromEntries(
      TABLES.map((t) => [t, { bytes: now[t].bytes, live: now[t].live, dead: now[t].dead, vacuums: now[t].vacuums, inserted: now[t].insertedTotal - previous[t].insertedTotal, deleted: now[t].deletedTotal - previous[t].deletedTotal }]),
    ) as Record<Table, TableSample>;
    const sample: Sample = {
      atSeconds: Math.round((performance.now() - startedMs) / 1000),
      tables,
      pendingDeliveries: Number(counts.rows[0]!.pending),
      unpublishedEvents: Number(counts.rows[0]!.unpublished),
      cpu,
    };
    samples.push(sample);
    previous = now;
    previousCpu = cpuNow;
    const i = tables.idempotency_keys;
    const e = tables.events;
    const d = tables.webhook_deliveries;
    const c = cpu;
    const loadgenCores = c ? (c.others["loadgen"] ?? 0) : 0;
    console.log(
      `${String(sample.atSeconds).padStart(5)} | ${mib(i.bytes)} ${i.live} ${i.dead} +${i.inserted} -${i.deleted} | ${mib(e.bytes)} ${e.live} ${e.dead} +${e.inserted} -${e.deleted}` +
        ` | ${mib(d.bytes)} ${d.live} +${d.inserted} -${d.deleted} | ${mib(tables.webhook_events.bytes)} | ${sample.pendingDeliveries} ${sample.unpublishedEvents}` +
        (c
          ? ` | ${c.postgresCores.toFixed(2)} ${(c.serviceCores ?? 0).toFixed(2)} ${c.loadgenCores.toFixed(2)} ${loadgenCores.toFixed(2)} ${(c.otherCores - loadgenCores).toFixed(2)}`
          : ""),
    );
  }
})();

const runSeconds = Math.round(MINUTES * 60);
const result = await runLoadgen(
  ["--target", ledger.target, "--key", db.apiKey, "--workload", "hot", "--concurrency", String(CONCURRENCY), "--duration", String(runSeconds), "--warmup", "0", "--wallets", String(WALLETS_TOTAL)],
  runSeconds * 1000,
);
running = false;
await sampler;
const sender = worker?.totals().sender;
console.log(
  `load: ${Math.round(result.perSecond)} commands/s over the run, p99 ${result.p99.toFixed(1)} ms, ${result.errors} errors${result.failure ? `, RUN FAILED: ${result.failure}` : ""}; webhook requests received: ${received}` +
    (sender ? `, claims run by the worker: ${sender.claims} (${sender.claimsEmpty} of them found nothing)` : ""),
);
const violations = await checkInvariants(db.pool);
console.log(violations.length === 0 ? "invariants: ok (events checked above and below what was pruned)" : `INVARIANTS VIOLATED: ${violations.join("; ")}`);
console.log(JSON.stringify({ retentionSeconds: RETENTION_SECONDS, concurrency: CONCURRENCY, webhooks: WEBHOOKS, endpointConcurrency: ENDPOINT_CONCURRENCY, load: { perSecond: result.perSecond, p99: result.p99, errors: result.errors }, samples }));

await worker?.stop();
await stopAll();
await workerPool.end();
await db.pool.end();
await new Promise<void>((resolve) => receiver.close(() => resolve()));
await nats.close();
await privatePg?.stop();
process.exit(violations.length === 0 ? 0 : 1);
