// The load generator: one child process per run, so that its CPU is its own and the service
// under test runs in another process. Closed loop at a fixed concurrency, or open loop at a
// fixed rate (--rate). Prints one JSON line: counts and latency percentiles.
//
//   node dist/bench/loadgen.js --target 127.0.0.1:8080 --key hf_... --workload hot
//        --concurrency 64 --duration 8 --warmup 2 [--rate 2000] [--raw postgres://...]
import { randomUUID } from "node:crypto";
import { parseArgs } from "node:util";
import { setTimeout as sleep } from "node:timers/promises";
import pg from "pg";
import pino from "pino";
import { systemClock, uuidV7 } from "../services/common/src/ids.js";
import { createPool } from "../services/common/src/pg.js";
import { createLedger } from "../services/ledger/src/domain/ledger.js";
import { createLedgerCaller, type Call } from "./rpc-client.js";

const { values: args } = parseArgs({
  options: {
    target: { type: "string", default: "" },
    key: { type: "string", default: "" },
    workload: { type: "string", default: "hot" },
    concurrency: { type: "string", default: "16" },
    duration: { type: "string", default: "8" },
    warmup: { type: "string", default: "2" },
    rate: { type: "string", default: "0" },
    wallets: { type: "string", default: "10000" },
    raw: { type: "string", default: "" },
    core: { type: "string", default: "" },
    tenant: { type: "string", default: "" },
    "group-commit": { type: "string", default: "on" },
  },
});

/** Latency samples kept per run; beyond it the run stops recording (and says so). */
const samples_max = 2_000_000;
/** Past requests kept for "later" retries. */
const resend_pool_max = 1000;
/**
 * Connections of the raw hot-row baseline. PostgreSQL here allows 100 connections in all, and
 * one hot row is saturated long before 24 clients: more would only queue on its lock.
 */
const raw_connections_max = 24;

type Outcome = "ok" | "refused" | "conflict" | "error";
interface Step {
  method: "reserve" | "capture" | "spend" | "deposit";
  request: Record<string, unknown>;
}

const concurrency = Number(args.concurrency);
const walletsTotal = Number(args.wallets);
const stats = { ok: 0, refused: 0, conflict: 0, error: 0, replays: 0, errorSample: "" };
const latencies = new Float64Array(samples_max);
let recorded = 0;
let measuring = false;

function wallet(): string {
  return args.workload === "hot" ? "hot" : `w${Math.floor(Math.random() * walletsTotal)}`;
}

async function timed(run: () => Promise<Outcome>): Promise<Outcome> {
  const started = performance.now();
  const outcome = await run();
  if (measuring) {
    stats[outcome]++;
    if (recorded < samples_max) latencies[recorded++] = performance.now() - started;
  }
  return outcome;
}

function classify(err: unknown): Outcome {
  const code = (err as { code?: number }).code;
  // gRPC codes: 9 FAILED_PRECONDITION (a refusal such as INSUFFICIENT_FUNDS), 6 ALREADY_EXISTS.
  if (code === 9) return "refused";
  if (code === 6) return "conflict";
  if (!stats.errorSample) stats.errorSample = String((err as Error).message ?? err);
  return "error";
}

function send(call: Call, step: Step): Promise<Outcome> {
  return timed(() => call(step.method, step.request).then(() => "ok" as const, classify));
}

/** One iteration of the mix: half Reserve → Capture pairs, half direct Spends. */
async function iteration(call: Call, resend: Step[]): Promise<void> {
  const walletId = wallet();
  const retries = args.workload === "retries";
  const steps: Step[] = [];
  if (Math.random() < 0.5) {
    const holdId = `h_${randomUUID()}`;
    steps.push({ method: "reserve", request: { walletId, asset: "USD", amount: 10n, holdId, ttlSeconds: 120, idempotencyKey: randomUUID() } });
    steps.push({ method: "capture", request: { holdId, amount: 7n, idempotencyKey: randomUUID() } });
  } else {
    steps.push({ method: "spend", request: { walletId, asset: "USD", amount: 5n, idempotencyKey: randomUUID() } });
  }
  for (const step of steps) {
    await send(call, step);
    if (!retries) continue;
    const dice = Math.random();
    if (dice < 0.05) {
      stats.replays++;
      await send(call, step); // re-sent at once, as a client retrying a timeout would
    } else if (dice < 0.1) {
      resend.push(step); // re-sent later, from the pool below
      if (resend.length > resend_pool_max) resend.shift();
    } else if (dice < 0.11) {
      await send(call, { ...step, request: { ...step.request, amount: 1n } }); // same key, other body
    }
  }
  if (retries && resend.length > 0 && Math.random() < 0.1) {
    stats.replays++;
    await send(call, resend[Math.floor(Math.random() * resend.length)]!);
  }
}

