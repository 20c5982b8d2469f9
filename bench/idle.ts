// What the whole `npm start` stack costs when nobody calls it, and how soon a command's event
// reaches NATS after the command returned.
//
//   npm run bench:idle [-- --idle-seconds 60 --commands 200 --rate 20 --root <checkout>]
//
// It starts the stack exactly as `npm start` does (tools/dev-stack/dist/start.js of --root,
// default this checkout, which must be built), on a database of its own (holdfast_bench_idle,
// dropped first) of the PostgreSQL at BENCH_ADMIN_DATABASE_URL, the NATS at NATS_URL (default
// 127.0.0.1:4222) in a namespace of its own (deleted after), and a state directory of its own.
//
// 1. Idle: after a settling pause it reads utime+stime from /proc for every node process of the
//    stack (npm start's supervisor, the ledger, the workers) and for the stack's PostgreSQL
//    backends (pg_stat_activity of its database), twice, --idle-seconds apart, and prints each
//    as % of one core, their total, and "other": the rest of the machine's busy CPU in the same
//    window (other work on the machine; a busy neighbour makes every figure less certain).
//    A backend that ends inside the window is missed with its ticks.
// 2. Latency: --commands deposits at --rate per second through the ledger's RPC, with a core
//    NATS subscriber on the namespace's event subjects; for each, the time from the RPC's return
//    to the receipt of its event (matched by transfer id), p50/p99/max.
import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { fromBinary } from "@bufbuild/protobuf";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import pg from "pg";
import { EventSchema } from "@holdfast/gen/holdfast/v1/events_pb";
import { LedgerService } from "@holdfast/gen/holdfast/v1/ledger_pb";
import { ADMIN_URL } from "./databases.js";
import { percentile } from "./script-support.js";

const { values: args } = parseArgs({
  options: {
    "idle-seconds": { type: "string", default: "60" },
    "settle-seconds": { type: "string", default: "10" },
    commands: { type: "string", default: "200" },
    rate: { type: "string", default: "20" },
    port: { type: "string", default: "18089" },
    root: { type: "string", default: fileURLToPath(new URL("../../", import.meta.url)) },
  },
});
const IDLE_SECONDS = positive("idle-seconds");
const SETTLE_SECONDS = positive("settle-seconds");
const COMMANDS = positive("commands");
const RATE = positive("rate");
const PORT = positive("port");
const ROOT = path.resolve(args.root!);
const DATABASE = "holdfast_bench_idle";
const NAMESPACE = `idle-${randomBytes(4).toString("hex")}`;
const NATS_URL = process.env["NATS_URL"] ?? "nats://127.0.0.1:4222";
/** USER_HZ: the unit of /proc times on every Linux the project targets. */
const TICKS_PER_SECOND = 100;
const READY_TIMEOUT_MS = 120_000;
const EVENT_WAIT_MS = 10_000;

function positive(name: keyof typeof args): number {
  const n = Number(args[name]);
  if (!Number.isFinite(n) || n <= 0) throw new Error(`--${name} must be a positive number, got ${String(args[name])}`);
  return n;
}

function databaseUrl(name: string): string {
  const url = new URL(ADMIN_URL);
  url.pathname = `/${name}`;
  return url.toString();
}

async function adminQuery(sql: string, values: unknown[] = []): Promise<pg.QueryResult> {
  const client = new pg.Client({ connectionString: ADMIN_URL, application_name: "holdfast-bench-idle" });
  await client.connect();
  try {
    return await client.query(sql, values);
  } finally {
    await client.end();
  }
}

/** utime + stime of a process (all threads), or null once it is gone. */
function ticksOf(pid: number): number | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return Number(fields[11]) + Number(fields[12]);
  } catch {
    return null;
  }
}

function machineBusyTicks(): number {
  const [user, nice, system, , , irq, softirq] = readFileSync("/proc/stat", "utf8").split("\n", 1)[0]!.trim().split(/\s+/).slice(1).map(Number);
  return user! + nice! + system! + irq! + softirq!;
}

/** The node processes below `root` (npm start's children), by pid, named by their entry point. */
function stackProcesses(root: number): Map<number, string> {
  const parents = new Map<number, number>();
  for (const entry of readdirSync("/proc").filter((d) => /^\d+$/.test(d))) {
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8");
      parents.set(Number(entry), Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]));
    } catch {
      // Gone between the listing and the read.
    }
  }
  const out = new Map<number, string>([[root, "npm start (supervisor)"]]);
  let grew = true;
  while (grew) {
    grew = false;
    for (const [pid, parent] of parents) {
      if (!out.has(pid) && out.has(parent)) {
        const cmdline = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0");
        const entry = cmdline.find((part) => part.endsWith(".js")) ?? cmdline[0] ?? "?";
        out.set(pid, path.relative(ROOT, entry));
        grew = true;
      }
    }
  }
  return out;
}

/** The stack's PostgreSQL backends, by pid, named by application_name. */
async function backends(): Promise<Map<number, string>> {
  const { rows } = await adminQuery("select pid, application_name from pg_stat_activity where datname = $1", [DATABASE]);
  return new Map(rows.map((r: { pid: number; application_name: string }) => [r.pid, `postgres backend (${r.application_name || "?"})`]));
}

async function waitForReady(url: string, child: ChildProcess): Promise<void> {
  const deadline = Date.now() + READY_TIMEOUT_MS;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`npm start exited with code ${child.exitCode}`);
    const ok = await fetch(`${url}/readyz`).then((r) => r.ok, () => false);
    if (ok) return;
    await sleep(200);
  }
  throw new Error("the stack was not ready in time");
}

