// Measures the billing stream: usage records per second to a local sink, and how long a sink
// takes to catch up after an outage.
//
//   npm run bench:billing-stream -- [--records 20000] [--outage 5000] [--sink metronome]
//
// 1. Throughput: a backlog of --records spends is written and relayed to JetStream first, then
//    the worker starts and the time until the local sink holds every record is measured (so
//    the ledger's own command rate is not what is measured).
// 2. Catch-up: with the worker running, the sink goes down, --outage spends are made, the
//    sink comes back, and the time from its return until it holds every record is measured.
//
// It uses a database of its own (holdfast_bench_billing, recreated on each run) on the server
// of BENCH_ADMIN_DATABASE_URL (default postgres://postgres@127.0.0.1:5432/postgres), a
// nats-server of its own, and the fake engines of the test suite as the local sink.
import { cpus } from "node:os";
import { setTimeout as sleep } from "node:timers/promises";
import { parseArgs } from "node:util";
import { startNatsServer } from "@holdfast/testing/nats-server";
import { systemClock, uuidV7 } from "@holdfast/common/ids";
import { createLedger } from "@holdfast/ledger/domain";
import { createOutboxRelay } from "@holdfast/ledger/relay/outbox-relay";
import { createFakeEngine, engineSecret, type EngineType } from "@holdfast/testing/billing-engines";
import { parseBillingConfig } from "@holdfast/billing-core/config";
import { createBillingWorker } from "@holdfast/billing-stream/worker";
import { ADMIN_URL as adminUrl } from "./databases.js";
import { BENCH_STREAM, benchLogger, prepareBenchDatabase, runPool } from "./script-support.js";

const { values: args } = parseArgs({
  options: {
    records: { type: "string", default: "20000" },
    outage: { type: "string", default: "5000" },
    sink: { type: "string", default: "metronome" },
    wallets: { type: "string", default: "200" },
    concurrency: { type: "string", default: "32" },
  },
});
const RECORDS_TOTAL = Number(args.records);
const OUTAGE_RECORDS_TOTAL = Number(args.outage);
const SINK_TYPE = args.sink as EngineType;
const WALLETS_TOTAL = Number(args.wallets);
const CONCURRENCY = Number(args.concurrency);
const DATABASE_NAME = "holdfast_bench_billing";
const logger = benchLogger();
const stream = BENCH_STREAM;

const nats = await startNatsServer();
const { pool, caller } = await prepareBenchDatabase(DATABASE_NAME, CONCURRENCY + 4, logger);
const ledger = createLedger({ pool, clock: systemClock, newId: uuidV7, groupCommit: null });
const wallet = (i: number) => `bench_${i % WALLETS_TOTAL}`;
for (let w = 0; w < WALLETS_TOTAL; w++) {
  const r = await ledger.createWallet(caller, wallet(w), { stripe_customer_id: `cus_${w}`, lago_subscription_id: `sub_${w}`, metronome_customer_id: `mc_${w}` });
  if (!r.ok) throw new Error(r.reason);
  const d = await ledger.deposit(caller, { walletId: wallet(w), asset: "USD", amount: 1_000_000_000n, idempotencyKey: `d${w}`, metadata: {} });
  if (!d.ok) throw new Error(d.reason);
}
async function spendMany(count: number, prefix: string): Promise<void> {
  await runPool(count, CONCURRENCY, async (i) => {
    const r = await ledger.spend(caller, { walletId: wallet(i), asset: "USD", amount: 1n + BigInt(i % 7), idempotencyKey: `${prefix}${i}`, metadata: { model: "gpt-4o" } });
    if (!r.ok) throw new Error(r.reason);
  });
}

const relay = createOutboxRelay({
  pool, logger, natsUrl: nats.url, stream, batchMax: 256, idleMs: 20, standbyPollMs: 1000, retryDelayMsMax: 1000, publishTimeoutMs: 5000, statusLogMs: 60_000,
});
relay.start();
const engine = createFakeEngine(SINK_TYPE);
await engine.start();
const config = parseBillingConfig(
  {
    sinks: [{ name: "bench", type: SINK_TYPE, endpoint: engine.url, secret_env: "BENCH_SINK_SECRET", event_name: "usage", batch_size_max: 100, flush_interval_ms: 100, retry_delay_ms_min: 100, retry_delay_ms_max: 1000 }],
    wallet_cache_ttl_ms: 60_000,
  },
  { BENCH_SINK_SECRET: engineSecret(SINK_TYPE) },
);
const worker = createBillingWorker({ config, pool, natsUrl: nats.url, stream, logger, statusLogMs: 60_000 });

async function waitForStored(count: number): Promise<void> {
  while (engine.stored.size < count) await sleep(10);
}

// 1. Throughput from a backlog already in JetStream.
const produceStart = performance.now();
await spendMany(RECORDS_TOTAL, "s");
while ((await relay.refreshStatus()).backlog > 0) await sleep(20);
const produceSeconds = (performance.now() - produceStart) / 1000;
const drainStart = performance.now();
await worker.start();
await waitForStored(RECORDS_TOTAL);
const drainSeconds = (performance.now() - drainStart) / 1000;

// 2. Catch-up after an outage of the sink.
await engine.stop();
await spendMany(OUTAGE_RECORDS_TOTAL, "o");
while ((await relay.refreshStatus()).backlog > 0) await sleep(20);
await sleep(1000);
const backUp = performance.now();
await engine.start();
await waitForStored(RECORDS_TOTAL + OUTAGE_RECORDS_TOTAL);
const catchUpSeconds = (performance.now() - backUp) / 1000;
const duplicates = [...engine.storedCount.values()].filter((n) => n > 1).length;

await worker.stop();
await relay.stop();
await engine.stop();
await pool.end();
await nats.close();

console.log(`machine: ${cpus().length} cores; PostgreSQL ${adminUrl.replace(/\/\/[^@]*@/, "//")}; a private nats-server; local ${SINK_TYPE} sink`);
console.log(`produce: ${RECORDS_TOTAL} spends committed and relayed in ${produceSeconds.toFixed(1)} s`);
console.log(`throughput: ${RECORDS_TOTAL} usage records delivered in ${drainSeconds.toFixed(2)} s = ${Math.round(RECORDS_TOTAL / drainSeconds)} records/s (batch 100)`);
console.log(`catch-up: ${OUTAGE_RECORDS_TOTAL} records made during an outage delivered ${catchUpSeconds.toFixed(2)} s after the sink returned; stored twice: ${duplicates}`);
