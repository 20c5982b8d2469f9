// Goal: two deployments on one NATS server lose nothing to each other (issue 11, part 1). With
// namespaces of their own, every event of each reaches its own webhook receiver and its own
// billing engine exactly once, and nothing of the other; the same two configured with the same
// namespace refuse to start (ledger, webhook worker, billing worker), saying why and what to set;
// another stream name over the same namespace is refused too; a consumer left by the other
// deployment is refused; and an event of a tenant the database does not know is set aside, logged
// once and counted, never sent.
// Method: one private nats-server; two ledgers (two databases, namespaces alpha and beta) with
// their relays, each with a webhook worker and a billing worker (an HTTP sink to a fake engine)
// in this process. Commands go through each ledger core; what should arrive is read back from
// each database's outbox. The refusals start B's processes in alpha over B's database.
import { Writable } from "node:stream";
import { randomUUID } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import { create, toBinary } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import pino from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { readNatsConfig } from "@holdfast/common/config";
import { createTenantGuard, UNKNOWN_TENANT_LOG_INTERVAL_MS } from "@holdfast/common/deployment";
import { createMetricsRegistry } from "@holdfast/common/metrics";
import { DeploymentConflictError, streamSettingsOf, type StreamSettings } from "@holdfast/common/nats";
import { parseBillingConfig } from "@holdfast/billing-core/config";
import { createBillingWorker, type BillingWorker } from "@holdfast/billing-stream/worker";
import { EventSchema } from "@holdfast/gen/holdfast/v1/events_pb";
import { WebhookService } from "@holdfast/gen/holdfast/v1/webhooks_pb";
import { startLedgerApp } from "@holdfast/ledger/app";
import { loadLedgerConfig } from "@holdfast/ledger/config";
import { createFakeEngine, SINK_ENV, type FakeEngine } from "@holdfast/testing/billing-engines";
import { registerWebhookMetrics } from "@holdfast/webhooks/metrics";
import { createWebhookWorker, type WebhookWorker } from "@holdfast/webhooks/worker";
import { key, quietLogger } from "./support/ledger.js";
import { tailSubject } from "@holdfast/cli/events-tail";
import { startNatsServer } from "./support/nats.js";
import { startTestServer } from "./support/server.js";
import { loopback_networks, startReceiver, testWebhookSettings, waitFor, type Receiver } from "./support/webhooks.js";

/** Wallets per deployment and rounds per wallet; each round is a spend and a reserve-capture. */
const WALLETS = 4;
const ROUNDS = 5;
/** How long nothing more may arrive once everything expected has. */
const QUIET_MS = 750;

let nats: Awaited<ReturnType<typeof startNatsServer>>;
let a: Deployment;
let b: Deployment;

/** One deployment: a ledger on its own database, its two workers, and what they deliver to. */
interface Deployment {
  readonly namespace: string;
  readonly server: Awaited<ReturnType<typeof startTestServer>>;
  readonly stream: StreamSettings;
  readonly webhooks: WebhookWorker;
  readonly billing: BillingWorker;
  readonly receiver: Receiver;
  readonly engine: FakeEngine;
  /** The workers' warnings, parsed. */
  readonly warnings: Record<string, unknown>[];
  /** Transfer ids of the spends and captures made: what the engine should hold. */
  readonly usage: Set<string>;
}

/** A logger that keeps warnings and worse, so a test can read what was logged. */
function capturingLogger(lines: Record<string, unknown>[]) {
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      lines.push(JSON.parse(chunk.toString("utf8")) as Record<string, unknown>);
      done();
    },
  });
  return pino({ level: "warn" }, sink);
}

/** The stream settings of `namespace`, as its processes read them from the environment. */
function streamOf(namespace: string): StreamSettings {
  return streamSettingsOf(readNatsConfig({ NATS_URL: nats.url, HOLDFAST_NAMESPACE: namespace }));
}

/** The billing configuration of one HTTP sink pointed at `engine`. */
function billingConfig(engine: FakeEngine) {
  const sink = { name: "usage", type: "http", endpoint: engine.url, secret_env: "TEST_HTTP_KEY", flush_interval_ms: 50, attempts_max: 3, retry_delay_ms_min: 20, retry_delay_ms_max: 200 };
  return parseBillingConfig({ sinks: [sink], wallet_cache_ttl_ms: 0 }, SINK_ENV);
}

