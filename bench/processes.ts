// The processes of a benchmark invocation: the services under test and one load generator per
// run, all children of the orchestrator, each with its own CPU and event loop.
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { openSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { setTimeout as sleep } from "node:timers/promises";
import { freePort, portAccepts } from "@holdfast/common/net";
import type { LoadResult } from "./measure.js";

/** The repository root: this file runs from bench/dist/, and every entry point is compiled. */
const REPO_ROOT = fileURLToPath(new URL("../../", import.meta.url));
const READY_TIMEOUT_MS = 30_000;
const READY_POLL_MS = 100;
const STOP_TIMEOUT_MS = 10_000;
/** A load generator's run may last this much longer than its warm-up plus duration. */
const LOADGEN_SLACK_MS = 60_000;
const LOADGEN_OUTPUT_BYTES_MAX = 1 << 20;

export interface Service {
  name: string;
  /** host:port, as gRPC clients take it. */
  target: string;
  pid: number;
  log: string;
}

const children: ChildProcess[] = [];
// A benchmark that dies (an uncaught error, its database gone) must not leave its services
// running: whatever is still up goes when this process exits, however it exits.
process.once("exit", () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
});
// Interrupted (Ctrl-C, kill), Node would end without running exit hooks, this one and the
// others that stop what a benchmark started (its nats-server, the soak's PostgreSQL): exit
// instead, with the shell's code for the signal.
for (const [signal, code] of [["SIGINT", 130], ["SIGTERM", 143]] as const) {
  process.once(signal, () => process.exit(code));
}

function startChild(name: string, script: string, argv: string[], env: Record<string, string>, nodeFlags: string[] = []): { child: ChildProcess; log: string } {
  const log = join(tmpdir(), `holdfast-bench-${name.replace(/[^a-z0-9]+/gi, "-")}.log`);
  const out = openSync(log, "w");
  const child = spawn(process.execPath, [...nodeFlags, resolve(REPO_ROOT, script), ...argv], {
    env: { ...process.env, ...env },
    stdio: ["ignore", out, out],
  });
  child.on("exit", (code, signal) => {
    if (code && !signal) process.stderr.write(`${name} exited with ${code}; see ${log}\n`);
  });
  children.push(child);
  return { child, log };
}

async function waitFor(what: string, probe: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + READY_TIMEOUT_MS;
  while (!(await probe())) {
    if (Date.now() > deadline) throw new Error(`${what} did not become ready in ${READY_TIMEOUT_MS} ms`);
    await sleep(READY_POLL_MS);
  }
}

export interface LedgerProcessOptions {
  name: string;
  databaseUrl: string;
  natsUrl: string;
  groupCommit: boolean;
  poolMax: number;
  /**
   * On: the rate limiter runs every call with limits no benchmark reaches (the defaults, 1000/s
   * per key and 5000/s per tenant, would refuse the benchmark's one key). Off: both limits 0,
   * so the limiter is not consulted (the "rate limits off" row).
   */
  rateLimits: boolean;
  /** Another checkout's ledger entry (--baseline), absolute; this checkout's by default. */
  script?: string;
  /**
   * --cpu-prof: node's CPU profiler on, its .cpuprofile written into this directory when the
   * process exits (bench/cpu-profile.ts summarizes it).
   */
  cpuProfileDir?: string;
  /**
   * HOLDFAST_NAMESPACE, for a ledger on a database of its own (--baseline): a NATS stream belongs
   * to the deployment of one database, and a ledger of another refuses to publish on it.
   */
  namespace?: string;
}

/** The highest rate HOLDFAST_RATE_LIMIT_*_PER_SECOND accepts. */
const RATE_LIMIT_UNREACHED_PER_SECOND = "1000000";

