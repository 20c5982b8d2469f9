// Goal: balance alert events reach NATS subscribers and webhook endpoints exactly once per
// crossing: holdfast.balance.low and holdfast.balance.recovered are published by the outbox
// relay, taken by an endpoint whose filter is holdfast.balance.*, signed, with the event id as
// webhook-id and the BalanceAlertEvent in the body; republishing the same outbox rows adds no
// message to the stream and no delivery.
// Method: a real nats-server and ledger server (with its outbox relay) for the file, the
// webhook worker in this process, and a local HTTP receiver that verifies each request with the
// standardwebhooks library. The alert is put over the wire, the commands go through the ledger
// core. Redelivery is forced by marking the alert events unpublished again; a later crossing,
// delivered after them, shows the worker has gone past them.
import { randomUUID } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import { fromBinary } from "@bufbuild/protobuf";
import { jetstream } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AdminService } from "@holdfast/gen/holdfast/v1/admin_pb";
import { EventSchema, type Event } from "@holdfast/gen/holdfast/v1/events_pb";
import { WebhookService } from "@holdfast/gen/holdfast/v1/webhooks_pb";
import { checkInvariants } from "@holdfast/ledger/invariants";
import { startNatsServer } from "./support/nats.js";
import { startTestServer } from "./support/server.js";
import { loopback_networks, startReceiver, startTestWorker, waitFor, type Receiver } from "./support/webhooks.js";

const STREAM = "HOLDFAST_EVENTS";

let nats: Awaited<ReturnType<typeof startNatsServer>>;
let s: Awaited<ReturnType<typeof startTestServer>>;
let worker: ReturnType<typeof startTestWorker>;
let receiver: Receiver;

beforeAll(async () => {
  nats = await startNatsServer();
  s = await startTestServer({ NATS_URL: nats.url, HOLDFAST_WEBHOOK_ALLOWED_NETWORKS: loopback_networks });
  worker = startTestWorker(s.app.pool, nats.url);
  receiver = await startReceiver();
});
afterAll(async () => {
  await worker?.stop();
  await receiver?.stop();
  await s?.close();
  await nats?.close();
});

const caller = () => ({ tenantId: s.tenantId, scopeWalletId: null });
const key = () => `k-${randomUUID()}`;

async function relayDone(): Promise<void> {
  const deadline = Date.now() + 30_000;
  while ((await s.app.relay!.refreshStatus()).backlog > 0) {
    if (Date.now() > deadline) throw new Error("timed out waiting for the relay");
    await sleep(50);
  }
}

/** The alert events of a wallet on the stream (every message, duplicates included). */
async function streamAlertEvents(walletId: string): Promise<Event[]> {
  await relayDone();
  const nc = await connect({ servers: nats.url });
  try {
    const consumer = await jetstream(nc).consumers.get(STREAM, { filter_subjects: `holdfast.events.${s.tenantId}.${walletId}.balance.>` });
    const out: Event[] = [];
    for await (const m of await consumer.fetch({ max_messages: 100, expires: 1000 })) {
      out.push(fromBinary(EventSchema, m.data));
    }
    return out;
  } finally {
    await nc.close();
  }
}

/** The outbox's alert events of a wallet: id and type, in sequence order. */
async function outboxAlertEvents(walletId: string): Promise<{ event_id: string; type: string }[]> {
  const { rows } = await s.app.pool.query<{ event_id: string; type: string }>(
    "select event_id, type from events where tenant_id = $1 and wallet_id = $2 and type like 'holdfast.balance.%' order by seq",
    [s.tenantId, walletId],
  );
  return rows;
}

describe("balance alert events", () => {
  it("reach NATS and a webhook endpoint once per crossing, however often they are republished", async () => {
    const walletId = "hook_w";
    const { secret } = await s.client(WebhookService).createEndpoint({ url: receiver.url, eventTypes: ["holdfast.balance.*"] });
    receiver.secrets = [secret];
    await s.client(AdminService).putBalanceAlert({ alertId: "hook", walletId, asset: "USD", below: 500n, hysteresis: 50n, metadata: { notify: "billing" } });

    const ledger = s.app.ledger;
    await ledger.deposit(caller(), { walletId, asset: "USD", amount: 1_000n, idempotencyKey: key(), metadata: {} });
    const hold = await ledger.reserve(caller(), { walletId, asset: "USD", amount: 700n, holdId: "hook_h", ttlSeconds: 60, idempotencyKey: key(), metadata: {} });
    expect(hold.ok).toBe(true);
    await ledger.release(caller(), { holdId: "hook_h", idempotencyKey: key(), metadata: {} });

    const outbox = await outboxAlertEvents(walletId);
    expect(outbox.map((e) => e.type)).toEqual(["holdfast.balance.low", "holdfast.balance.recovered"]);
    await waitFor("two alert deliveries", () => receiver.delivered().size === 2);
    expect([...receiver.delivered()].sort()).toEqual(outbox.map((e) => e.event_id).sort());

    // Deliveries run concurrently, so they may arrive in either order.
    const bodyOf = (type: string) => receiver.received.map((r) => r.payload!).find((b) => b.type === type)!;
    expect(receiver.received.map((r) => r.payload!.type).sort()).toEqual(["holdfast.balance.low", "holdfast.balance.recovered"]);
    expect(bodyOf("holdfast.balance.low").data).toMatchObject({
      eventId: outbox[0]!.event_id,
      type: "holdfast.balance.low",
      walletId,
      asset: "USD",
      balance: { available: "300" },
      metadata: { notify: "billing" },
      balanceLow: { alert: { alertId: "hook", walletId, asset: "USD", below: "500", hysteresis: "50" }, episode: "1" },
    });
    expect(bodyOf("holdfast.balance.recovered").data).toMatchObject({ balance: { available: "1000" }, balanceRecovered: { alert: { alertId: "hook" }, episode: "1" } });

    const streamed = await streamAlertEvents(walletId);
    expect(streamed.map((e) => [e.eventId, e.payload.case])).toEqual([
      [outbox[0]!.event_id, "balanceLow"],
      [outbox[1]!.event_id, "balanceRecovered"],
    ]);

    // Republish both: the stream drops them by id (Nats-Msg-Id), the worker adds no delivery.
    await s.app.pool.query("update events set published_at = null where tenant_id = $1 and wallet_id = $2 and type like 'holdfast.balance.%'", [
      s.tenantId,
      walletId,
    ]);
    await relayDone();
    // A later crossing, delivered once the worker has gone past anything republished.
    await ledger.spend(caller(), { walletId, asset: "USD", amount: 600n, idempotencyKey: key(), metadata: {} });
    await waitFor("the third alert delivery", () => receiver.delivered().size === 3);
    // One request per event: no repeat reached the receiver.
    expect(receiver.received.map((r) => r.webhookId).sort()).toEqual((await outboxAlertEvents(walletId)).map((e) => e.event_id).sort());
    expect((await streamAlertEvents(walletId)).map((e) => e.payload.case)).toEqual(["balanceLow", "balanceRecovered", "balanceLow"]);
    expect(await checkInvariants(s.app.pool)).toEqual([]);
  });
});