function webhookWorker(pool: Deployment["server"]["app"]["pool"], stream: StreamSettings, logger = quietLogger): WebhookWorker {
  return createWebhookWorker({ pool, logger, natsUrl: nats.url, stream, settings: testWebhookSettings(), pollIdleMs: 50 });
}

function billingWorker(pool: Deployment["server"]["app"]["pool"], stream: StreamSettings, engine: FakeEngine, logger = quietLogger): BillingWorker {
  return createBillingWorker({ config: billingConfig(engine), pool, natsUrl: nats.url, stream, logger, statusLogMs: 60_000 });
}

async function startDeployment(namespace: string): Promise<Deployment> {
  const server = await startTestServer({ NATS_URL: nats.url, HOLDFAST_NAMESPACE: namespace, HOLDFAST_WEBHOOK_ALLOWED_NETWORKS: loopback_networks });
  const warnings: Record<string, unknown>[] = [];
  const logger = capturingLogger(warnings);
  const stream = streamOf(namespace);
  const webhooks = webhookWorker(server.app.pool, stream, logger);
  webhooks.start();
  await webhooks.ready;
  const engine = createFakeEngine("http");
  await engine.start();
  const billing = billingWorker(server.app.pool, stream, engine, logger);
  await billing.start();
  const receiver = await startReceiver();
  const { secret } = await server.client(WebhookService).createEndpoint({ url: receiver.url, eventTypes: [] });
  receiver.secrets = [secret];
  return { namespace, server, stream, webhooks, billing, receiver, engine, warnings, usage: new Set() };
}

async function stopDeployment(d: Deployment | undefined): Promise<void> {
  if (d === undefined) return;
  await d.webhooks.stop();
  await d.billing.stop();
  await d.receiver.stop();
  await d.engine.stop();
  await d.server.close();
}

/** Deposits, then spends and reserves-captures, on wallets named `<prefix><n>`. */
async function burst(d: Deployment, prefix: string): Promise<void> {
  const ledger = d.server.app.ledger;
  const caller = { tenantId: d.server.tenantId, scopeWalletId: null };
  await Promise.all(
    Array.from({ length: WALLETS }, async (_, w) => {
      const walletId = `${prefix}${w}`;
      await ledger.deposit(caller, { walletId, asset: "USD", amount: 10_000n, idempotencyKey: key(), metadata: {} });
      for (let i = 0; i < ROUNDS; i++) {
        const spent = await ledger.spend(caller, { walletId, asset: "USD", amount: 3n, idempotencyKey: key(), metadata: {} });
        if (!spent.ok) throw new Error(spent.reason);
        d.usage.add(spent.transfer.transferId);
        const hold = await ledger.reserve(caller, { walletId, asset: "USD", amount: 5n, holdId: "", ttlSeconds: 60, idempotencyKey: key(), metadata: {} });
        if (!hold.ok) throw new Error(hold.reason);
        const captured = await ledger.capture(caller, { holdId: hold.hold.holdId, amount: 4n, idempotencyKey: key(), metadata: {} });
        if (!captured.ok) throw new Error(captured.reason);
        d.usage.add(captured.transfer.transferId);
      }
    }),
  );
}

/** Every event id in the deployment's outbox. */
async function outboxOf(d: Deployment): Promise<Set<string>> {
  const { rows } = await d.server.app.pool.query<{ event_id: string }>("select event_id from events");
  return new Set(rows.map((r) => r.event_id));
}

/** Waits until each receiver and engine holds what its deployment sent, then checks it is exactly that, once. */
async function expectExactlyOnce(deployments: Deployment[]): Promise<void> {
  const expected = new Map(await Promise.all(deployments.map(async (d) => [d, await outboxOf(d)] as const)));
  for (const d of deployments) {
    const events = expected.get(d)!;
    await waitFor(`${d.namespace}: ${events.size} webhooks`, () => d.receiver.delivered().size >= events.size, 60_000);
    await waitFor(`${d.namespace}: ${d.usage.size} usage records`, () => d.engine.stored.size >= d.usage.size, 60_000);
  }
  await sleep(QUIET_MS);
  for (const d of deployments) {
    const events = expected.get(d)!;
    // Webhook ids are the event ids: each of this deployment's events once, and nothing else.
    expect(new Set(d.receiver.received.map((r) => r.webhookId))).toEqual(events);
    expect(d.receiver.received).toHaveLength(events.size);
    expect(d.receiver.received.every((r) => r.verifiedBy[0] === true)).toBe(true);
    expect(new Set(d.engine.stored.keys())).toEqual(d.usage);
    expect([...d.engine.seen.values()].every((n) => n === 1)).toBe(true);
    expect(d.engine.violations).toEqual([]);
  }
}