async function measureIdle(stackPid: number): Promise<void> {
  const names = new Map([...stackProcesses(stackPid), ...(await backends())]);
  const start = new Map([...names.keys()].map((pid) => [pid, ticksOf(pid)]));
  const busyStart = machineBusyTicks();
  const t0 = performance.now();
  await sleep(IDLE_SECONDS * 1000);
  const seconds = (performance.now() - t0) / 1000;
  const busy = machineBusyTicks() - busyStart;
  const pct = (ticks: number) => (100 * ticks) / TICKS_PER_SECOND / seconds;
  let total = 0;
  const rows: [string, number, number][] = [];
  for (const [pid, name] of names) {
    const before = start.get(pid);
    const after = ticksOf(pid);
    if (before === null || before === undefined || after === null) continue;
    total += after - before;
    rows.push([name, pid, after - before]);
  }
  rows.sort((a, b) => b[2] - a[2]);
  process.stdout.write(`idle ${seconds.toFixed(1)} s (${os.cpus().length} cores), % of one core:\n`);
  for (const [name, pid, ticks] of rows) {
    process.stdout.write(`  ${pct(ticks).toFixed(2).padStart(6)}  ${name} [${pid}]\n`);
  }
  process.stdout.write(`  ${pct(total).toFixed(2).padStart(6)}  TOTAL (Holdfast processes and their backends)\n`);
  process.stdout.write(`  ${pct(busy - total).toFixed(2).padStart(6)}  other (the rest of the machine)\n`);
}

async function measureLatency(url: string, adminKey: string): Promise<void> {
  const nc = await connect({ servers: NATS_URL });
  const received = new Map<string, number>();
  const sub = nc.subscribe(`${NAMESPACE}.events.>`);
  void (async () => {
    for await (const msg of sub) {
      const event = fromBinary(EventSchema, msg.data);
      const value = event.payload.value as { transfer?: { transferId?: string } } | undefined;
      if (value?.transfer?.transferId) received.set(value.transfer.transferId, performance.now());
    }
  })();
  await nc.flush();
  const client = createClient(LedgerService, createGrpcTransport({ baseUrl: url }));
  const headers = { authorization: `Bearer ${adminKey}` };
  const returned = new Map<string, number>();
  const calls: Promise<void>[] = [];
  const gapMs = 1000 / RATE;
  const t0 = performance.now();
  for (let i = 0; i < COMMANDS; i++) {
    const due = t0 + i * gapMs;
    const wait = due - performance.now();
    if (wait > 0) await sleep(wait);
    calls.push(
      client
        .deposit({ walletId: `idle_${i % 10}`, asset: "USD", amount: 1n, idempotencyKey: `idle-${NAMESPACE}-${i}` }, { headers })
        .then((r) => void returned.set(r.transfer!.transferId, performance.now())),
    );
  }
  await Promise.all(calls);
  const deadline = performance.now() + EVENT_WAIT_MS;
  while ([...returned.keys()].some((id) => !received.has(id)) && performance.now() < deadline) await sleep(50);
  const latencies = [...returned].filter(([id]) => received.has(id)).map(([id, at]) => received.get(id)! - at).sort((a, b) => a - b);
  const missing = returned.size - latencies.length;
  process.stdout.write(
    `commit -> NATS (event receipt - RPC return), ${COMMANDS} deposits at ${RATE}/s: ` +
      `p50 ${percentile(latencies, 50).toFixed(1)} ms, p99 ${percentile(latencies, 99).toFixed(1)} ms, ` +
      `max ${latencies.at(-1)?.toFixed(1)} ms${missing > 0 ? `, ${missing} events not received` : ""}\n`,
  );
  await nc.drain();
}

async function deleteStream(): Promise<void> {
  const nc = await connect({ servers: NATS_URL });
  try {
    const jsm = await jetstreamManager(nc);
    for await (const info of jsm.streams.list()) {
      if (info.config.subjects?.some((s) => s.startsWith(`${NAMESPACE}.`))) await jsm.streams.delete(info.config.name);
    }
  } finally {
    await nc.close();
  }
}

const stateDir = mkdtempSync(path.join(os.tmpdir(), "holdfast-idle-"));
await adminQuery(`drop database if exists ${DATABASE} with (force)`);
const child = spawn(process.execPath, [path.join(ROOT, "tools/dev-stack/dist/start.js")], {
  cwd: ROOT,
  env: {
    ...process.env,
    DATABASE_URL: databaseUrl(DATABASE),
    NATS_URL,
    HOLDFAST_NAMESPACE: NAMESPACE,
    HOLDFAST_PORT: String(PORT),
    HOLDFAST_STATE_DIR: stateDir,
    LOG_LEVEL: process.env["LOG_LEVEL"] ?? "warn",
  },
  stdio: ["ignore", "ignore", "inherit"],
});
const url = `http://127.0.0.1:${PORT}`;
try {
  await waitForReady(url, child);
  // The workers start after the ledger is ready; let them connect and settle.
  await sleep(SETTLE_SECONDS * 1000);
  process.stdout.write(`stack of ${ROOT} (namespace ${NAMESPACE})\n`);
  await measureIdle(child.pid!);
  await measureLatency(url, readFileSync(path.join(stateDir, "dev-admin-key"), "utf8").trim());
} finally {
  child.kill("SIGTERM");
  await new Promise((resolve) => (child.exitCode !== null ? resolve(undefined) : child.once("exit", resolve)));
  await deleteStream().catch((err: unknown) => process.stderr.write(`stream not deleted: ${String(err)}\n`));
  rmSync(stateDir, { recursive: true, force: true });
  await adminQuery(`drop database if exists ${DATABASE} with (force)`).catch(() => undefined);
}
