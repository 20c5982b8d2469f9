// Goal: the retry rules of docs/webhooks.md hold at the wire: after the last attempt a delivery
// is failed (dead letter) and RetryDelivery sends it again; 410 disables the endpoint; an
// endpoint failing for the configured period is disabled; both write a
// holdfast.webhook.endpoint_disabled event to the tenant's endpoints that take it; Retry-After
// is honoured; redirects are not followed; slow answers time out; a connection to an address the
// policy forbids is never opened, whatever the URL's host name resolves to.
// Method: a real nats-server, ledger server and in-process worker with a 3-attempt schedule in
// milliseconds, a 500 ms request timeout and a 3 s disable period; local receivers answer what
// each test needs. The HTTP client is also driven directly with an empty allow-list.
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DeliveryStatus, DisabledReason, WebhookService, type WebhookDelivery } from "@holdfast/gen/holdfast/v1/webhooks_pb";
import { createUrlPolicy } from "@holdfast/webhooks-core/url-policy";
import { createHttpPoster } from "@holdfast/webhooks/http-post";
import { key } from "./support/ledger.js";
import { startNatsServer } from "./support/nats.js";
import { startTestServer } from "./support/server.js";
import { loopback_networks, startReceiver, startTestWorker, waitFor, type Receiver } from "./support/webhooks.js";

let nats: Awaited<ReturnType<typeof startNatsServer>>;
let s: Awaited<ReturnType<typeof startTestServer>>;
let worker: ReturnType<typeof startTestWorker>;
let watcher: Receiver;

beforeAll(async () => {
  nats = await startNatsServer();
  s = await startTestServer({ NATS_URL: nats.url, HOLDFAST_WEBHOOK_ALLOWED_NETWORKS: loopback_networks });
  worker = startTestWorker(s.app.pool, nats.url, {
    HOLDFAST_WEBHOOK_RETRY_SCHEDULE: "20ms,20ms",
    HOLDFAST_WEBHOOK_TIMEOUT_MS: "500",
    HOLDFAST_WEBHOOK_DISABLE_AFTER_SECONDS: "3",
  });
  // Hears about every endpoint the worker disables.
  watcher = await startReceiver();
  await endpointFor(watcher, ["holdfast.webhook.endpoint_disabled"]);
});
afterAll(async () => {
  await worker?.stop();
  await watcher?.stop();
  await s?.close();
  await nats?.close();
});

const caller = () => ({ tenantId: s.tenantId, scopeWalletId: null });
const hooks = () => s.client(WebhookService);
const deposit = (walletId: string) =>
  s.app.ledger.deposit(caller(), { walletId, asset: "USD", amount: 1n, idempotencyKey: key(), metadata: {} });

async function endpointFor(receiver: Receiver, eventTypes: string[] = ["holdfast.deposit.completed"]): Promise<string> {
  const { endpoint, secret } = await hooks().createEndpoint({ url: receiver.url, eventTypes });
  receiver.secrets = [secret];
  return endpoint!.endpointId;
}

/** Waits until the endpoint's only delivery satisfies `done`, and returns it. */
async function onlyDelivery(endpointId: string, done: (d: WebhookDelivery) => boolean): Promise<WebhookDelivery> {
  let found: WebhookDelivery | undefined;
  await waitFor("the delivery", async () => {
    const { deliveries } = await hooks().listDeliveries({ endpointId });
    found = deliveries.length === 1 && done(deliveries[0]!) ? deliveries[0] : undefined;
    return found !== undefined;
  });
  return found!;
}

async function endpoint(endpointId: string) {
  const { endpoints } = await hooks().listEndpoints({ pageSize: 500 });
  return endpoints.find((e) => e.endpointId === endpointId)!;
}

/** The endpoint_disabled webhook the watcher got for `endpointId`. */
async function disabledEvent(endpointId: string) {
  const find = () =>
    watcher.received.find((r) => (r.payload?.data["endpoint"] as { endpointId?: string } | undefined)?.endpointId === endpointId);
  await waitFor("the endpoint_disabled webhook", () => find() !== undefined);
  const req = find()!;
  expect(req.verifiedBy).toEqual([true]);
  expect(req.payload!.type).toBe("holdfast.webhook.endpoint_disabled");
  return req.payload!.data as { reason: string; lastError: string; tenantId: string; endpoint: { enabled?: boolean } };
}