beforeAll(async () => {
  nats = await startNatsServer();
  a = await startDeployment("alpha");
  b = await startDeployment("beta");
}, 60_000);
afterAll(async () => {
  await stopDeployment(a);
  await stopDeployment(b);
  await nats?.close();
});

describe("deployments sharing one NATS server", () => {
  it("keep their events apart: each one's events reach its own receivers exactly once", async () => {
    await Promise.all([burst(a, "a_"), burst(b, "b_")]);
    await expectExactlyOnce([a, b]);
    const jsm = await connectJsm();
    try {
      const streams = (await jsm.streams.list().next()).map((s) => [s.config.name, s.config.subjects]);
      expect(streams).toEqual(expect.arrayContaining([["ALPHA_EVENTS", ["alpha.events.>"]], ["BETA_EVENTS", ["beta.events.>"]]]));
      expect((await jsm.consumers.list("ALPHA_EVENTS").next()).map((c) => c.name).sort()).toEqual(["alpha-billing-usage", "alpha-webhooks"]);
    } finally {
      await jsm.close();
    }
  }, 120_000);

  it("refuse to start in a namespace another deployment owns, and say what to set", async () => {
    const env = { DATABASE_URL: b.server.db.url, NATS_URL: nats.url, HOLDFAST_NAMESPACE: "alpha", HOLDFAST_PORT: "0", HOLDFAST_HOST: "127.0.0.1" };
    const refusal = /NATS stream ALPHA_EVENTS belongs to another Holdfast deployment .*Set HOLDFAST_NAMESPACE/s;
    // The ledger: before it serves anything.
    const ledger = startLedgerApp({ config: loadLedgerConfig(env), logger: quietLogger, migrate: false });
    await expect(ledger).rejects.toThrow(DeploymentConflictError);
    await expect(ledger).rejects.toThrow(refusal);
    // The webhook worker: it never subscribes, and says why.
    const webhooks = webhookWorker(b.server.app.pool, streamOf("alpha"));
    webhooks.start();
    const reason = await Promise.race([webhooks.fatal, webhooks.ready.then(() => null)]);
    await webhooks.stop();
    expect(reason).toBeInstanceOf(DeploymentConflictError);
    expect(reason?.message).toMatch(refusal);
    // The billing worker.
    const billing = billingWorker(b.server.app.pool, streamOf("alpha"), b.engine);
    await expect(billing.start()).rejects.toThrow(refusal);
    await billing.stop();
    // Another stream name over the same namespace would share its subjects: refused too.
    const renamed = startLedgerApp({ config: loadLedgerConfig({ ...env, HOLDFAST_STREAM_NAME: "ALPHA_TOO" }), logger: quietLogger, migrate: false });
    await expect(renamed).rejects.toThrow(/another stream on this NATS server already captures alpha\.events\.>.*HOLDFAST_NAMESPACE/s);
    // Nothing of the refused starts disturbed A or B.
    await Promise.all([burst(a, "a2_"), burst(b, "b2_")]);
    await expectExactlyOnce([a, b]);
  }, 120_000);

  it("refuse a durable consumer another deployment left in a stream that names no owner", async () => {
    // B's worker makes GAMMA_EVENTS and gamma-webhooks its own, then the stream's owner is
    // erased (as for a stream made before owners were recorded), and A's worker comes.
    const gamma = streamOf("gamma");
    const first = webhookWorker(b.server.app.pool, gamma);
    first.start();
    await first.ready;
    await first.stop();
    const jsm = await connectJsm();
    try {
      await jsm.streams.update("GAMMA_EVENTS", { description: "made by an older Holdfast" });
      const second = webhookWorker(a.server.app.pool, gamma);
      second.start();
      const reason = await Promise.race([second.fatal, second.ready.then(() => null)]);
      await second.stop();
      expect(reason?.message).toMatch(/NATS consumer gamma-webhooks of stream GAMMA_EVENTS belongs to another Holdfast deployment .*HOLDFAST_NAMESPACE/s);
    } finally {
      await jsm.streams.delete("GAMMA_EVENTS");
      await jsm.close();
    }
  }, 60_000);

  it("set aside an event of a tenant the database does not know: logged once, counted, never sent", async () => {
    const stranger = randomUUID();
    const sentBefore = a.receiver.received.length;
    const storedBefore = a.engine.stored.size;
    const nc = await connect({ servers: nats.url });
    try {
      for (let i = 0; i < 3; i++) {
        const event = strangerSpend(stranger);
        const subject = `alpha.events.${stranger}.w1.spend.completed`;
        await jetstream(nc).publish(subject, toBinary(EventSchema, event), { msgID: event.eventId });
      }
    } finally {
      await nc.close();
    }
    await waitFor("the stranger's events set aside", () =>
      a.webhooks.totals().intake.unknownTenantEvents === 3 && a.billing.unknownTenantEvents().get("usage") === 3,
    );
    const lines = a.warnings.filter((l) => l["tenantId"] === stranger);
    // Once per consumer (webhooks, billing:usage) within the minute, however the three were batched.
    expect(lines.map((l) => l["consumer"]).sort()).toEqual(["billing:usage", "webhooks"]);
    expect(lines.every((l) => typeof l["events"] === "number" && (l["events"] as number) >= 1)).toBe(true);
    const registry = createMetricsRegistry();
    registerWebhookMetrics(registry, a.webhooks, a.server.app.pool);
    expect(await registry.metrics()).toContain('holdfast_events_unattributed_total{consumer="webhooks"} 3');
    await sleep(QUIET_MS);
    expect(a.receiver.received).toHaveLength(sentBefore);
    expect(a.engine.stored.size).toBe(storedBefore);
  }, 60_000);
});