/**
 * The ledger core called in-process, without RPC (--core DATABASE_URL --tenant ID): what the
 * database side of Holdfast does on its own, for comparison with the raw hot row, which has no
 * RPC either.
 */
function createCoreCaller(databaseUrl: string, tenantId: string, groupCommit: boolean): { call: Call; close(): void } {
  const pool = createPool({ databaseUrl, pgPoolMax: 16, pgConnectTimeoutMs: 5000, pgStatementTimeoutMs: 30_000 }, pino({ level: "silent" }));
  const ledger = createLedger({ pool, clock: systemClock, newId: uuidV7, groupCommit: groupCommit ? { batchMax: 64, queueMax: 100_000 } : null });
  const caller = { tenantId, scopeWalletId: null };
  const answer = (o: { ok: boolean; reason?: string }) => {
    if (!o.ok) throw Object.assign(new Error(o.reason), { code: o.reason === "IDEMPOTENCY_KEY_REUSED" ? 6 : 9 });
    return {};
  };
  const call: Call = async (method, r) => {
    const base = { idempotencyKey: r["idempotencyKey"] as string, metadata: {} };
    switch (method) {
      case "reserve":
        return answer(await ledger.reserve(caller, { ...base, walletId: r["walletId"] as string, asset: "USD", amount: r["amount"] as bigint, holdId: r["holdId"] as string, ttlSeconds: 120 }));
      case "capture":
        return answer(await ledger.capture(caller, { ...base, holdId: r["holdId"] as string, amount: r["amount"] as bigint }));
      default:
        return answer(await ledger.spend(caller, { ...base, walletId: r["walletId"] as string, asset: "USD", amount: r["amount"] as bigint }));
    }
  };
  return { call, close: () => void pool.end() };
}

/** The raw hot-row baseline: one autocommit UPDATE per command, straight to PostgreSQL. */
async function rawWorker(client: pg.Client): Promise<Outcome> {
  return timed(() =>
    client
      .query({ name: "raw", text: "update bench_hot_row set balance = balance - $1 where id = 1 and balance >= $1", values: [1] })
      .then((r) => (r.rowCount === 1 ? "ok" : "refused"), classify),
  );
}

async function main(): Promise<void> {
  const durationMs = Number(args.duration) * 1000;
  const warmupMs = Number(args.warmup) * 1000;
  const rate = Number(args.rate);
  const stopAt = Date.now() + warmupMs + durationMs;
  setTimeout(() => (measuring = true), warmupMs);
  const started = Date.now() + warmupMs;

  if (args.raw) {
    const clients = await Promise.all(
      Array.from({ length: Math.min(concurrency, raw_connections_max) }, async () => {
        const client = new pg.Client({ connectionString: args.raw });
        await client.connect();
        return client;
      }),
    );
    await Promise.all(clients.map(async (client) => {
      while (Date.now() < stopAt) await rawWorker(client);
    }));
    await Promise.all(clients.map((c) => c.end()));
  } else {
    const { call, close } = args.core
      ? createCoreCaller(args.core, args.tenant, args["group-commit"] === "on")
      : createLedgerCaller(args.target, args.key || null);
    const resend: Step[] = [];
    if (rate > 0) {
      // Open loop: start iterations on a fixed schedule whatever the latency, at most
      // `concurrency` * 16 outstanding so an overloaded service cannot exhaust memory.
      const outstanding = new Set<Promise<void>>();
      for (let i = 0; Date.now() < stopAt; i++) {
        const due = started - warmupMs + (i * 1000) / rate;
        if (due > Date.now()) await sleep(due - Date.now());
        if (outstanding.size >= concurrency * 16) { stats.error++; continue; }
        const p = iteration(call, resend).finally(() => outstanding.delete(p));
        outstanding.add(p);
      }
      await Promise.all(outstanding);
    } else {
      await Promise.all(Array.from({ length: concurrency }, async () => {
        while (Date.now() < stopAt) await iteration(call, resend);
      }));
    }
    close();
  }
  const seconds = (Date.now() - started) / 1000;
  const sorted = latencies.subarray(0, recorded).sort();
  const pct = (p: number) => sorted[Math.min(recorded - 1, Math.floor((p / 100) * recorded))] ?? 0;
  const commands = stats.ok + stats.refused + stats.conflict + stats.error;
  process.stdout.write(
    JSON.stringify({
      commands,
      seconds,
      perSecond: commands / seconds,
      p50: pct(50),
      p95: pct(95),
      p99: pct(99),
      ok: stats.ok,
      refused: stats.refused,
      conflict: stats.conflict,
      errors: stats.error,
      replays: stats.replays,
      errorSample: stats.errorSample,
      samplesTruncated: recorded >= samples_max,
    }) + "\n",
  );
}

await main();
process.exit(0);
