// Goal: the Prometheus metrics operators scrape are there, named by the conventions, and move
// with the work (issue 11, part 5): the ledger's on /metrics of its port behind the optional
// bearer token (RPCs by method and code, latency, commands by outcome, group commit, outbox,
// relay role, watchers, in-flight), the webhook worker's on its metrics port (deliveries,
// attempts, lag, open requests per endpoint, endpoints disabled), and the settings that turn
// them on are checked.
// Method: a ledger on a private nats-server with HOLDFAST_METRICS_TOKEN; calls over Connect, then
// scrapes with and without the token. A webhook worker in this process serves its registry on a
// free port; receivers that answer 200, hang, or answer 410 Gone move its figures.
import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import { Code, ConnectError } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createMetricsRegistry, serveMetricsPort } from "@holdfast/common/metrics";
import { readNatsConfig } from "@holdfast/common/config";
import { streamSettingsOf } from "@holdfast/common/nats";
import { parseBillingConfig } from "@holdfast/billing-core/config";
import { loadBillingStreamConfig } from "@holdfast/billing-stream/config";
import { registerBillingMetrics } from "@holdfast/billing-stream/metrics";
import { createBillingWorker } from "@holdfast/billing-stream/worker";
import { LedgerService } from "@holdfast/gen/holdfast/v1/ledger_pb";
import { WebhookService } from "@holdfast/gen/holdfast/v1/webhooks_pb";
import { loadLedgerConfig } from "@holdfast/ledger/config";
import { SINK_ENV } from "@holdfast/testing/billing-engines";
import { loadWebhookWorkerConfig } from "@holdfast/webhooks/config";
import { registerWebhookMetrics } from "@holdfast/webhooks/metrics";
import { createWebhookWorker, type WebhookWorker } from "@holdfast/webhooks/worker";
import { key, quietLogger } from "./support/ledger.js";
import { startNatsServer } from "./support/nats.js";
import { startTestServer } from "./support/server.js";
import { loopback_networks, startReceiver, testWebhookSettings, waitFor, type Receiver } from "./support/webhooks.js";

const TOKEN = "scrape-me-0123456789abcdef";

let nats: Awaited<ReturnType<typeof startNatsServer>>;
let s: Awaited<ReturnType<typeof startTestServer>>;

beforeAll(async () => {
  nats = await startNatsServer();
  s = await startTestServer({ NATS_URL: nats.url, HOLDFAST_METRICS_TOKEN: TOKEN, HOLDFAST_WEBHOOK_ALLOWED_NETWORKS: loopback_networks });
});
afterAll(async () => {
  await s?.close();
  await nats?.close();
});

/** Scrapes `url`; the text, or the status when it is not 200. */
async function scrape(url: string, token: string | null = TOKEN): Promise<{ status: number; text: string; type: string | null }> {
  const res = await fetch(url, { headers: token === null ? {} : { authorization: `Bearer ${token}` } });
  return { status: res.status, text: await res.text(), type: res.headers.get("content-type") };
}