describe("the unknown-tenant log", () => {
  it("logs a tenant's first events at once, then once a minute with the count since", async () => {
    const lines: Record<string, unknown>[] = [];
    const known = randomUUID();
    const stranger = randomUUID();
    // A database that knows one tenant.
    const pool = { query: async (q: { values: [string[]] }) => ({ rows: q.values[0].filter((id) => id === known).map((id) => ({ id })) }) };
    let counted = 0;
    const guard = createTenantGuard({ pool: pool as never, logger: capturingLogger(lines), consumer: "test", onUnknown: (n) => (counted += n) });
    const split = await guard.split([known, stranger, stranger], (id) => id);
    expect(split).toEqual({ known: [known], unknown: [stranger, stranger] });
    await guard.split([stranger], (id) => id);
    await guard.split([stranger, "not-a-uuid"], (id) => id);
    expect(lines.map((l) => [l["tenantId"], l["events"]])).toEqual([[stranger, 2], ["not-a-uuid", 1]]);
    guard.flush(Date.now() + UNKNOWN_TENANT_LOG_INTERVAL_MS);
    expect(lines.slice(2).map((l) => [l["tenantId"], l["events"], l["consumer"]])).toEqual([[stranger, 2, "test"]]);
    expect([counted, guard.unknownTotal()]).toEqual([5, 5]);
    guard.close();
    expect(tailSubject({ namespace: "alpha", type: "hold" })).toBe("alpha.events.*.*.hold.*");
  });
});

async function connectJsm() {
  const nc = await connect({ servers: nats.url });
  const jsm = await jetstreamManager(nc);
  return Object.assign(jsm, { close: () => nc.close() });
}

/** A well-formed spend event of a tenant no database here has. */
function strangerSpend(tenantId: string) {
  const transferId = randomUUID();
  return create(EventSchema, {
    eventId: randomUUID(),
    type: "holdfast.spend.completed",
    tenantId,
    walletId: "w1",
    asset: "USD",
    sequence: 1n,
    occurredAt: timestampFromDate(new Date()),
    payload: { case: "spendCompleted", value: { transfer: { transferId, asset: "USD", amount: 5n, createdAt: timestampFromDate(new Date()) } } },
  });
}
