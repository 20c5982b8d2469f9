// Measures the webhook worker: deliveries per second to a fast local receiver, and the delay a
// hanging endpoint adds to another endpoint's deliveries.
//
//   npm run bench:webhooks -- [--events 5000] [--endpoints 1] [--endpoint-concurrency 4]
//                                             [--rate 50] [--seconds 10]
//
// 1. Throughput: with the worker stopped, --events deposits are committed and relayed to
//    JetStream; then the worker starts and the time until the receiver holds every event (at
//    each of --endpoints endpoints) is measured. So the ledger's own command rate is not what is
//    measured, but the worker's whole path is: stream → deliveries table → signed POST → outcome.
// 2. Isolation: with the worker running, deposits are made at --rate per second for --seconds,
//    first with only a fast endpoint, then again with a second endpoint that holds every
//    request for 30 s (request timeout 20 s). The delay of each delivery to the fast endpoint,
//    from the event's commit to its arrival at the receiver, is compared between the two runs.
//
// It uses a database of its own (holdfast_bench_webhooks, recreated on each run) on the server
// of BENCH_ADMIN_DATABASE_URL (default postgres://postgres@127.0.0.1:5432/postgres), and a
// nats-server of its own. The worker uses the defaults of its configuration (64 requests in
// flight, 4 per endpoint unless --endpoint-concurrency says otherwise) with loopback allow-listed.
// Everything runs in this one process except PostgreSQL and NATS, so on a small machine the
// receivers and the relay compete with the worker for CPU: the figures are a floor.
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { cpus } from "node:os";
import { setTimeout as sleep } from "node:timers/promises";
import { parseArgs } from "node:util";
import { startNatsServer } from "@holdfast/testing/nats-server";
import { systemClock, uuidV7 } from "@holdfast/common/ids";
import { createLedger } from "@holdfast/ledger/domain";
import { createOutboxRelay } from "@holdfast/ledger/relay/outbox-relay";
import { newSigningSecret } from "@holdfast/webhooks-core/secrets";
import { readWebhookSettings } from "@holdfast/webhooks/config";
import { createWebhookWorker } from "@holdfast/webhooks/worker";
import { BENCH_STREAM, benchLogger, percentile, prepareBenchDatabase } from "./script-support.js";

const { values: args } = parseArgs({
  options: {
    events: { type: "string", default: "5000" },
    endpoints: { type: "string", default: "1" },
    rate: { type: "string", default: "50" },
    seconds: { type: "string", default: "10" },
    "endpoint-concurrency": { type: "string", default: "4" },
  },
});
const EVENTS_TOTAL = Number(args.events);
const ENDPOINTS_TOTAL = Number(args.endpoints);
const RATE_PER_S = Number(args.rate);
const RUN_SECONDS = Number(args.seconds);
const DATABASE_NAME = "holdfast_bench_webhooks";
const POOL_MAX = 20;
const stream = BENCH_STREAM;
const logger = benchLogger();

/** A receiver that answers 200 at once (or hangs) and notes when each webhook-id arrived. */
async function receiver(hang: boolean) {
  const arrivals = new Map<string, { at: number; occurredAt: number }>();
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      if (hang) return; // never answers; the worker's timeout ends it
      const id = String(req.headers["webhook-id"]);
      const body = JSON.parse(Buffer.concat(chunks).toString("utf8")) as { data: { occurredAt: string } };
      if (!arrivals.has(id)) arrivals.set(id, { at: Date.now(), occurredAt: Date.parse(body.data.occurredAt) });
      res.writeHead(200).end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", () => resolve()));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/hooks`,
    arrivals,
    close: () => {
      server.closeAllConnections();
      server.close();
    },
  };
}

async function waitUntil(check: () => boolean | Promise<boolean>, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error("bench: timed out");
    await sleep(5);
  }
}

