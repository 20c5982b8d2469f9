// Goal: ledger events reach webhook endpoints as the Standard Webhooks spec says, each endpoint
// seeing exactly the event types its filters take, every request signed so that the
// `standardwebhooks` library verifies it; failed attempts are retried with the same webhook-id
// until they succeed; a receiver that is down during a burst gets every delivery once it is
// back; during a secret rotation's overlap both secrets verify, and after it only the new one.
// Method: a real nats-server and ledger server (with its outbox relay) per file, the webhook
// worker in this process with a retry schedule in milliseconds, and local HTTP receivers that
// verify each request with the library. Commands go through the ledger core; the expected
// events are read back from the outbox table.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DeliveryStatus, WebhookService } from "@holdfast/gen/holdfast/v1/webhooks_pb";
import { key } from "./support/ledger.js";
import { startNatsServer } from "./support/nats.js";
import { startTestServer } from "./support/server.js";
import { loopback_networks, startReceiver, startTestWorker, waitFor, type Receiver } from "./support/webhooks.js";

let nats: Awaited<ReturnType<typeof startNatsServer>>;
let s: Awaited<ReturnType<typeof startTestServer>>;
let worker: ReturnType<typeof startTestWorker>;

beforeAll(async () => {
  nats = await startNatsServer();
  s = await startTestServer({ NATS_URL: nats.url, HOLDFAST_WEBHOOK_ALLOWED_NETWORKS: loopback_networks });
  worker = startTestWorker(s.app.pool, nats.url);
});
afterAll(async () => {
  await worker?.stop();
  await s?.close();
  await nats?.close();
});

const caller = () => ({ tenantId: s.tenantId, scopeWalletId: null });
const hooks = () => s.client(WebhookService);

/** Creates an endpoint for `receiver` and teaches the receiver its secret. */
async function endpointFor(receiver: Receiver, eventTypes: string[] = []): Promise<string> {
  const { endpoint, secret } = await hooks().createEndpoint({ url: receiver.url, eventTypes });
  receiver.secrets = [secret];
  return endpoint!.endpointId;
}

/** The outbox's events of wallets starting with `prefix`: event id → type. */
async function eventsOf(prefix: string): Promise<Map<string, string>> {
  const { rows } = await s.app.pool.query<{ event_id: string; type: string }>(
    "select event_id, type from events where starts_with(wallet_id, $1)",
    [prefix],
  );
  return new Map(rows.map((r) => [r.event_id, r.type]));
}

/** Deposits, spends, and reserves then captures, on `wallets` wallets. */
async function burst(prefix: string, wallets: number, rounds: number): Promise<void> {
  const ledger = s.app.ledger;
  await Promise.all(
    Array.from({ length: wallets }, async (_, w) => {
      const walletId = `${prefix}${w}`;
      await ledger.deposit(caller(), { walletId, asset: "USD", amount: 10_000n, idempotencyKey: key(), metadata: {} });
      for (let i = 0; i < rounds; i++) {
        await ledger.spend(caller(), { walletId, asset: "USD", amount: 3n, idempotencyKey: key(), metadata: {} });
        const h = await ledger.reserve(caller(), { walletId, asset: "USD", amount: 5n, holdId: "", ttlSeconds: 60, idempotencyKey: key(), metadata: {} });
        if (!h.ok) throw new Error(h.reason);
        await ledger.capture(caller(), { holdId: h.hold.holdId, amount: 4n, idempotencyKey: key(), metadata: {} });
      }
    }),
  );
}

const ids = (events: Map<string, string>, keep: (type: string) => boolean) =>
  new Set([...events].filter(([, type]) => keep(type)).map(([id]) => id));

