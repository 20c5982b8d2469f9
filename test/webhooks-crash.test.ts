// Goal: a webhook worker killed in the middle of a burst loses nothing: once a worker runs
// again, every event reaches the endpoint (at least once, with the event id as webhook-id so
// the receiver can drop a repeat).
// Method: the real worker process (`workers/webhooks/src/main.ts` under tsx) on this file's
// nats-server and database; a burst of deposits through the ledger with its relay; SIGKILL
// (no chance to clean up) once the receiver has seen part of the burst, while events are still
// arriving; then a new worker process. Messages the dead worker took but had not acknowledged
// come back after the consumer's ack_wait, and deliveries it had claimed after their lease.
import { spawn, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { WebhookService } from "@holdfast/gen/holdfast/v1/webhooks_pb";
import { key } from "./support/ledger.js";
import { startNatsServer } from "./support/nats.js";
import { startTestServer } from "./support/server.js";
import { loopback_networks, startReceiver, waitFor, type Receiver } from "./support/webhooks.js";

let nats: Awaited<ReturnType<typeof startNatsServer>>;
let s: Awaited<ReturnType<typeof startTestServer>>;
let receiver: Receiver;
const children = new Set<ChildProcess>();

beforeAll(async () => {
  nats = await startNatsServer();
  s = await startTestServer({ NATS_URL: nats.url, HOLDFAST_WEBHOOK_ALLOWED_NETWORKS: loopback_networks });
  receiver = await startReceiver();
  // A little slow, so the kill finds requests in flight.
  receiver.answer(() => ({ status: 200, hangMs: 5 }));
});
afterAll(async () => {
  for (const child of children) child.kill("SIGKILL");
  await receiver?.stop();
  await s?.close();
  await nats?.close();
});

/** Starts `npm run worker:webhooks`' entry point, from source, against this file's servers. */
function startWorkerProcess(): ChildProcess {
  const child = spawn(process.execPath, ["--conditions=source", "--import", "tsx", "workers/webhooks/src/main.ts"], {
    env: {
      PATH: process.env["PATH"],
      DATABASE_URL: s.db.url,
      NATS_URL: nats.url,
      LOG_LEVEL: "warn",
      HOLDFAST_PG_POOL_MAX: "8",
      HOLDFAST_WEBHOOK_ALLOWED_NETWORKS: loopback_networks,
      HOLDFAST_WEBHOOK_RETRY_SCHEDULE: "50ms,100ms,200ms,500ms,1s,1s,1s,1s,1s,1s",
      HOLDFAST_WEBHOOK_TIMEOUT_MS: "1000",
    },
    stdio: ["ignore", "inherit", "inherit"],
  });
  children.add(child);
  child.on("exit", () => children.delete(child));
  return child;
}

describe("webhook worker crash", () => {
  it("delivers every event of a burst when the worker is killed mid-burst and restarted", async () => {
    const { secret } = await s.client(WebhookService).createEndpoint({ url: receiver.url, eventTypes: ["holdfast.deposit.completed"] });
    receiver.secrets = [secret];
    const first = startWorkerProcess();

    const total = 400;
    const wallets = 8;
    const burst = Promise.all(
      Array.from({ length: wallets }, async (_, w) => {
        for (let i = w; i < total; i += wallets) {
          await s.app.ledger.deposit({ tenantId: s.tenantId, scopeWalletId: null }, { walletId: `crash_${w}`, asset: "USD", amount: 1n, idempotencyKey: key(), metadata: {} });
        }
      }),
    );
    await waitFor("the first worker to deliver part of the burst", () => receiver.delivered().size >= 50, 30_000);
    first.kill("SIGKILL");
    await once(first, "exit");
    const deliveredBeforeRestart = receiver.delivered().size;
    await burst;
    startWorkerProcess();

    const { rows } = await s.app.pool.query<{ event_id: string }>("select event_id from events where starts_with(wallet_id, 'crash_')");
    expect(rows).toHaveLength(total);
    await waitFor("every event after the restart", () => rows.every((r) => receiver.delivered().has(r.event_id)), 40_000);
    expect(deliveredBeforeRestart).toBeLessThan(total);
    expect(receiver.received.every((r) => r.verifiedBy[0] === true)).toBe(true);
    // At least once: a repeat is possible only for requests in flight at the kill.
    const repeats = receiver.received.length - receiver.delivered().size;
    expect(repeats).toBeLessThanOrEqual(64);
  });
});