describe("webhook failures", () => {
  it("dead-letters a delivery after the last attempt, and RetryDelivery sends it again", async () => {
    const receiver = await startReceiver();
    receiver.answer(() => ({ status: 503 }));
    const endpointId = await endpointFor(receiver);
    await deposit("dead_1");
    const failed = await onlyDelivery(endpointId, (d) => d.status === DeliveryStatus.FAILED);
    expect(failed).toMatchObject({ attempts: 3, lastHttpStatus: 503, lastError: "HTTP 503: nope" });
    expect(failed.finishedAt).toBeDefined();
    expect(failed.nextAttemptAt).toBeUndefined();
    expect(receiver.received).toHaveLength(3);
    const { deliveries } = await hooks().listDeliveries({ endpointId, status: DeliveryStatus.PENDING });
    expect(deliveries).toHaveLength(0);

    receiver.answer(() => ({ status: 204 }));
    const { delivery } = await hooks().retryDelivery({ deliveryId: failed.deliveryId });
    expect(delivery).toMatchObject({ status: DeliveryStatus.PENDING, attempts: 0 });
    const done = await onlyDelivery(endpointId, (d) => d.status === DeliveryStatus.SUCCEEDED);
    expect(done).toMatchObject({ attempts: 1, lastHttpStatus: 204, lastError: "" });
    expect(new Set(receiver.received.map((r) => r.webhookId)).size).toBe(1);
    await hooks().deleteEndpoint({ endpointId });
    await receiver.stop();
  });

  it("disables an endpoint that answers 410 Gone and tells the tenant's other endpoints", async () => {
    const receiver = await startReceiver();
    receiver.answer(() => ({ status: 410 }));
    const endpointId = await endpointFor(receiver);
    await deposit("gone_1");
    const data = await disabledEvent(endpointId);
    expect(data).toMatchObject({ reason: "DISABLED_REASON_GONE", tenantId: s.tenantId, lastError: "HTTP 410: nope" });
    expect(data.endpoint.enabled).toBeUndefined(); // false is the JSON default, so it is left out
    expect(await endpoint(endpointId)).toMatchObject({ enabled: false, disabledReason: DisabledReason.GONE });
    // No more attempts while disabled: the delivery waits, pending, for the endpoint to come back.
    await deposit("gone_2");
    await sleep(300);
    expect(receiver.received).toHaveLength(1);
    receiver.answer(() => ({ status: 200 }));
    await hooks().updateEndpoint({ endpointId, enabled: true });
    await waitFor("the waiting delivery after re-enabling", () => receiver.delivered().size === 1);
    await hooks().deleteEndpoint({ endpointId });
    await receiver.stop();
  });

  it("disables an endpoint that keeps failing for the disable period", async () => {
    const receiver = await startReceiver();
    receiver.answer(() => ({ status: 500 }));
    const endpointId = await endpointFor(receiver);
    // Events keep coming and every attempt fails; after 3 s of that the endpoint is disabled.
    for (let i = 0; (await endpoint(endpointId)).enabled; i++) {
      expect(i, "the endpoint should have been disabled by now").toBeLessThan(100);
      await deposit(`failing_${i}`);
      await sleep(200);
    }
    const disabled = await endpoint(endpointId);
    expect(disabled.disabledReason).toBe(DisabledReason.FAILING);
    expect(disabled.failingSince).toBeDefined();
    const data = await disabledEvent(endpointId);
    expect(data).toMatchObject({ reason: "DISABLED_REASON_FAILING", lastError: "HTTP 500: nope" });
    const enabled = await hooks().updateEndpoint({ endpointId, enabled: true });
    expect(enabled.endpoint?.failingSince).toBeUndefined();
    await hooks().deleteEndpoint({ endpointId });
    await receiver.stop();
  });

  it("honours Retry-After", async () => {
    const receiver = await startReceiver();
    receiver.answer((_req, n) => (n === 1 ? { status: 429, headers: { "retry-after": "1" } } : { status: 200 }));
    const endpointId = await endpointFor(receiver);
    await deposit("later_1");
    await waitFor("the second attempt", () => receiver.delivered().size === 1);
    const [first, second] = receiver.received;
    // The schedule alone would retry after about 20 ms.
    expect(second!.at - first!.at).toBeGreaterThanOrEqual(950);
    await hooks().deleteEndpoint({ endpointId });
    await receiver.stop();
  });

  it("does not follow redirects", async () => {
    const target = await startReceiver();
    const receiver = await startReceiver();
    receiver.answer(() => ({ status: 302, headers: { location: target.url } }));
    const endpointId = await endpointFor(receiver);
    await deposit("redirect_1");
    const failed = await onlyDelivery(endpointId, (d) => d.status === DeliveryStatus.FAILED);
    expect(failed.lastHttpStatus).toBe(302);
    expect(failed.lastError).toBe(`redirect 302 not followed (to ${target.url})`);
    expect(target.received).toHaveLength(0);
    await hooks().deleteEndpoint({ endpointId });
    await receiver.stop();
    await target.stop();
  });

  it("gives up on an answer slower than the request timeout", async () => {
    const receiver = await startReceiver();
    receiver.answer(() => ({ status: 200, hangMs: 5000 }));
    const endpointId = await endpointFor(receiver);
    await deposit("slow_1");
    const failed = await onlyDelivery(endpointId, (d) => d.status === DeliveryStatus.FAILED);
    expect(failed).toMatchObject({ attempts: 3, lastHttpStatus: 0, lastError: "timeout after 500 ms" });
    expect(failed.lastLatencyMs).toBeGreaterThanOrEqual(450);
    await hooks().deleteEndpoint({ endpointId });
    await receiver.stop();
  });

  it("never connects to an address the policy forbids", async () => {
    const receiver = await startReceiver();
    const poster = createHttpPoster({ policy: createUrlPolicy([]), timeoutMs: 1000, socketsMax: 4, responseBytesMax: 1024, userAgent: "test" });
    try {
      // By name (the lookup hook) and by IP literal (checked before connecting).
      for (const url of [`http://localhost:${receiver.port}/hooks`, receiver.url, `https://localhost:${receiver.port}/`]) {
        const result = await poster.post(url, {}, "{}");
        expect(result.status).toBeNull();
        expect(result.error).toMatch(/^blocked: resolves to a loopback address/);
      }
      expect(receiver.received).toHaveLength(0);
    } finally {
      poster.close();
      await receiver.stop();
    }
  });
});
