// Goal: webhook signing secrets, old or new, and endpoint URLs (which may carry a receiver's
// token) never appear in what the worker logs, whatever happens to a delivery: success, retry,
// timeout, final failure, an endpoint disabled by 410 Gone, a secret rotation.
// Method: a real nats-server, ledger server and in-process worker whose logger is the process
// logger (createLogger, with its redaction) at level trace, writing into memory. Receivers on
// loopback answer 500 then 200, 410, or hang past the request timeout; one secret is rotated
// while deliveries go out. The captured lines are checked to be there (the test would see a
// leak) and to hold none of the secrets or the URL token.
import { Writable } from "node:stream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DeliveryStatus, WebhookService } from "@holdfast/gen/holdfast/v1/webhooks_pb";
import { createLogger } from "@holdfast/common/logger";
import { key } from "./support/ledger.js";
import { startNatsServer } from "./support/nats.js";
import { startTestServer } from "./support/server.js";
import { loopback_networks, startReceiver, startTestWorker, waitFor, type Receiver } from "./support/webhooks.js";

let nats: Awaited<ReturnType<typeof startNatsServer>>;
let s: Awaited<ReturnType<typeof startTestServer>>;
const receivers: Receiver[] = [];

beforeAll(async () => {
  nats = await startNatsServer();
  s = await startTestServer({ NATS_URL: nats.url, HOLDFAST_WEBHOOK_ALLOWED_NETWORKS: loopback_networks });
});
afterAll(async () => {
  for (const r of receivers) await r.stop();
  await s?.close();
  await nats?.close();
});

const url_token = "tok_do_not_log_4b1d";
const hooks = () => s.client(WebhookService);

/** An endpoint whose URL carries a token, for a receiver answering `answer`. */
async function endpointFor(answer: Parameters<Receiver["answer"]>[0]) {
  const receiver = await startReceiver();
  receivers.push(receiver);
  receiver.answer(answer);
  const { endpoint, secret } = await hooks().createEndpoint({
    url: `${receiver.url}?token=${url_token}`,
    eventTypes: ["holdfast.deposit.completed"],
  });
  receiver.secrets = [secret];
  return { receiver, endpointId: endpoint!.endpointId, secret };
}

describe("webhook worker logs", () => {
  it("never carry a signing secret or an endpoint URL", async () => {
    const lines: string[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _encoding, done) {
        lines.push(...chunk.toString("utf8").split("\n").filter((line) => line !== ""));
        done();
      },
    });
    const worker = startTestWorker(
      s.app.pool,
      nats.url,
      { HOLDFAST_WEBHOOK_RETRY_SCHEDULE: "20ms,20ms", HOLDFAST_WEBHOOK_TIMEOUT_MS: "300" },
      createLogger("webhooks", "trace", sink),
    );
    const flaky = await endpointFor((_req, n) => ({ status: n <= 2 ? 500 : 200 }));
    const gone = await endpointFor(() => ({ status: 410 }));
    const hanging = await endpointFor(() => ({ status: 200, hangMs: 5_000 }));
    // Hears the endpoint_disabled event, so its delivery is logged too.
    const watcher = await endpointFor(() => ({ status: 200 }));
    await hooks().updateEndpoint({ endpointId: watcher.endpointId, eventTypes: { eventTypes: [] } });
    const secrets = [flaky.secret, gone.secret, hanging.secret, watcher.secret];
    try {
      const deposit = () =>
        s.app.ledger.deposit({ tenantId: s.tenantId, scopeWalletId: null }, { walletId: "logs_1", asset: "USD", amount: 1n, idempotencyKey: key(), metadata: {} });
      await deposit();
      await waitFor("the flaky endpoint's first success", () => flaky.receiver.delivered().size === 1);
      const rotated = await hooks().rotateEndpointSecret({ endpointId: flaky.endpointId, overlapSeconds: 60 });
      secrets.push(rotated.secret);
      await deposit();
      await waitFor("a delivery signed by both secrets", () => flaky.receiver.delivered().size === 2);
      await waitFor("the hanging endpoint's dead letter", async () => {
        const { deliveries } = await hooks().listDeliveries({ endpointId: hanging.endpointId, status: DeliveryStatus.FAILED });
        return deliveries.length >= 1;
      });
      await waitFor("the endpoint_disabled webhook", () =>
        watcher.receiver.received.some((r) => r.payload?.type === "holdfast.webhook.endpoint_disabled"),
      );
    } finally {
      await worker.stop();
    }
    const text = lines.join("\n");
    // The lines are there to be checked: attempts that failed, the disable, the timeout.
    expect(text).toContain("webhooks: attempt failed");
    expect(text).toContain("webhooks: endpoint disabled");
    expect(text).toContain("timeout after 300 ms");
    expect(flaky.receiver.received.at(-1)!.signature.split(" ")).toHaveLength(2);
    for (const secret of secrets) {
      expect(text).not.toContain(secret);
      expect(text).not.toContain(secret.slice("whsec_".length, "whsec_".length + 16));
    }
    expect(text).not.toContain(url_token);
    expect(text).not.toContain("/hooks?");
  });
});
