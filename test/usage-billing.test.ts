// Goal: the billing worker can send token counts or money per sink for the spends and captures
// of the usage commands: value and name templates `{usage.<class>_tokens}`,
// `{usage.total_tokens}` and `{model}`, read from the event's token legs (the stream) and from
// the journal's token legs (the backfill) alike; records without usage dead-letter such a
// template instead of sending a guess; unknown usage placeholders are refused at start.
// Method: the mapping and the event reader called directly; then real SpendUsage and
// CaptureUsage on a ledger core, and `backfill` to an http sink on a local server that records
// what it receives.
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { create } from "@bufbuild/protobuf";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { backfill } from "@holdfast/billing-core/backfill";
import { parseBillingConfig } from "@holdfast/billing-core/config";
import { mapUsage } from "@holdfast/billing-core/mapping";
import { usageFromEvent, type UsageRecord } from "@holdfast/billing-core/usage";
import { EventSchema } from "@holdfast/gen/holdfast/v1/events_pb";
import { TokenClass } from "@holdfast/gen/holdfast/v1/rate_cards_pb";
import { TransferKind } from "@holdfast/gen/holdfast/v1/types_pb";
import { createRateCards } from "@holdfast/ledger/domain/rate-cards";
import { createTestLedger, key, quietLogger } from "./support/ledger.js";

const TENANT = "0190c0de-0000-7000-8000-000000000001";
const zeroTokens = { input_tokens: 0n, cached_input_tokens: 0n, cache_write_tokens: 0n, cache_write_1h_tokens: 0n, output_tokens: 0n, reasoning_tokens: 0n };

const tokenSink = (value: string, extra: Record<string, unknown> = {}) =>
  parseBillingConfig({ sinks: [{ name: "tokens", type: "http", endpoint: "http://127.0.0.1:9", customer: "{wallet_id}", event_name: "{model}", value, events: ["spend", "capture"], ...extra }] }, {}).sinks[0]!;

const record = (over: Partial<UsageRecord> = {}): UsageRecord => ({
  tenantId: TENANT,
  walletId: "user_1",
  transferId: "0190c0de-0000-7000-8000-00000000aaaa",
  kind: "capture",
  asset: "USD",
  amount: 2n,
  occurredAt: new Date("2026-01-01T00:00:00Z"),
  metadata: {},
  refundOf: null,
  usage: { model: "claude-sonnet-4-5", tokens: { ...zeroTokens, input_tokens: 1200n, cached_input_tokens: 8000n, output_tokens: 700n } },
  ...over,
});
const context = { wallets: new Map(), refunded: new Map() };

describe("value templates", () => {
  it("send token counts or money from the same record", () => {
    const tokens = mapUsage(tokenSink("{usage.output_tokens}"), record(), context);
    expect(tokens).toMatchObject({ kind: "usage", usage: { value: 700n, eventName: "claude-sonnet-4-5", customer: "user_1" } });
    expect(mapUsage(tokenSink("{usage.total_tokens}"), record(), context)).toMatchObject({ usage: { value: 9900n } });
    expect(mapUsage(tokenSink("{usage.reasoning_tokens}"), record(), context)).toMatchObject({ usage: { value: 0n } });
    expect(mapUsage(tokenSink("{amount}"), record(), context)).toMatchObject({ usage: { value: 2n } });
  });

  it("dead-letter a record without usage rather than guess", () => {
    expect(mapUsage(tokenSink("{usage.output_tokens}"), record({ usage: null }), context)).toMatchObject({ kind: "unmappable" });
    expect(mapUsage(tokenSink("{amount}", { event_name: "{model}" }), record({ usage: null }), context)).toMatchObject({ kind: "unmappable" });
  });

  it("refuse unknown usage placeholders at start", () => {
    expect(() => tokenSink("{usage.images}")).toThrow(/unknown placeholder \{usage\.images\}/);
    expect(() => tokenSink("{usage.output}")).toThrow(/unknown placeholder/);
  });

  it("read the token legs of a spend.completed event", () => {
    const transfer = { transferId: "t1", kind: TransferKind.SPEND, asset: "USD", amount: 3n, usageId: "u1", model: "gpt-4.1-mini" };
    const legs = [
      { transferId: "l1", kind: TransferKind.USAGE, asset: "TOKENS", amount: 1000n, usageId: "u1", model: "gpt-4.1-mini", tokenClass: TokenClass.INPUT },
      { transferId: "l2", kind: TransferKind.USAGE, asset: "TOKENS", amount: 50n, usageId: "u1", model: "gpt-4.1-mini", tokenClass: TokenClass.REASONING },
    ];
    const event = create(EventSchema, { type: "holdfast.spend.completed", tenantId: TENANT, walletId: "w", payload: { case: "spendCompleted", value: { transfer, tokenTransfers: legs } } });
    expect(usageFromEvent(event)?.usage).toEqual({ model: "gpt-4.1-mini", tokens: { ...zeroTokens, input_tokens: 1000n, reasoning_tokens: 50n } });
    const plain = create(EventSchema, { type: "holdfast.spend.completed", tenantId: TENANT, walletId: "w", payload: { case: "spendCompleted", value: { transfer: { ...transfer, usageId: "", model: "" } } } });
    expect(usageFromEvent(plain)?.usage).toBeNull();
  });
});

