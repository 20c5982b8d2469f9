// Measures the event path: how many events per second the outbox relay publishes to
// JetStream, and how late the hold-expiry worker voids holds under a load of short-TTL holds.
//
//   npm run bench:events [-- --events 20000 --holds 10000]
//
// It uses a database of its own (holdfast_bench_events, recreated on each run) on the server
// of BENCH_ADMIN_DATABASE_URL (default postgres://postgres@127.0.0.1:5432/postgres), and a
// nats-server of its own started from PATH on a free port.
import { setTimeout as sleep } from "node:timers/promises";
import { parseArgs } from "node:util";
import { systemClock, uuidV7 } from "@holdfast/common/ids";
import { createLedger } from "@holdfast/ledger/domain";
import { createOutboxRelay } from "@holdfast/ledger/relay/outbox-relay";
import { createHoldExpirer } from "@holdfast/hold-expiry/expirer";
import { startNatsServer } from "@holdfast/testing/nats-server";
import { ADMIN_URL as adminUrl } from "./databases.js";
import { BENCH_STREAM, benchLogger, percentile, prepareBenchDatabase, runPool } from "./script-support.js";

const { values: args } = parseArgs({
  options: {
    events: { type: "string", default: "20000" },
    holds: { type: "string", default: "10000" },
    wallets: { type: "string", default: "200" },
    concurrency: { type: "string", default: "32" },
  },
});
const EVENTS_TOTAL = Number(args.events);
const HOLDS_TOTAL = Number(args.holds);
const WALLETS_TOTAL = Number(args.wallets);
const CONCURRENCY = Number(args.concurrency);
const DATABASE_NAME = "holdfast_bench_events";
const nats = await startNatsServer();
const natsUrl = nats.url;
const logger = benchLogger();

const { pool, caller } = await prepareBenchDatabase(DATABASE_NAME, CONCURRENCY + 4, logger);
const ledger = createLedger({ pool, clock: systemClock, newId: uuidV7 });
const wallet = (i: number) => `bench_${i % WALLETS_TOTAL}`;

// 1. Relay throughput: build a backlog with the relay off, then time how fast it drains.
await runPool(EVENTS_TOTAL, CONCURRENCY, async (i) => {
  const r = await ledger.deposit(caller, { walletId: wallet(i), asset: "USD", amount: 10n, idempotencyKey: `e${i}`, metadata: { n: String(i) } });
  if (!r.ok) throw new Error(r.reason);
});
const relay = createOutboxRelay({
  pool,
  logger,
  natsUrl,
  stream: BENCH_STREAM,
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
await runPool(HOLDS_TOTAL, CONCURRENCY, async (i) => {
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
console.log(`relay: ${EVENTS_TOTAL} events published in ${relaySeconds.toFixed(2)} s = ${Math.round(EVENTS_TOTAL / relaySeconds)} events/s (batch 256)`);
console.log(
  `expiry: ${HOLDS_TOTAL} holds (TTL 1-5 s, reserved in ${reserveSeconds.toFixed(1)} s) voided by 2 workers; ` +
    `lag after expiry p50 ${percentile(lags, 50).toFixed(0)} ms, p99 ${percentile(lags, 99).toFixed(0)} ms, max ${(lags.at(-1) ?? 0).toFixed(0)} ms`,
);
