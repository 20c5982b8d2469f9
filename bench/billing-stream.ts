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
import { randomUUID } from "node:crypto";
import { cpus } from "node:os";
import { setTimeout as sleep } from "node:timers/promises";
import { parseArgs } from "node:util";
import pino from "pino";
import { startNatsServer } from "@holdfast/testing/nats-server";
import { systemClock, uuidV7 } from "@holdfast/common/ids";
import { createPool } from "@holdfast/common/pg";
import { createLedger } from "@holdfast/ledger/domain";
import { migrate } from "@holdfast/db/migrate";
import { createOutboxRelay } from "@holdfast/ledger/relay/outbox-relay";
import { createFakeEngine, engineSecret, type EngineType } from "@holdfast/testing/billing-engines";
import { parseBillingConfig } from "@holdfast/billing-core/config";
import { createBillingWorker } from "@holdfast/billing-stream/worker";
import { admin_url as adminUrl, recreateDatabase } from "./databases.js";

const { values: args } = parseArgs({
  options: {
    records: { type: "string", default: "20000" },
    outage: { type: "string", default: "5000" },
    sink: { type: "string", default: "metronome" },
    wallets: { type: "string", default: "200" },
    concurrency: { type: "string", default: "32" },
  },
});
const records_total = Number(args.records);
const outage_total = Number(args.outage);
const sink_type = args.sink as EngineType;
const wallets_total = Number(args.wallets);
const concurrency = Number(args.concurrency);
const database = "holdfast_bench_billing";
const logger = pino({ level: process.env["LOG_LEVEL"] ?? "silent" });
const stream = { name: "HOLDFAST_EVENTS", maxAgeMs: 3_600_000, duplicateWindowMs: 600_000, replicas: 1 };

async function runPool(count: number, task: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(concurrency, count) }, async () => {
      while (next < count) await task(next++);
    }),
  );
}

const nats = await startNatsServer();
const url = await recreateDatabase(database);
const pool = createPool({ databaseUrl: url, pgPoolMax: concurrency + 4, pgConnectTimeoutMs: 5000, pgStatementTimeoutMs: 60_000 }, logger);
await migrate(pool);
const tenantId = randomUUID();
await pool.query("insert into tenants (id, name) values ($1, 'bench')", [tenantId]);
const caller = { tenantId, scopeWalletId: null };
const ledger = createLedger({ pool, clock: systemClock, newId: uuidV7, groupCommit: null });
const wallet = (i: number) => `bench_${i % wallets_total}`;
for (let w = 0; w < wallets_total; w++) {
  const r = await ledger.createWallet(caller, wallet(w), { stripe_customer_id: `cus_${w}`, lago_subscription_id: `sub_${w}`, metronome_customer_id: `mc_${w}` });
  if (!r.ok) throw new Error(r.reason);
  const d = await ledger.deposit(caller, { walletId: wallet(w), asset: "USD", amount: 1_000_000_000n, idempotencyKey: `d${w}`, metadata: {} });
  if (!d.ok) throw new Error(d.reason);
}
async function spendMany(count: number, prefix: string): Promise<void> {
  await runPool(count, async (i) => {
    const r = await ledger.spend(caller, { walletId: wallet(i), asset: "USD", amount: 1n + BigInt(i % 7), idempotencyKey: `${prefix}${i}`, metadata: { model: "gpt-4o" } });
    if (!r.ok) throw new Error(r.reason);
  });
}

const relay = createOutboxRelay({
  pool, logger, natsUrl: nats.url, stream, batchMax: 256, idleMs: 20, standbyPollMs: 1000, retryDelayMsMax: 1000, publishTimeoutMs: 5000, statusLogMs: 60_000,
});
relay.start();
const engine = createFakeEngine(sink_type);
await engine.start();
const config = parseBillingConfig(
  {
    sinks: [{ name: "bench", type: sink_type, endpoint: engine.url, secret_env: "BENCH_SINK_SECRET", event_name: "usage", batch_size_max: 100, flush_interval_ms: 100, retry_delay_ms_min: 100, retry_delay_ms_max: 1000 }],
    wallet_cache_ttl_ms: 60_000,
  },
  { BENCH_SINK_SECRET: engineSecret(sink_type) },
);
const worker = createBillingWorker({ config, pool, natsUrl: nats.url, stream, logger, statusLogMs: 60_000 });

async function waitForStored(count: number): Promise<void> {
  while (engine.stored.size < count) await sleep(10);
}

// 1. Throughput from a backlog already in JetStream.
const produceStart = performance.now();
await spendMany(records_total, "s");
while ((await relay.refreshStatus()).backlog > 0) await sleep(20);
const produceSeconds = (performance.now() - produceStart) / 1000;
const drainStart = performance.now();
await worker.start();
await waitForStored(records_total);
const drainSeconds = (performance.now() - drainStart) / 1000;

// 2. Catch-up after an outage of the sink.
await engine.stop();
await spendMany(outage_total, "o");
while ((await relay.refreshStatus()).backlog > 0) await sleep(20);
await sleep(1000);
const backUp = performance.now();
await engine.start();
await waitForStored(records_total + outage_total);
const catchUpSeconds = (performance.now() - backUp) / 1000;
const duplicates = [...engine.storedCount.values()].filter((n) => n > 1).length;

await worker.stop();
await relay.stop();
await engine.stop();
await pool.end();
await nats.close();

console.log(`machine: ${cpus().length} cores; PostgreSQL ${adminUrl.replace(/\/\/[^@]*@/, "//")}; a private nats-server; local ${sink_type} sink`);
console.log(`produce: ${records_total} spends committed and relayed in ${produceSeconds.toFixed(1)} s`);
console.log(`throughput: ${records_total} usage records delivered in ${drainSeconds.toFixed(2)} s = ${Math.round(records_total / drainSeconds)} records/s (batch 100)`);
console.log(`catch-up: ${outage_total} records made during an outage delivered ${catchUpSeconds.toFixed(2)} s after the sink returned; stored twice: ${duplicates}`);
