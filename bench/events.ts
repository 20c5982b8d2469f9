// Measures the event path: how many events per second the outbox relay publishes to
// JetStream, and how late the hold-expiry worker voids holds under a load of short-TTL holds.
//
//   npm run bench:events [-- --events 20000 --holds 10000]
//
// It uses a database of its own (holdfast_bench_events, recreated on each run) on the server
// of BENCH_ADMIN_DATABASE_URL (default postgres://postgres@127.0.0.1:5432/postgres), and a
// nats-server of its own started from PATH on a free port.
import { randomUUID } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import { parseArgs } from "node:util";
import pino from "pino";
import { systemClock, uuidV7 } from "@holdfast/common/ids";
import { createPool } from "@holdfast/common/pg";
import { createLedger } from "@holdfast/ledger/domain";
import { migrate } from "@holdfast/db/migrate";
import { createOutboxRelay } from "@holdfast/ledger/relay/outbox-relay";
import { createHoldExpirer } from "@holdfast/hold-expiry/expirer";
import { startNatsServer } from "@holdfast/testing/nats-server";
import { admin_url as adminUrl, recreateDatabase } from "./databases.js";

const { values: args } = parseArgs({
  options: {
    events: { type: "string", default: "20000" },
    holds: { type: "string", default: "10000" },
    wallets: { type: "string", default: "200" },
    concurrency: { type: "string", default: "32" },
  },
});
const events_total = Number(args.events);
const holds_total = Number(args.holds);
const wallets_total = Number(args.wallets);
const concurrency = Number(args.concurrency);
const stream = "HOLDFAST_EVENTS";
const database = "holdfast_bench_events";
const nats = await startNatsServer();
const natsUrl = nats.url;
const logger = pino({ level: process.env["LOG_LEVEL"] ?? "silent" });

/** Runs `count` tasks with at most `concurrency` in flight. */
async function runPool(count: number, task: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(concurrency, count) }, async () => {
      while (next < count) {
        await task(next++);
      }
    }),
  );
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? 0;
}

const url = await recreateDatabase(database);
const pool = createPool({ databaseUrl: url, pgPoolMax: concurrency + 4, pgConnectTimeoutMs: 5000, pgStatementTimeoutMs: 60_000 }, logger);
await migrate(pool);
const tenantId = randomUUID();
await pool.query("insert into tenants (id, name) values ($1, 'bench')", [tenantId]);
const caller = { tenantId, scopeWalletId: null };
const ledger = createLedger({ pool, clock: systemClock, newId: uuidV7 });
const wallet = (i: number) => `bench_${i % wallets_total}`;

// 1. Relay throughput: build a backlog with the relay off, then time how fast it drains.
await runPool(events_total, async (i) => {
  const r = await ledger.deposit(caller, { walletId: wallet(i), asset: "USD", amount: 10n, idempotencyKey: `e${i}`, metadata: { n: String(i) } });
  if (!r.ok) throw new Error(r.reason);
});
const relay = createOutboxRelay({
  pool,
  logger,
  natsUrl,
  stream: { name: stream, maxAgeMs: 3_600_000, duplicateWindowMs: 600_000, replicas: 1 },
  batchMax: 256,
  idleMs: 20,
  standbyPollMs: 1000,
  retryDelayMsMax: 5000,
  publishTimeoutMs: 5000,
  statusLogMs: 60_000,
});
const relayStart = performance.now();
relay.start();
while ((await relay.refreshStatus()).backlog > 0) {
  await sleep(20);
}
const relaySeconds = (performance.now() - relayStart) / 1000;
await relay.stop();

// 2. Expiry lag: holds due over the next few seconds, two workers voiding them.
const expiryStart = Date.now();
await runPool(holds_total, async (i) => {
  const r = await ledger.reserve(caller, {
    walletId: wallet(i),
    asset: "USD",
    amount: 1n,
    holdId: `h${i}`,
    ttlSeconds: 1 + (i % 5),
    idempotencyKey: `h${i}`,
    metadata: {},
  });
  if (!r.ok) throw new Error(r.reason);
});
const reserveSeconds = (Date.now() - expiryStart) / 1000;
const workers = [0, 1].map(() =>
  createHoldExpirer({ pool, clock: systemClock, logger, walletsPerPassMax: 100, idleMs: 250, retryDelayMsMax: 5000 }),
);
workers.forEach((w) => w.start());
for (;;) {
  const { rows } = await pool.query<{ n: bigint }>("select count(*) as n from holds where status = 'pending'");
  if (rows[0]?.n === 0n) break;
  await sleep(100);
}
await Promise.all(workers.map((w) => w.stop()));
const { rows: lagRows } = await pool.query<{ lag_ms: number }>(
  "select (extract(epoch from closed_at - expires_at) * 1000)::float8 as lag_ms from holds order by 1",
);
const lags = lagRows.map((r) => r.lag_ms);
await pool.end();

await nats.close();

console.log(`machine: ${(await import("node:os")).cpus().length} cores; PostgreSQL ${adminUrl.replace(/\/\/[^@]*@/, "//")}; a private nats-server`);
console.log(`relay: ${events_total} events published in ${relaySeconds.toFixed(2)} s = ${Math.round(events_total / relaySeconds)} events/s (batch 256)`);
console.log(
  `expiry: ${holds_total} holds (TTL 1-5 s, reserved in ${reserveSeconds.toFixed(1)} s) voided by 2 workers; ` +
    `lag after expiry p50 ${percentile(lags, 50).toFixed(0)} ms, p99 ${percentile(lags, 99).toFixed(0)} ms, max ${(lags.at(-1) ?? 0).toFixed(0)} ms`,
);