describe("webhook delivery", () => {
  it("sends every event to each endpoint whose filters take it, signed and in the Standard Webhooks shape", async () => {
    const all = await startReceiver();
    const holds = await startReceiver();
    const mixed = await startReceiver();
    const endpoints = [
      await endpointFor(all),
      await endpointFor(holds, ["holdfast.hold.*"]),
      await endpointFor(mixed, ["holdfast.deposit.completed", "holdfast.spend.completed"]),
    ];
    await burst("sig_", 6, 5);
    const events = await eventsOf("sig_");
    const want = {
      all: ids(events, () => true),
      holds: ids(events, (t) => t.startsWith("holdfast.hold.")),
      mixed: ids(events, (t) => t === "holdfast.deposit.completed" || t === "holdfast.spend.completed"),
    };
    expect(want.holds.size).toBeGreaterThan(0);
    await waitFor("every endpoint to get its events", () =>
      [...want.all].every((id) => all.delivered().has(id)) &&
      [...want.holds].every((id) => holds.delivered().has(id)) &&
      [...want.mixed].every((id) => mixed.delivered().has(id)),
    );
    const relevant = (r: Receiver) => r.received.filter((req) => events.has(req.webhookId));
    expect(new Set(relevant(holds).map((r) => r.webhookId))).toEqual(want.holds);
    expect(new Set(relevant(mixed).map((r) => r.webhookId))).toEqual(want.mixed);
    for (const receiver of [all, holds, mixed]) {
      for (const req of relevant(receiver)) {
        expect(req.verifiedBy).toEqual([true]);
        expect(req.signature).toMatch(/^v1,[A-Za-z0-9+/]+=*$/);
        const data = req.payload!.data as { eventId: string; type: string; tenantId: string; occurredAt: string };
        expect(data.eventId).toBe(req.webhookId);
        expect(req.payload!.type).toBe(events.get(req.webhookId));
        expect(data.type).toBe(req.payload!.type);
        expect(data.tenantId).toBe(s.tenantId);
        expect(req.payload!.timestamp).toBe(new Date(data.occurredAt).toISOString());
        expect(Math.abs(Number(req.timestamp) - Date.now() / 1000)).toBeLessThan(60);
      }
    }
    const listed = await hooks().listDeliveries({ endpointId: endpoints[1]!, pageSize: 500 });
    expect(listed.deliveries).toHaveLength(want.holds.size);
    for (const d of listed.deliveries) {
      expect(d).toMatchObject({ status: DeliveryStatus.SUCCEEDED, attempts: 1, lastHttpStatus: 200, lastError: "" });
      expect(d.finishedAt).toBeDefined();
    }
    for (const id of endpoints) await hooks().deleteEndpoint({ endpointId: id });
    for (const receiver of [all, holds, mixed]) await receiver.stop();
  });

  it("retries a receiver answering 500 twice, then 200: delivered on the third attempt, same webhook-id", async () => {
    const receiver = await startReceiver();
    receiver.answer((_req, n) => ({ status: n <= 2 ? 500 : 200 }));
    const endpointId = await endpointFor(receiver, ["holdfast.deposit.completed"]);
    await s.app.ledger.deposit(caller(), { walletId: "flaky_1", asset: "USD", amount: 5n, idempotencyKey: key(), metadata: {} });
    const [eventId] = (await eventsOf("flaky_")).keys();
    await waitFor("the third attempt", () => receiver.delivered().has(eventId!));
    expect(receiver.received.map((r) => r.webhookId)).toEqual([eventId, eventId, eventId]);
    expect(receiver.received.every((r) => r.verifiedBy[0] === true)).toBe(true);
    expect(new Set(receiver.received.map((r) => r.body)).size).toBe(1);
    await waitFor("the outcome to be recorded", async () => {
      const { deliveries } = await hooks().listDeliveries({ endpointId, status: DeliveryStatus.SUCCEEDED });
      return deliveries.length === 1;
    });
    const { deliveries } = await hooks().listDeliveries({ endpointId });
    expect(deliveries[0]).toMatchObject({ eventId, status: DeliveryStatus.SUCCEEDED, attempts: 3, lastHttpStatus: 200, lastError: "" });
    await hooks().deleteEndpoint({ endpointId });
    await receiver.stop();
  });

  it("delivers everything of a burst sent while the receiver was down, once it is back", async () => {
    const receiver = await startReceiver();
    const endpointId = await endpointFor(receiver);
    await receiver.stop();
    await burst("down_", 5, 4);
    const events = await eventsOf("down_");
    await waitFor("attempts against the dead receiver", async () => {
      const { deliveries } = await hooks().listDeliveries({ endpointId, pageSize: 500 });
      return deliveries.length === events.size && deliveries.every((d) => d.attempts >= 2);
    });
    const { deliveries: failing } = await hooks().listDeliveries({ endpointId, pageSize: 500 });
    expect(failing.every((d) => d.status === DeliveryStatus.PENDING && d.lastHttpStatus === 0)).toBe(true);
    expect(failing[0]!.lastError).toMatch(/ECONNREFUSED/);
    await receiver.start();
    await waitFor("every delivery after the receiver came back", () => [...events.keys()].every((id) => receiver.delivered().has(id)));
    expect(receiver.received.every((r) => r.verifiedBy[0] === true)).toBe(true);
    await hooks().deleteEndpoint({ endpointId });
    await receiver.stop();
  });

  it("signs with both secrets during a rotation's overlap, and only the new one after it", async () => {
    const receiver = await startReceiver();
    const endpointId = await endpointFor(receiver, ["holdfast.deposit.completed"]);
    const [oldSecret] = receiver.secrets;
    const deposit = (walletId: string) =>
      s.app.ledger.deposit(caller(), { walletId, asset: "USD", amount: 1n, idempotencyKey: key(), metadata: {} });
    const nextRequest = async (walletId: string) => {
      const before = receiver.received.length;
      await deposit(walletId);
      await waitFor(`a delivery for ${walletId}`, () => receiver.received.length > before);
      return receiver.received[before]!;
    };

    const rotated = await hooks().rotateEndpointSecret({ endpointId, overlapSeconds: 2 });
    receiver.secrets = [oldSecret!, rotated.secret];
    const during = await nextRequest("rot_during");
    expect(during.verifiedBy).toEqual([true, true]);
    expect(during.signature.split(" ")).toHaveLength(2);

    await waitFor("the overlap to end", async () => {
      const { endpoints } = await hooks().listEndpoints({ pageSize: 500 });
      return endpoints.find((e) => e.endpointId === endpointId)?.previousSecretExpiresAt === undefined;
    }, 10_000);
    const after = await nextRequest("rot_after");
    expect(after.verifiedBy).toEqual([false, true]);
    expect(after.signature.split(" ")).toHaveLength(1);
    await hooks().deleteEndpoint({ endpointId });
    await receiver.stop();
  });

  it("sends a test event to one endpoint whatever its filters", async () => {
    const receiver = await startReceiver();
    const endpointId = await endpointFor(receiver, ["holdfast.wallet.updated"]);
    const { delivery } = await hooks().sendTestEvent({ endpointId });
    await waitFor("the test event", () => receiver.delivered().has(delivery!.eventId));
    const [req] = receiver.received;
    expect(req!.verifiedBy).toEqual([true]);
    expect(req!.payload).toMatchObject({ type: "holdfast.webhook.test", data: { endpointId, tenantId: s.tenantId, eventId: delivery!.eventId } });
    await hooks().deleteEndpoint({ endpointId });
    await receiver.stop();
  });
});