/** The Holdfast ledger exactly as deployed (services/ledger/dist/main.js), on a free port. */
export async function startLedger(options: LedgerProcessOptions): Promise<Service> {
  const port = await freePort();
  const profile = options.cpuProfileDir ? ["--cpu-prof", "--cpu-prof-dir", options.cpuProfileDir] : [];
  const script = options.script ?? "services/ledger/dist/main.js";
  const { child, log } = startChild(options.name, script, [], ledgerEnv(options, port), profile);
  await waitFor(options.name, () => readyz(port));
  return { name: options.name, target: `127.0.0.1:${port}`, pid: child.pid!, log };
}

/**
 * The empty-RPC baseline (empty-rpc-main.ts): the ledger's server, auth and interceptors with
 * constant handlers, configured by the same environment as the ledger, on a free port.
 */
export async function startEmptyRpc(options: LedgerProcessOptions): Promise<Service> {
  const port = await freePort();
  const { child, log } = startChild(options.name, "bench/dist/empty-rpc-main.js", [], ledgerEnv(options, port));
  await waitFor(options.name, () => readyz(port));
  return { name: options.name, target: `127.0.0.1:${port}`, pid: child.pid!, log };
}

function readyz(port: number): Promise<boolean> {
  return fetch(`http://127.0.0.1:${port}/readyz`).then((r) => r.ok, () => false);
}

function ledgerEnv(options: LedgerProcessOptions, port: number): Record<string, string> {
  const rateLimit = options.rateLimits ? RATE_LIMIT_UNREACHED_PER_SECOND : "0";
  return {
    DATABASE_URL: options.databaseUrl,
    NATS_URL: options.natsUrl,
    HOLDFAST_PORT: String(port),
    HOLDFAST_HOST: "127.0.0.1",
    HOLDFAST_GROUP_COMMIT: options.groupCommit ? "on" : "off",
    // The in-flight bound must not refuse the benchmark's 256 callers (plus replays).
    HOLDFAST_MAX_IN_FLIGHT: "4096",
    HOLDFAST_PG_POOL_MAX: String(options.poolMax),
    HOLDFAST_RATE_LIMIT_KEY_PER_SECOND: rateLimit,
    HOLDFAST_RATE_LIMIT_TENANT_PER_SECOND: rateLimit,
    LOG_LEVEL: "warn",
    ...(options.namespace === undefined ? {} : { HOLDFAST_NAMESPACE: options.namespace }),
  };
}

/** The naive service (naive-main.ts) on a free port. */
export async function startNaive(databaseUrl: string, poolMax: number): Promise<Service> {
  const port = await freePort();
  const argv = ["--port", String(port), "--database", databaseUrl, "--pool-max", String(poolMax)];
  const { child, log } = startChild("naive service", "bench/dist/naive-main.js", argv, {});
  await waitFor("naive service", () => portAccepts(port));
  return { name: "naive service", target: `127.0.0.1:${port}`, pid: child.pid!, log };
}

/** One load-generator process (loadgen.ts); its last stdout line is the result. */
export async function runLoadgen(argv: string[], runMs: number): Promise<LoadResult> {
  const run = promisify(execFile)(process.execPath, [join(REPO_ROOT, "bench/dist/loadgen.js"), ...argv], {
    maxBuffer: LOADGEN_OUTPUT_BYTES_MAX,
    timeout: runMs + LOADGEN_SLACK_MS,
  });
  children.push(run.child);
  const { stdout, stderr } = await run;
  if (stderr.trim()) process.stderr.write(`load generator: ${stderr.trim()}\n`);
  return JSON.parse(stdout.trim().split("\n").at(-1)!) as LoadResult;
}

/** SIGTERM to every child (the ledger drains), SIGKILL to any still running after the timeout. */
export async function stopAll(): Promise<void> {
  const running = children.filter((c) => c.exitCode === null && c.signalCode === null);
  const exited = running.map((c) => new Promise((resolve) => c.once("exit", resolve)));
  running.forEach((c) => c.kill("SIGTERM"));
  // An unref'd timer: once every child has exited it must not keep this process alive.
  await Promise.race([Promise.all(exited), sleep(STOP_TIMEOUT_MS, undefined, { ref: false })]);
  for (const child of running) {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
  }
}