/** The value of one sample in an exposition, or undefined when it is not there. */
function sample(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const line of text.split("\n")) {
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (match === null || match[1] !== name) continue;
    const found = Object.fromEntries([...(match[2] ?? "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((m) => [m[1], m[2]]));
    if (Object.entries(labels).every(([k, v]) => found[k] === v)) return Number(match[3]);
  }
  return undefined;
}

const ledgerScrape = async () => (await scrape(`${s.app.url}/metrics`)).text;
const rpc = (method: string, code: string) => ({ service: "holdfast.v1.LedgerService", method, code });

describe("the ledger's /metrics", () => {
  it("refuses a scrape without the token, or with another one", async () => {
    const none = await scrape(`${s.app.url}/metrics`, null);
    expect(none.status).toBe(401);
    expect(none.text).toBe("");
    expect((await scrape(`${s.app.url}/metrics`, "not-the-token-0123456789")).status).toBe(401);
    const ok = await scrape(`${s.app.url}/metrics`);
    expect(ok.status).toBe(200);
    expect(ok.type).toMatch(/^text\/plain; version=0\.0\.4/);
  });

  it("counts RPCs by method and code, times them, and counts commands by outcome", async () => {
    const ledger = s.client(LedgerService, "connect", s.keys.writer);
    const before = await ledgerScrape();
    const count = (text: string, method: string, code: string) => sample(text, "holdfast_rpc_requests_total", rpc(method, code)) ?? 0;
    const idempotencyKey = key();
    await ledger.deposit({ walletId: "m_w", asset: "USD", amount: 100n, idempotencyKey });
    await ledger.deposit({ walletId: "m_w", asset: "USD", amount: 100n, idempotencyKey });
    const refused = await ledger.spend({ walletId: "m_w", asset: "USD", amount: 1000n, idempotencyKey: key() }).catch((e: unknown) => e);
    expect(ConnectError.from(refused).code).toBe(Code.FailedPrecondition);
    const anonymous = await s.client(LedgerService, "connect", null).getWallet({ walletId: "m_w" }).catch((e: unknown) => e);
    expect(ConnectError.from(anonymous).code).toBe(Code.Unauthenticated);
    const after = await ledgerScrape();
    expect(count(after, "Deposit", "OK") - count(before, "Deposit", "OK")).toBe(2);
    expect(count(after, "Spend", "FAILED_PRECONDITION") - count(before, "Spend", "FAILED_PRECONDITION")).toBe(1);
    // Refused before its body was read, and still counted once.
    expect(count(after, "GetWallet", "UNAUTHENTICATED") - count(before, "GetWallet", "UNAUTHENTICATED")).toBe(1);
    const timed = sample(after, "holdfast_rpc_request_duration_seconds_count", rpc("Deposit", "OK")) ?? 0;
    expect(timed - (sample(before, "holdfast_rpc_request_duration_seconds_count", rpc("Deposit", "OK")) ?? 0)).toBe(2);
    expect(sample(after, "holdfast_rpc_request_duration_seconds_bucket", { ...rpc("Deposit", "OK"), le: "+Inf" })).toBe(timed);
    const outcome = (text: string, method: string, o: string) => sample(text, "holdfast_commands_total", { method, outcome: o }) ?? 0;
    expect(outcome(after, "Deposit", "applied") - outcome(before, "Deposit", "applied")).toBe(1);
    expect(outcome(after, "Deposit", "replayed") - outcome(before, "Deposit", "replayed")).toBe(1);
    expect(outcome(after, "Spend", "refused") - outcome(before, "Spend", "refused")).toBe(1);
    expect(sample(after, "holdfast_command_refusals_total", { method: "Spend", reason: "INSUFFICIENT_FUNDS" })).toBeGreaterThanOrEqual(1);
    // Reads are not commands.
    expect(sample(after, "holdfast_commands_total", { method: "GetWallet" })).toBeUndefined();
    expect(sample(after, "holdfast_group_commit_batches_total")).toBeGreaterThanOrEqual(1);
    expect(sample(after, "holdfast_group_commit_commands_total")).toBeGreaterThanOrEqual(sample(after, "holdfast_group_commit_batches_total")!);
    expect(sample(after, "holdfast_group_commit_batch_size_max")).toBeGreaterThanOrEqual(1);
  });

  it("shows the outbox draining, the relay's role, watchers and calls in flight", async () => {
    await s.client(LedgerService, "connect", s.keys.writer).deposit({ walletId: "m_w", asset: "USD", amount: 1n, idempotencyKey: key() });
    await waitFor("the relay to publish", async () => (sample(await ledgerScrape(), "holdfast_outbox_published_total") ?? 0) >= 1);
    await waitFor("the outbox to drain", async () => sample(await ledgerScrape(), "holdfast_outbox_backlog_events") === 0);
    const text = await ledgerScrape();
    expect(sample(text, "holdfast_outbox_publish_lag_seconds")).toBe(0);
    expect(sample(text, "holdfast_relay_role", { role: "active" })).toBe(1);
    expect(sample(text, "holdfast_relay_role", { role: "standby" })).toBe(0);
    expect(sample(text, "holdfast_relay_nats_connected")).toBe(1);
    expect(sample(text, "holdfast_wallet_watchers")).toBe(0);
    expect(sample(text, "holdfast_rpc_unary_in_flight")).toBe(0);
    const abort = new AbortController();
    const stream = s.client(LedgerService, "connect", s.keys.reader).watchWallet({ walletId: "m_w" }, { signal: abort.signal })[Symbol.asyncIterator]();
    await stream.next();
    const watching = await ledgerScrape();
    expect(sample(watching, "holdfast_wallet_watchers")).toBe(1);
    expect(sample(watching, "holdfast_rpc_streams_open")).toBe(1);
    abort.abort();
    await stream.next().catch(() => undefined);
    await waitFor("the stream to be counted when it ends", async () =>
      (sample(await ledgerScrape(), "holdfast_rpc_requests_total", rpc("WatchWallet", "CANCELED")) ?? 0) >= 1,
    );
  });

  it("is open to every caller when no token is set, and the token's setting is checked", async () => {
    const open = await startTestServer({});
    try {
      const res = await scrape(`${open.app.url}/metrics`, null);
      expect(res.status).toBe(200);
      expect(res.text).toContain("# TYPE holdfast_rpc_requests_total counter");
    } finally {
      await open.close();
    }
    expect(() => loadLedgerConfig({ HOLDFAST_METRICS_TOKEN: "short" })).toThrow(/HOLDFAST_METRICS_TOKEN must be 16-256/);
    expect(loadLedgerConfig({}).metricsToken).toBeNull();
  });
});

describe("the webhook worker's metrics port", () => {
  let worker: WebhookWorker;
  let server: Server;
  let port: number;
  const receivers: Receiver[] = [];

  beforeAll(async () => {
    worker = createWebhookWorker({
      pool: s.app.pool,
      logger: quietLogger,
      natsUrl: nats.url,
      stream: streamSettingsOf(readNatsConfig({ NATS_URL: nats.url })),
      settings: testWebhookSettings({ HOLDFAST_WEBHOOK_RETRY_SCHEDULE: "50ms,50ms" }),
      pollIdleMs: 50,
    });
    const registry = createMetricsRegistry();
    registerWebhookMetrics(registry, worker, s.app.pool);
    server = await serveMetricsPort({ port: 0, host: "127.0.0.1", registry, token: null, logger: quietLogger });
    port = (server.address() as AddressInfo).port;
    worker.start();
    await worker.ready;
  });
  afterAll(async () => {
    await worker?.stop();
    server?.close();
    for (const r of receivers) await r.stop();
  });

  const workerScrape = async () => (await scrape(`http://127.0.0.1:${port}/metrics`, null)).text;

  async function endpoint(answer: Parameters<Receiver["answer"]>[0]): Promise<{ receiver: Receiver; endpointId: string }> {
    const receiver = await startReceiver();
    receiver.answer(answer);
    receivers.push(receiver);
    const { endpoint: created, secret } = await s.client(WebhookService).createEndpoint({ url: receiver.url, eventTypes: ["holdfast.deposit.completed"] });
    receiver.secrets = [secret];
    return { receiver, endpointId: created!.endpointId };
  }

  const deposit = (walletId: string) =>
    s.app.ledger.deposit({ tenantId: s.tenantId, scopeWalletId: null }, { walletId, asset: "USD", amount: 1n, idempotencyKey: key(), metadata: {} });

  it("counts deliveries and attempts, shows open requests per endpoint, and endpoints disabled", async () => {
    const ok = await endpoint(() => ({ status: 200 }));
    const slow = await endpoint(() => ({ status: 200, hangMs: 1500 }));
    const gone = await endpoint(() => ({ status: 410 }));
    await deposit("hooks_w");
    await waitFor("the slow endpoint's request to be open", async () =>
      (sample(await workerScrape(), "holdfast_webhook_endpoint_requests_open", { endpoint_id: slow.endpointId }) ?? 0) >= 1,
    );
    await waitFor("every delivery to finish", async () => {
      const text = await workerScrape();
      return sample(text, "holdfast_webhook_deliveries_total", { outcome: "succeeded" }) === 2 && sample(text, "holdfast_webhook_endpoints_disabled", { reason: "gone" }) === 1;
    });
    const text = await workerScrape();
    expect(ok.receiver.delivered().size).toBe(1);
    expect(sample(text, "holdfast_webhook_events_total")).toBeGreaterThanOrEqual(1);
    expect(sample(text, "holdfast_webhook_deliveries_created_total")).toBe(3);
    expect(sample(text, "holdfast_webhook_attempts_total", { result: "succeeded" })).toBe(2);
    expect(sample(text, "holdfast_webhook_attempts_total", { result: "failed" })).toBeGreaterThanOrEqual(1);
    expect(sample(text, "holdfast_webhook_endpoints_disabled_total")).toBe(1);
    expect(sample(text, "holdfast_webhook_endpoints_disabled", { reason: "failing" })).toBe(0);
    expect(sample(text, "holdfast_webhook_endpoint_requests_open", { endpoint_id: slow.endpointId })).toBeUndefined();
    expect(sample(text, "holdfast_webhook_requests_in_flight")).toBe(0);
    expect(sample(text, "holdfast_webhook_deliveries_pending")).toBeGreaterThanOrEqual(0);
    expect(sample(text, "holdfast_webhook_delivery_lag_seconds")).toBeGreaterThanOrEqual(0);
    expect(sample(text, "holdfast_webhook_intake_backlog_events", { state: "pending" })).toBe(0);
    expect(sample(text, "holdfast_events_unattributed_total", { consumer: "webhooks" })).toBe(0);
    const health = await fetch(`http://127.0.0.1:${port}/healthz`);
    expect(health.status).toBe(200);
    expect((await fetch(`http://127.0.0.1:${port}/other`)).status).toBe(404);
    // 410 Gone disables the endpoint at once: one request, no retries.
    expect(gone.receiver.received).toHaveLength(1);
  });
});

describe("the other workers' metrics", () => {
  it("read HOLDFAST_METRICS_PORT: off when unset or 0, a port otherwise", () => {
    expect(loadWebhookWorkerConfig({}).metricsPort).toBeNull();
    expect(loadWebhookWorkerConfig({ HOLDFAST_METRICS_PORT: "0" }).metricsPort).toBeNull();
    expect(loadWebhookWorkerConfig({ HOLDFAST_METRICS_PORT: "9464" }).metricsPort).toBe(9464);
    expect(() => loadWebhookWorkerConfig({ HOLDFAST_METRICS_PORT: "70000" })).toThrow(/HOLDFAST_METRICS_PORT/);
    expect(loadBillingStreamConfig({ HOLDFAST_BILLING_CONFIG: "/tmp/x.json", HOLDFAST_METRICS_PORT: "9465" }).metricsPort).toBe(9465);
  });

  it("serve the billing sinks' figures under their names", async () => {
    const config = parseBillingConfig(
      { sinks: [{ name: "usage", type: "http", endpoint: "http://127.0.0.1:9/hooks", secret_env: "TEST_HTTP_KEY" }] },
      SINK_ENV,
    );
    const worker = createBillingWorker({ config, pool: s.app.pool, natsUrl: nats.url, stream: streamSettingsOf(readNatsConfig({})), logger: quietLogger, statusLogMs: 60_000 });
    worker.metrics.get("usage")!.sent = 7;
    const registry = createMetricsRegistry();
    registerBillingMetrics(registry, worker);
    const text = await registry.metrics();
    expect(sample(text, "holdfast_billing_sent_total", { sink: "usage" })).toBe(7);
    expect(sample(text, "holdfast_billing_lag_ms", { sink: "usage" })).toBe(0);
    expect(sample(text, "holdfast_events_unattributed_total", { consumer: "billing:usage" })).toBe(0);
    await worker.stop();
  });
});