describe("backfill of usage-command charges", () => {
  let t: Awaited<ReturnType<typeof createTestLedger>>;
  let server: Server;
  const received: { data: { transfer_id: string; value: string }; type: string }[] = [];

  beforeAll(async () => {
    t = await createTestLedger();
    server = createServer((req, res) => {
      let body = "";
      req.on("data", (chunk: Buffer) => (body += chunk.toString()));
      req.on("end", () => {
        received.push(...(JSON.parse(body) as typeof received));
        res.writeHead(200).end();
      });
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  });
  afterAll(async () => {
    await new Promise((resolve) => server?.close(resolve));
    await t?.close();
  });

  it("sends the token counts of the journal's legs for each spend and capture", async () => {
    const caller = t.caller;
    const cards = createRateCards({ pool: t.pool, clock: t.clock });
    await cards.put(caller.tenantId, {
      rateCardId: "llm", asset: "USD", tokenAsset: "TOKENS", markupBps: 0, effectiveAt: null, idempotencyKey: key(),
      models: [{ model: "sonnet", prices: { input: 300_000_000_000n, output: 1_500_000_000_000n }, tiers: [] }],
    });
    await t.ledger.deposit(caller, { walletId: "w", asset: "USD", amount: 1000n, idempotencyKey: key(), metadata: {} });
    const counts = (input: bigint, output: bigint) => ({ input, cached_input: 0n, cache_write: 0n, cache_write_1h: 0n, output, reasoning: 0n });
    const spent = await t.ledger.spendUsage(caller, { walletId: "w", rateCardId: "llm", model: "sonnet", usage: counts(10_000n, 2_000n), idempotencyKey: key(), metadata: {} });
    const held = await t.ledger.reserveUsage(caller, { walletId: "w", rateCardId: "llm", model: "sonnet", estimate: counts(1000n, 9000n), holdId: "", ttlSeconds: 60, idempotencyKey: key(), metadata: {} });
    if (!spent.ok || !held.ok) throw new Error("refused");
    const captured = await t.ledger.captureUsage(caller, { holdId: held.hold.holdId, usage: counts(1000n, 7000n), idempotencyKey: key(), metadata: {} });
    if (!captured.ok) throw new Error("refused");
    const port = (server.address() as AddressInfo).port;
    const config = parseBillingConfig({ sinks: [{ name: "tokens", type: "http", endpoint: `http://127.0.0.1:${port}`, customer: "{wallet_id}", event_name: "tokens_{model}", value: "{usage.output_tokens}", events: ["spend", "capture"] }] }, {});
    const result = await backfill({ pool: t.pool, config, sinkName: "tokens", since: new Date(0), until: new Date("2100-01-01T00:00:00Z"), logger: quietLogger });
    expect(result.total).toBe(2);
    const byTransfer = new Map(received.map((e) => [e.data.transfer_id, e]));
    expect(byTransfer.get(spent.transfer!.transferId)).toMatchObject({ type: "tokens_sonnet", data: { value: "2000" } });
    expect(byTransfer.get(captured.transfer.transferId)).toMatchObject({ type: "tokens_sonnet", data: { value: "7000" } });
  });
});