const nats = await startNatsServer();
const { pool, tenantId, caller } = await prepareBenchDatabase(DATABASE_NAME, POOL_MAX, logger);
const ledger = createLedger({ pool, clock: systemClock, newId: uuidV7 });
const relay = createOutboxRelay({
  pool, logger, natsUrl: nats.url, stream,
  batchMax: 256, idleMs: 5, standbyPollMs: 1000, retryDelayMsMax: 1000, publishTimeoutMs: 5000, statusLogMs: 60_000,
});
relay.start();
const settings = readWebhookSettings({
  HOLDFAST_WEBHOOK_ALLOWED_NETWORKS: "127.0.0.0/8",
  HOLDFAST_WEBHOOK_ENDPOINT_CONCURRENCY: args["endpoint-concurrency"],
});
const startWorker = (timeoutMs?: number) => {
  const worker = createWebhookWorker({
    pool, logger, natsUrl: nats.url, stream,
    settings: timeoutMs === undefined ? settings : { ...settings, timeoutMs },
  });
  worker.start();
  return worker;
};
async function addEndpoint(target: string): Promise<string> {
  const id = uuidV7();
  await pool.query(
    `insert into webhook_endpoints (tenant_id, endpoint_id, url, secret, created_at, updated_at) values ($1, $2, $3, $4, now(), now())`,
    [tenantId, id, target, newSigningSecret()],
  );
  return id;
}
let depositNo = 0;
const deposit = () =>
  ledger.deposit(caller, { walletId: `w${depositNo % 100}`, asset: "USD", amount: 1n, idempotencyKey: `d${depositNo++}`, metadata: {} });
const backlog = async () => Number((await pool.query<{ n: string }>("select count(*) as n from events where published_at is null")).rows[0]!.n);

console.log(`machine: ${cpus().length} × ${cpus()[0]?.model ?? "cpu"}, node ${process.version}`);

// 1. Throughput.
const fastReceivers = await Promise.all(Array.from({ length: ENDPOINTS_TOTAL }, () => receiver(false)));
for (const r of fastReceivers) await addEndpoint(r.url);
for (let i = 0; i < EVENTS_TOTAL; i += 32) {
  await Promise.all(Array.from({ length: Math.min(32, EVENTS_TOTAL - i) }, () => deposit()));
}
await waitUntil(async () => (await backlog()) === 0, 120_000);
const started = performance.now();
const worker = startWorker();
let intakeDoneS = 0;
await waitUntil(() => {
  if (intakeDoneS === 0 && worker.totals().intake.messages >= EVENTS_TOTAL) intakeDoneS = (performance.now() - started) / 1000;
  return fastReceivers.every((r) => r.arrivals.size >= EVENTS_TOTAL);
}, 600_000);
const elapsedS = (performance.now() - started) / 1000;
const deliveries = EVENTS_TOTAL * ENDPOINTS_TOTAL;
console.log(
  `throughput: ${deliveries} deliveries (${EVENTS_TOTAL} events × ${ENDPOINTS_TOTAL} endpoints) in ${elapsedS.toFixed(2)} s = ` +
    `${Math.round(deliveries / elapsedS)} deliveries/s, ${Math.round(EVENTS_TOTAL / elapsedS)} events/s ` +
    `(all ${EVENTS_TOTAL} events taken from the stream and stored after ${intakeDoneS.toFixed(2)} s)`,
);
for (const r of fastReceivers) r.close();

await pool.query("delete from webhook_endpoints");

// 2. Isolation: delay to a fast endpoint, alone and next to a hanging one.
await worker.stop();
const isolated = startWorker(20_000);
async function delays(label: string): Promise<number[]> {
  const fast = await receiver(false);
  await addEndpoint(fast.url);
  const count = RATE_PER_S * RUN_SECONDS;
  for (let i = 0; i < count; i++) {
    void deposit();
    await sleep(1000 / RATE_PER_S);
  }
  await waitUntil(() => fast.arrivals.size >= count, 120_000);
  fast.close();
  const sorted = [...fast.arrivals.values()].map((a) => a.at - a.occurredAt).sort((a, b) => a - b);
  console.log(
    `${label}: ${count} events at ${RATE_PER_S}/s, delay commit → fast receiver p50 ${percentile(sorted, 50)} ms, ` +
      `p99 ${percentile(sorted, 99)} ms, max ${sorted.at(-1)} ms`,
  );
  return sorted;
}
const alone = await delays("fast endpoint alone");
await pool.query("delete from webhook_endpoints");
const slow = await receiver(true);
const slowId = await addEndpoint(slow.url);
const beside = await delays("fast endpoint beside one that hangs 30 s");
const inFlight = Number(
  (await pool.query<{ n: string }>("select count(*) as n from webhook_deliveries where endpoint_id = $1 and locked_until > now()", [slowId]))
    .rows[0]!.n,
);
console.log(
  `added delay: p50 ${percentile(beside, 50) - percentile(alone, 50)} ms, p99 ${percentile(beside, 99) - percentile(alone, 99)} ms ` +
    `(slow endpoint's requests in flight at the end: ${inFlight})`,
);
slow.close();
await isolated.stop();
await relay.stop();
await pool.end();
await nats.close();
