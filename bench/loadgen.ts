// The load generator: one child process per run, so that its CPU is its own and the service
// under test runs in another process. Closed loop at a fixed concurrency, or open loop at a
// fixed rate (--rate commands/s). Prints one JSON line (measure.ts LoadResult): counts,
// latency percentiles and histogram, and where the CPU went.
//
//   node bench/dist/loadgen.js --target 127.0.0.1:8080 --key hf_... --workload hot
//        --concurrency 64 --duration 8 --warmup 2 [--rate 2000] [--client grpc-js|connect]
//        [--watch-pid PID] [--label-pids "holdfast ledger=123,naive service=456"]
//        [--pg-databases holdfast_bench,holdfast_bench_naive]
//   node bench/dist/loadgen.js --raw postgres://... --raw-clients 64 --concurrency 64
//   node bench/dist/loadgen.js --core postgres://... --tenant ID --group-commit on
//   node bench/dist/loadgen.js --plain postgres://... --pool-max 16 --workload transfers
import { parseArgs } from "node:util";
import { setTimeout as sleep } from "node:timers/promises";
import { createCoreCaller } from "./core-client.js";
import { cpuBetween, cpuSnapshot, type CpuSnapshot } from "./cpu.js";
import { classify, createMeasurement, type Measurement, type Outcome } from "./measure.js";
import { createPlainCaller } from "./plain-double-entry.js";
import { createRawHotRowCaller } from "./raw-hot-row.js";
import { CLIENT_KINDS, createLedgerCaller, type Caller, type ClientKind } from "./rpc-client.js";
import { createRetryPolicy, freshSteps, WORKLOAD_NAMES, type RetryPolicy, type Step, type Workload } from "./workloads.js";

const { values: args } = parseArgs({
  options: {
    target: { type: "string", default: "" },
    key: { type: "string", default: "" },
    client: { type: "string", default: "grpc-js" },
    workload: { type: "string", default: "hot" },
    concurrency: { type: "string", default: "16" },
    duration: { type: "string", default: "8" },
    warmup: { type: "string", default: "2" },
    rate: { type: "string", default: "0" },
    wallets: { type: "string", default: "10000" },
    raw: { type: "string", default: "" },
    "raw-clients": { type: "string", default: "0" },
    core: { type: "string", default: "" },
    plain: { type: "string", default: "" },
    tenant: { type: "string", default: "" },
    "group-commit": { type: "string", default: "on" },
    "pool-max": { type: "string", default: "16" },
    "watch-pid": { type: "string", default: "0" },
    "label-pids": { type: "string", default: "" },
    "pg-databases": { type: "string", default: "" },
  },
});

/** How long the process may take to finish the calls in flight at the end of the window. */
const DRAIN_TIMEOUT_MS = 30_000;

interface Run {
  caller: Caller;
  workload: Workload;
  walletsTotal: number;
  retries: RetryPolicy | null;
  measurement: Measurement;
  stopMs: number;
}

async function send(run: Run, step: Step, sentMs = performance.now()): Promise<void> {
  let failure: unknown;
  const outcome: Outcome = await run.caller.call(step.method, step.request).then(
    () => "ok",
    (err: unknown) => {
      failure = err;
      return classify(err);
    },
  );
  run.measurement.record(step.method, step.kind, outcome, sentMs, performance.now(), failure);
}

/** Sends an iteration's steps in order, each followed by the retry policy's re-sends. */
async function iteration(run: Run, steps: Step[], firstSentMs?: number): Promise<void> {
  for (const [i, step] of steps.entries()) {
    await send(run, step, i === 0 ? firstSentMs : undefined);
    for (const again of run.retries?.followUps(step, performance.now()) ?? []) await send(run, again);
  }
}

function nextSteps(run: Run): Step[] {
  const replay = run.retries?.due(performance.now());
  return replay ? [replay] : freshSteps(run.workload, run.walletsTotal);
}

async function closedLoop(run: Run, concurrency: number): Promise<void> {
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (performance.now() < run.stopMs) await iteration(run, nextSteps(run));
    }),
  );
}

