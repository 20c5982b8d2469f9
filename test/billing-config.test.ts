// Goal: the billing configuration refuses what would bill wrongly or leak a secret (a sink
// taking every tenant of a database with several included), the pure parts of delivery
// (mapping, Retry-After, splitting) behave as documented, and an engine's answer is read only
// up to a cap.
// Method: plain function calls; one in-memory sink scripted per request; a database with one
// and then two tenants; a local HTTP server that answers with an endless body.
import { randomUUID } from "node:crypto";
import { once } from "node:events";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { checkSinkTenants, loadBillingConfig, parseBillingConfig, type SinkConfig } from "@holdfast/billing-core/config";
import { deliver } from "@holdfast/billing-core/delivery";
import { mapUsage, type BillableUsage } from "@holdfast/billing-core/mapping";
import { ANSWER_LENGTH_MAX, parseRetryAfter, post, type ItemResult, type Sink } from "@holdfast/billing-core/sinks/sink";
import { ackWaitMs, filterFor, flushBudgetMs } from "@holdfast/billing-core/stream";
import type { UsageRecord } from "@holdfast/billing-core/usage";
import { createTenant } from "@holdfast/ledger/auth/api-keys";
import { createTestDatabase, type TestDatabase } from "./support/db.js";

const env = { STRIPE_KEY: "sk_test_1" };
const stripeSink = (extra: Record<string, unknown> = {}) => ({
  name: "stripe",
  type: "stripe",
  endpoint: "https://api.stripe.com",
  secret_env: "STRIPE_KEY",
  event_name: "llm_tokens",
  ...extra,
});
const sink = (extra: Record<string, unknown> = {}): SinkConfig => parseBillingConfig({ sinks: [stripeSink(extra)] }, env).sinks[0]!;

const record = (over: Partial<UsageRecord> = {}): UsageRecord => ({
  tenantId: "0190c0de-0000-7000-8000-000000000001",
  walletId: "user_1",
  transferId: "0190c0de-0000-7000-8000-00000000aaaa",
  kind: "spend",
  asset: "USD",
  amount: 25n,
  occurredAt: new Date("2026-01-01T00:00:00Z"),
  metadata: { model: "gpt-4o", tokens: "1200" },
  refundOf: null,
  ...over,
});
const walletContext = (metadata: Record<string, string>, refunded?: { amount: bigint; metadata: Record<string, string> }) => ({
  wallets: new Map([[`0190c0de-0000-7000-8000-000000000001/user_1`, metadata]]),
  refunded: new Map(refunded ? [[`0190c0de-0000-7000-8000-000000000001/0190c0de-0000-7000-8000-00000000bbbb`, refunded]] : []),
});

describe("billing configuration", () => {
  it("fills defaults within each engine's limits", () => {
    const s = sink();
    expect(s).toMatchObject({ customer: "{wallet.stripe_customer_id}", value: "{amount}", refunds: "negative", batchSizeMax: 100, secret: "sk_test_1", tenants: null });
    expect(s.kinds).toEqual(["spend", "capture", "refund"]);
    expect(() => parseBillingConfig({ sinks: [{ ...stripeSink(), type: "lago", batch_size_max: 101 }] }, env)).toThrow(/batch_size_max must be an integer from 1 to 100/);
  });

  it("accepts the documented example file", async () => {
    const secrets = { STRIPE_SECRET_KEY: "a", OPENMETER_TOKEN: "b", LAGO_API_KEY: "c", METRONOME_BEARER_TOKEN: "d", WAREHOUSE_INGEST_TOKEN: "e" };
    const config = await loadBillingConfig("workers/billing-stream/billing-stream.example.json", secrets);
    expect(config.sinks.map((s) => s.type)).toEqual(["stripe", "openmeter", "lago", "metronome", "http"]);
    expect(config.metricsPort).toBe(9464);
  });

  it("refuses inline secrets, unset secret variables and unknown placeholders", () => {
    expect(() => parseBillingConfig({ sinks: [stripeSink({ api_key: "sk_live_x" })] }, env)).toThrow(/inline secret/);
    expect(() => parseBillingConfig({ sinks: [stripeSink({ secret_env: "NOPE" })] }, env)).toThrow(/NOPE \(secret_env\) is not set/);
    expect(() => parseBillingConfig({ sinks: [stripeSink({ customer: "{wallet_name}" })] }, env)).toThrow(/unknown placeholder \{wallet_name\}/);
    expect(() => parseBillingConfig({ sinks: [stripeSink({ event_name: undefined })] }, env)).toThrow(/event_name .* no default/);
    expect(() => parseBillingConfig({ sinks: [stripeSink(), stripeSink()] }, env)).toThrow(/two sinks are named "stripe"/);
  });

  it("bounds ack_wait above the worst flush kept in process", () => {
    const s = sink({ attempts_max: 3, request_timeout_ms: 1000, retry_delay_ms_max: 2000, retry_after_ms_max: 5000, flush_interval_ms: 100 });
    expect(flushBudgetMs(s)).toBe(3 * (1000 + 5000));
    expect(ackWaitMs(s)).toBeGreaterThan(flushBudgetMs(s) + s.flushIntervalMs);
    expect(filterFor(sink({ tenants: ["0190c0de-0000-7000-8000-000000000001"], events: ["capture"] }), false)).toEqual({
      filter_subject: "holdfast.events.0190c0de-0000-7000-8000-000000000001.*.hold.captured",
    });
    expect(filterFor(sink(), true)).toEqual({
      filter_subjects: ["holdfast.events.*.*.spend.completed", "holdfast.events.*.*.hold.captured", "holdfast.events.*.*.refund.completed"],
    });
  });
});

