// Goal: one slow endpoint never delays another's deliveries (no head-of-line blocking), a slow
// endpoint never has more requests in flight than HOLDFAST_WEBHOOK_ENDPOINT_CONCURRENCY, and two
// worker replicas side by side deliver everything without sending anything twice.
// Method: a real nats-server, ledger server and in-process workers. The slow receiver holds
// every request for 30 s (the worker's request timeout is 20 s, so none of them finishes while
// the test runs); the test asserts that the fast endpoint got the whole burst while the slow
// one's first requests were all still hanging, without measuring any duration. For replicas,
// two workers share the durable consumer and the deliveries table; each receiver counts how
// often it saw each webhook-id.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { WebhookService } from "@holdfast/gen/holdfast/v1/webhooks_pb";
import { key } from "./support/ledger.js";
import { startNatsServer } from "./support/nats.js";
import { startTestServer } from "./support/server.js";
import { loopback_networks, startReceiver, startTestWorker, waitFor, type Receiver } from "./support/webhooks.js";

let nats: Awaited<ReturnType<typeof startNatsServer>>;
let s: Awaited<ReturnType<typeof startTestServer>>;

beforeAll(async () => {
  nats = await startNatsServer();
  s = await startTestServer({ NATS_URL: nats.url, HOLDFAST_WEBHOOK_ALLOWED_NETWORKS: loopback_networks });
});
afterAll(async () => {
  await s?.close();
  await nats?.close();
});

const caller = () => ({ tenantId: s.tenantId, scopeWalletId: null });
const hooks = () => s.client(WebhookService);
const endpoint_concurrency = 4;

async function endpointFor(receiver: Receiver, eventTypes: string[] = []): Promise<string> {
  const { endpoint, secret } = await hooks().createEndpoint({ url: receiver.url, eventTypes });
  receiver.secrets = [secret];
  return endpoint!.endpointId;
}

/** `count` deposits on `wallets` wallets; returns the event ids. */
async function deposits(prefix: string, count: number, wallets = 10): Promise<string[]> {
  await Promise.all(
    Array.from({ length: wallets }, async (_, w) => {
      for (let i = w; i < count; i += wallets) {
        await s.app.ledger.deposit(caller(), { walletId: `${prefix}${w}`, asset: "USD", amount: 1n, idempotencyKey: key(), metadata: {} });
      }
    }),
  );
  const { rows } = await s.app.pool.query<{ event_id: string }>("select event_id from events where starts_with(wallet_id, $1)", [prefix]);
  return rows.map((r) => r.event_id);
}

describe("webhook isolation", () => {
  it("delivers a burst to a fast endpoint while another endpoint hangs on every request", async () => {
    const worker = startTestWorker(s.app.pool, nats.url, {
      HOLDFAST_WEBHOOK_TIMEOUT_MS: "20000",
      HOLDFAST_WEBHOOK_ENDPOINT_CONCURRENCY: String(endpoint_concurrency),
    });
    const slow = await startReceiver();
    slow.answer(() => ({ status: 200, hangMs: 30_000 }));
    const fast = await startReceiver();
    const slowId = await endpointFor(slow);
    const fastId = await endpointFor(fast);
    try {
      const events = await deposits("iso_", 200);
      await waitFor("the fast endpoint to get the whole burst", () => events.every((id) => fast.delivered().has(id)));
      // Everything arrived while the slow endpoint's requests were all still open, and it never
      // had more than its share of the worker's slots.
      expect(slow.delivered().size).toBe(0);
      expect(slow.received).toHaveLength(endpoint_concurrency);
      expect(slow.open()).toBe(endpoint_concurrency);
      expect(fast.received.every((r) => r.verifiedBy[0] === true)).toBe(true);
    } finally {
      await slow.stop();
      await worker.stop();
      await fast.stop();
      await hooks().deleteEndpoint({ endpointId: slowId });
      await hooks().deleteEndpoint({ endpointId: fastId });
    }
  });

  it("two replicas deliver every event once to every endpoint, within the endpoint's concurrency", async () => {
    // Each replica may have 6 requests in flight: fewer than the 3 endpoints × 4 the burst could
    // use, so the replicas have to share the work.
    const replica = { HOLDFAST_WEBHOOK_CONCURRENCY: "6" };
    const workers = [startTestWorker(s.app.pool, nats.url, replica), startTestWorker(s.app.pool, nats.url, replica)];
    const receivers = [await startReceiver(), await startReceiver(), await startReceiver()];
    // Answers take a moment, so that requests overlap and the limit is put to the test.
    for (const r of receivers) r.answer(() => ({ status: 200, hangMs: 10 }));
    const endpointIds = await Promise.all(receivers.map((r) => endpointFor(r)));
    try {
      const events = await deposits("rep_", 300, 15);
      await waitFor("every endpoint to get every event", () => receivers.every((r) => events.every((id) => r.delivered().has(id))));
      for (const receiver of receivers) {
        const relevant = receiver.received.filter((r) => r.webhookId !== "" && events.includes(r.webhookId));
        expect(relevant).toHaveLength(events.length);
        // The limit holds across both replicas (the default test setting is 4).
        expect(receiver.openMax()).toBeLessThanOrEqual(endpoint_concurrency);
        expect(receiver.openMax()).toBeGreaterThan(1);
      }
      // Both replicas did part of the work (work goes to the replicas with room), and recorded it.
      const succeeded = () => workers.map((w) => w.totals().sender.succeeded);
      await waitFor("the outcomes to be recorded", () => succeeded()[0]! + succeeded()[1]! === events.length * receivers.length);
      const [a, b] = succeeded();
      expect(a).toBeGreaterThan(0);
      expect(b).toBeGreaterThan(0);
    } finally {
      for (const w of workers) await w.stop();
      for (const r of receivers) await r.stop();
      for (const endpointId of endpointIds) await hooks().deleteEndpoint({ endpointId });
    }
  });
});