/**
 * Open loop: iterations start on a fixed schedule whatever the latency, and the first command's
 * latency counts from its scheduled time, so a stalled service cannot hide its stall by slowing
 * the load (coordinated omission). At most `outstandingMax` iterations wait at once; beyond
 * that an iteration is shed and counted as an error.
 */
async function openLoop(run: Run, ratePerSecond: number, outstandingMax: number): Promise<void> {
  const outstanding = new Set<Promise<void>>();
  for (let dueMs = performance.now(); dueMs < run.stopMs; ) {
    const steps = nextSteps(run);
    const waitMs = dueMs - performance.now();
    if (waitMs > 0) await sleep(waitMs);
    if (outstanding.size >= outstandingMax) {
      run.measurement.shed(performance.now());
    } else {
      const p: Promise<void> = iteration(run, steps, dueMs).finally(() => outstanding.delete(p));
      outstanding.add(p);
    }
    dueMs += (steps.length * 1000) / ratePerSecond;
  }
  await Promise.all(outstanding);
}

async function createCaller(concurrency: number): Promise<{ caller: Caller; clients: number }> {
  if (args.raw) {
    const caller = await createRawHotRowCaller(args.raw, Math.min(concurrency, Number(args["raw-clients"]) || concurrency));
    return { caller, clients: caller.clients };
  }
  if (args.core) {
    const options = { databaseUrl: args.core, tenantId: args.tenant, groupCommit: args["group-commit"] === "on", poolMax: Number(args["pool-max"]) };
    return { caller: createCoreCaller(options), clients: concurrency };
  }
  if (args.plain) return { caller: await createPlainCaller(args.plain, Number(args["pool-max"])), clients: concurrency };
  if (!CLIENT_KINDS.includes(args.client as ClientKind)) throw new Error(`--client must be one of ${CLIENT_KINDS.join(", ")}`);
  return { caller: createLedgerCaller(args.client as ClientKind, args.target, args.key || null), clients: concurrency };
}

/** "name=pid,name=pid" → pid → name. */
function pidLabels(option: string): Map<number, string> {
  const pairs = option.split(",").filter(Boolean).map((pair) => pair.split("="));
  return new Map(pairs.map(([name, pid]) => [Number(pid), name!]));
}

async function main(): Promise<void> {
  const concurrency = Number(args.concurrency);
  const workload = (args.raw ? "raw" : args.workload) as Workload;
  if (workload !== "raw" && !WORKLOAD_NAMES.includes(workload)) throw new Error(`unknown workload ${workload}`);
  const { caller, clients } = await createCaller(concurrency);
  const watchedPid = Number(args["watch-pid"]);
  const startMs = performance.now() + Number(args.warmup) * 1000;
  const stopMs = startMs + Number(args.duration) * 1000;
  const measurement = createMeasurement(startMs, stopMs);
  const retries = workload === "retries" ? createRetryPolicy() : null;
  const run: Run = { caller, workload, walletsTotal: Number(args.wallets), retries, measurement, stopMs };
  const cpu: { start: CpuSnapshot | null; end: CpuSnapshot | null } = { start: null, end: null };
  setTimeout(() => (cpu.start = cpuSnapshot()), startMs - performance.now());
  setTimeout(() => (cpu.end = cpuSnapshot()), stopMs - performance.now());
  const rate = Number(args.rate);
  const load = rate > 0 ? openLoop(run, rate, concurrency) : closedLoop(run, concurrency);
  await Promise.race([load, sleep(stopMs - performance.now() + DRAIN_TIMEOUT_MS)]);
  caller.close();
  // The end reading is taken on time unless the event loop was too busy to run its timer.
  cpu.end ??= cpuSnapshot();
  const result = measurement.result(clients, cpuBetween(cpu.start, cpu.end, {
    watchedPid,
    labels: pidLabels(args["label-pids"]),
    databases: args["pg-databases"].split(",").filter(Boolean),
  }));
  process.stdout.write(JSON.stringify(result) + "\n");
}

await main();
// Calls still in flight after DRAIN_TIMEOUT_MS are abandoned: the numbers are already out.
process.exit(0);