describe("mapping", () => {
  it("maps the customer from wallet metadata and dead-letters a wallet without one", () => {
    const mapped = mapUsage(sink(), record(), walletContext({ stripe_customer_id: "cus_1" }));
    expect(mapped).toMatchObject({ kind: "usage", usage: { customer: "cus_1", eventName: "llm_tokens", value: 25n, key: record().transferId } });
    expect(mapUsage(sink(), record(), walletContext({}))).toMatchObject({ kind: "unmappable" });
  });

  it("negates refunds, or names them separately, or skips them", () => {
    const refund = record({ kind: "refund", amount: 5n, refundOf: "0190c0de-0000-7000-8000-00000000bbbb", metadata: {} });
    const ctx = walletContext({ stripe_customer_id: "cus_1" }, { amount: 25n, metadata: { model: "gpt-4o", tokens: "1200" } });
    expect(mapUsage(sink(), refund, ctx)).toMatchObject({ kind: "usage", usage: { value: -5n, eventName: "llm_tokens" } });
    expect(mapUsage(sink({ refunds: "separate_event", refund_event_name: "llm_refunds" }), refund, ctx)).toMatchObject({ kind: "usage", usage: { value: 5n, eventName: "llm_refunds" } });
    expect(mapUsage(sink({ refunds: "skip" }), refund, ctx)).toMatchObject({ kind: "skip" });
    // A token-valued meter: a partial refund without its own token count cannot be guessed...
    expect(mapUsage(sink({ value: "{meta.tokens}" }), refund, ctx)).toMatchObject({ kind: "unmappable" });
    // ...a full refund takes back the refunded usage's tokens.
    expect(mapUsage(sink({ value: "{meta.tokens}" }), { ...refund, amount: 25n }, ctx)).toMatchObject({ kind: "usage", usage: { value: -1200n } });
  });
});

describe("delivery", () => {
  const usages = (n: number): BillableUsage[] =>
    Array.from({ length: n }, (_, i) => ({ record: record({ transferId: `t${i}` }), key: `t${i}`, customer: i === 5 ? "bad" : "cus", eventName: "e", value: 1n, properties: {} }));

  /** A sink that refuses any request holding customer "bad" as a whole, and counts requests. */
  function scripted(config: SinkConfig, before: ItemResult[][] = []) {
    const requests: string[][] = [];
    const s: Sink = {
      config,
      describe: (u) => u.key,
      async send(batch) {
        requests.push(batch.map((u) => u.key));
        const next = before.shift();
        if (next !== undefined) return batch.map((_, i) => next[i] ?? next[0]!);
        if (batch.some((u) => u.customer === "bad")) return batch.map(() => ({ status: "batch_rejected", httpStatus: 400, answer: "bad request" }) as const);
        return batch.map(() => ({ status: "accepted" }) as const);
      },
    };
    return { sink: s, requests };
  }
  const options = { signal: new AbortController().signal, deadline: Date.now() + 60_000, random: () => 0.5 };

  it("splits a refused batch down to the one record at fault", async () => {
    const { sink: s, requests } = scripted(sink({ batch_size_max: 16 }));
    const outcomes = await deliver(s, usages(16), options);
    expect(outcomes.filter((o) => o.status === "dead")).toHaveLength(1);
    expect(outcomes[5]).toMatchObject({ status: "dead", httpStatus: 400, answer: "bad request" });
    expect(outcomes.filter((o) => o.status === "delivered")).toHaveLength(15);
    expect(requests.length).toBeLessThanOrEqual(1 + 2 * Math.log2(16));
  });

  it("retries transient failures a bounded number of times, then hands them back", async () => {
    const retry: ItemResult = { status: "retry", httpStatus: 503, retryAfterMs: null, answer: "down" };
    const { sink: s, requests } = scripted(sink({ attempts_max: 3, retry_delay_ms_min: 1, retry_delay_ms_max: 2 }), [[retry], [retry], [retry], [retry]]);
    const outcomes = await deliver(s, usages(2).map((u) => ({ ...u, customer: "cus" })), options);
    expect(requests).toHaveLength(3);
    expect(outcomes.every((o) => o.status === "failed")).toBe(true);
  });

  it("hands back at once a Retry-After longer than it may wait in process", async () => {
    const retry: ItemResult = { status: "retry", httpStatus: 429, retryAfterMs: 120_000, answer: "slow down" };
    const { sink: s, requests } = scripted(sink({ retry_after_ms_max: 1000 }), [[retry]]);
    const [outcome] = await deliver(s, usages(1), options);
    expect(requests).toHaveLength(1);
    expect(outcome).toMatchObject({ status: "failed", retryAfterMs: 120_000 });
  });

  it("reads Retry-After as seconds or an HTTP date", () => {
    expect(parseRetryAfter("3")).toBe(3000);
    expect(parseRetryAfter("Wed, 21 Oct 2015 07:28:05 GMT", Date.parse("Wed, 21 Oct 2015 07:28:00 GMT"))).toBe(5000);
    expect(parseRetryAfter("soon")).toBeNull();
    expect(parseRetryAfter(null)).toBeNull();
  });
});

describe("several tenants", () => {
  let db: TestDatabase;
  const config = (...sinks: Record<string, unknown>[]) =>
    parseBillingConfig({ sinks: sinks.map((extra, i) => stripeSink({ name: `s${i}`, ...extra })) }, env);

  beforeAll(async () => {
    db = await createTestDatabase();
  });
  afterAll(async () => {
    await db?.drop();
  });

  it("refuses a sink taking every tenant once the database has two, unless its customers start with the tenant", async () => {
    await createTenant(db.pool, `billing-a-${randomUUID()}`);
    // One tenant: nobody else's customers to reach.
    await checkSinkTenants(config({}), db.pool);
    const { tenantId } = await createTenant(db.pool, `billing-b-${randomUUID()}`);
    await expect(checkSinkTenants(config({}, { tenants: "*" }), db.pool)).rejects.toThrow(/sinks "s0", "s1": the database has more than one tenant.*"tenants".*\{tenant_id\}/);
    await expect(checkSinkTenants(config({ tenants: [tenantId] }, { customer: "{wallet.x}:{tenant_id}" }), db.pool)).rejects.toThrow(/^sink "s1"/);
    await checkSinkTenants(config({ tenants: [tenantId] }, { customer: "{tenant_id}:{wallet_id}", type: "openmeter", secret_env: undefined }), db.pool);
  });
});

describe("engine answers", () => {
  it("reads at most a few KiB of an answer, even an endless one", async () => {
    const server = createServer((_req, res) => {
      res.writeHead(500, { "content-type": "text/plain" });
      const chunk = "é".repeat(8192);
      const write = () => {
        while (res.write(chunk));
      };
      res.on("drain", write);
      write();
    });
    server.listen(0, "127.0.0.1");
    await once(server, "listening");
    const { port } = server.address() as AddressInfo;
    try {
      const started = Date.now();
      const outcome = await post(`http://127.0.0.1:${port}/`, {}, "[]", 10_000, new AbortController().signal);
      expect(outcome).toMatchObject({ kind: "answer", status: 500 });
      const body = (outcome as { body: string }).body;
      expect(body.length).toBe(ANSWER_LENGTH_MAX);
      expect(body).toBe("é".repeat(ANSWER_LENGTH_MAX));
      expect(Date.now() - started).toBeLessThan(5000);
    } finally {
      server.closeAllConnections();
      server.close();
    }
  });
});
