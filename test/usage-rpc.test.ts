// Goal: ReserveUsage, CaptureUsage and SpendUsage over the wire as proto/holdfast/v1/usage.proto
// says: every RPC over Connect JSON, gRPC (connect-es) and @grpc/grpc-js, with the quote, the
// money leg and the token legs (kind USAGE, token class, usage id) in the answer and in
// ListTransfers; replays; bad input as INVALID_ARGUMENT naming the field (estimate.output_tokens,
// usage.input_tokens, rate_card_id, model); RATE_CARD_NOT_FOUND and MODEL_NOT_PRICED with
// their codes; the scope rules (ReserveUsage and SpendUsage on the key's own wallet only,
// CaptureUsage on its own holds only, readers refused); invariants afterwards.
// Method: a real ledger server on port 0 (fresh database, manual clock); a grpc-js generic
// client built from the generated descriptors, as in test/grpc-js.test.ts.
import * as grpc from "@grpc/grpc-js";
import { Code, ConnectError } from "@connectrpc/connect";
import { create, fromBinary, toBinary, type DescMessage, type DescService, type MessageShape } from "@bufbuild/protobuf";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ErrorDetailSchema, type ErrorDetail } from "@holdfast/gen/holdfast/v1/errors_pb";
import { LedgerService } from "@holdfast/gen/holdfast/v1/ledger_pb";
import { RateCardService, TokenClass } from "@holdfast/gen/holdfast/v1/rate_cards_pb";
import { HoldStatus, TransferKind } from "@holdfast/gen/holdfast/v1/types_pb";
import { CaptureUsageRequestSchema, CaptureUsageResponseSchema, ReserveUsageRequestSchema, ReserveUsageResponseSchema, SpendUsageRequestSchema, SpendUsageResponseSchema } from "@holdfast/gen/holdfast/v1/usage_pb";
import { checkInvariants } from "@holdfast/ledger/invariants";
import { key } from "./support/ledger.js";
import { startTestServer, type Protocol } from "./support/server.js";

const CALL_DEADLINE_MS = 10_000;

let s: Awaited<ReturnType<typeof startTestServer>>;

beforeAll(async () => {
  s = await startTestServer();
  // $3 input and $15 output per million tokens, no markup; an embedding model with input only;
  // a free one.
  await s.client(RateCardService, "connect-json").putRateCard({
    rateCardId: "llm",
    asset: "USD",
    idempotencyKey: key("card"),
    models: [
      { model: "sonnet", inputNanoPerMtok: 300_000_000_000n, outputNanoPerMtok: 1_500_000_000_000n },
      { model: "embed", inputNanoPerMtok: 2_000_000_000n },
      { model: "free", inputNanoPerMtok: 0n },
    ],
  });
});
afterAll(async () => {
  await s?.close();
});

const ledger = (protocol: Protocol = "connect-json", apiKey: string | null = s.keys.writer) => s.client(LedgerService, protocol, apiKey);

async function fund(walletId: string, amount = 10_000n) {
  await ledger().deposit({ walletId, asset: "USD", amount, idempotencyKey: key("dep") });
}

async function failure(call: Promise<unknown>): Promise<{ code: Code; detail: ErrorDetail }> {
  const err = await call.then(
    () => {
      throw new Error("expected the call to fail");
    },
    (e: unknown) => ConnectError.from(e),
  );
  const [detail] = err.findDetails(ErrorDetailSchema);
  expect(detail, err.message).toBeDefined();
  return { code: err.code, detail: detail! };
}

describe.each(["connect-json", "grpc"] as const)("over %s", (protocol) => {
  it("reserves for an estimate, captures the usage with token legs, and replays", async () => {
    const wallet = `w_${protocol.replace("-", "_")}`;
    await fund(wallet);
    const client = ledger(protocol);
    const reserveKey = key("ru");
    const reserve = { walletId: wallet, rateCardId: "llm", model: "sonnet", estimate: { inputTokens: 1000n, outputTokens: 4000n }, idempotencyKey: reserveKey };
    const r = await client.reserveUsage(reserve);
    // 0.3 ¢ + 6 ¢ = 6.3 ¢, held as 7 ¢.
    expect(r.quote?.costNano).toBe(6_300_000_000n);
    expect(r.hold?.amount).toBe(7n);
    expect([r.hold?.rateCardId, r.hold?.rateCardVersion, r.hold?.model]).toEqual(["llm", 1, "sonnet"]);
    expect(r.balance?.held).toBe(7n);
    expect((await client.reserveUsage(reserve)).replayed).toBe(true);

    const captureKey = key("cu");
    const c = await client.captureUsage({ holdId: r.hold!.holdId, usage: { inputTokens: 1000n, outputTokens: 1500n }, idempotencyKey: captureKey, metadata: { request_id: "req_1" } });
    // 0.3 ¢ + 2.25 ¢ = 2.55 ¢: 2 ¢ charged, 0.55 ¢ carried, the rest of the hold released.
    expect(c.amount).toBe(2n);
    expect(c.carryNano).toBe(550_000_000n);
    expect(c.transfer?.kind).toBe(TransferKind.CAPTURE);
    expect(c.transfer?.usageId).toBe(c.usageId);
    expect(c.hold?.status).toBe(HoldStatus.CAPTURED);
    expect(c.balance?.available).toBe(9_998n);
    expect(c.tokenTransfers.map((l) => [l.kind, l.tokenClass, l.amount, l.asset, l.debitWalletId, l.creditWalletId, l.usageId, l.model])).toEqual([
      [TransferKind.USAGE, TokenClass.INPUT, 1000n, "TOKENS", "@tokens", wallet, c.usageId, "sonnet"],
      [TransferKind.USAGE, TokenClass.OUTPUT, 1500n, "TOKENS", "@tokens", wallet, c.usageId, "sonnet"],
    ]);
    const replay = await client.captureUsage({ holdId: r.hold!.holdId, usage: { inputTokens: 1000n, outputTokens: 1500n }, idempotencyKey: captureKey, metadata: { request_id: "req_1" } });
    expect(replay.replayed).toBe(true);
    expect(replay.tokenTransfers.map((l) => l.transferId)).toEqual(c.tokenTransfers.map((l) => l.transferId));
    const reused = await failure(client.captureUsage({ holdId: r.hold!.holdId, usage: { inputTokens: 1001n }, idempotencyKey: captureKey }));
    expect([reused.code, reused.detail.reason]).toEqual([Code.AlreadyExists, "IDEMPOTENCY_KEY_REUSED"]);

    const listed = await client.listTransfers({ walletId: wallet, asset: "TOKENS" });
    expect(listed.transfers.map((x) => x.tokenClass).sort()).toEqual([TokenClass.INPUT, TokenClass.OUTPUT]);
  });

  it("spends a usage, charging with the carry", async () => {
    const wallet = `s_${protocol.replace("-", "_")}`;
    await fund(wallet);
    const client = ledger(protocol);
    const first = await client.spendUsage({ walletId: wallet, rateCardId: "llm", model: "embed", usage: { inputTokens: 300_000n }, idempotencyKey: key("su") });
    // 300,000 × 2e9 / 1e6 = 0.6 ¢: nothing charged, no SPEND, the legs recorded.
    expect(first.amount).toBe(0n);
    expect(first.transfer).toBeUndefined();
    expect(first.carryNano).toBe(600_000_000n);
    expect(first.tokenTransfers).toHaveLength(1);
    const second = await client.spendUsage({ walletId: wallet, rateCardId: "llm", model: "embed", usage: { inputTokens: 300_000n }, idempotencyKey: key("su") });
    expect(second.amount).toBe(1n);
    expect(second.carryNano).toBe(200_000_000n);
    expect(second.transfer?.kind).toBe(TransferKind.SPEND);
    expect(second.transfer?.amount).toBe(1n);
    expect(second.balance?.posted).toBe(9_999n);
  });
});

describe("over @grpc/grpc-js", () => {
  function clientFor(service: DescService): grpc.Client {
    const definition: Record<string, grpc.MethodDefinition<unknown, unknown>> = {};
    for (const method of service.methods) {
      const codec = (schema: DescMessage) => ({
        serialize: (message: unknown) => Buffer.from(toBinary(schema, message as MessageShape<DescMessage>)),
        deserialize: (bytes: Buffer) => fromBinary(schema, bytes),
      });
      definition[method.name] = {
        path: `/${service.typeName}/${method.name}`,
        requestStream: false,
        responseStream: method.methodKind === "server_streaming",
        requestSerialize: codec(method.input).serialize,
        requestDeserialize: codec(method.input).deserialize,
        responseSerialize: codec(method.output).serialize,
        responseDeserialize: codec(method.output).deserialize,
      };
    }
    const Constructor = grpc.makeGenericClientConstructor(definition, service.typeName);
    return new Constructor(`127.0.0.1:${s.app.address.port}`, grpc.credentials.createInsecure());
  }

  function unary<O>(client: grpc.Client, name: string, request: unknown): Promise<O> {
    const metadata = new grpc.Metadata();
    metadata.set("authorization", `Bearer ${s.keys.writer}`);
    const call = (client as unknown as Record<string, (...args: unknown[]) => unknown>)[name]!;
    return new Promise((resolve, reject) => {
      call.call(client, request, metadata, { deadline: Date.now() + CALL_DEADLINE_MS }, (err: Error | null, response: O) => (err ? reject(err) : resolve(response)));
    });
  }

  it("calls ReserveUsage, CaptureUsage and SpendUsage", async () => {
    await fund("grpcjs");
    const client = clientFor(LedgerService);
    try {
      const r = await unary<MessageShape<typeof ReserveUsageResponseSchema>>(client, "ReserveUsage",
        create(ReserveUsageRequestSchema, { walletId: "grpcjs", rateCardId: "llm", model: "sonnet", estimate: { outputTokens: 10_000n }, idempotencyKey: key() }));
      expect(r.hold?.amount).toBe(15n);
      const c = await unary<MessageShape<typeof CaptureUsageResponseSchema>>(client, "CaptureUsage",
        create(CaptureUsageRequestSchema, { holdId: r.hold!.holdId, usage: { outputTokens: 10_000n }, idempotencyKey: key() }));
      expect(c.amount).toBe(15n);
      expect(c.tokenTransfers.map((l) => l.tokenClass)).toEqual([TokenClass.OUTPUT]);
      const sp = await unary<MessageShape<typeof SpendUsageResponseSchema>>(client, "SpendUsage",
        create(SpendUsageRequestSchema, { walletId: "grpcjs", rateCardId: "llm", model: "sonnet", usage: { inputTokens: 10_000n }, idempotencyKey: key() }));
      expect(sp.amount).toBe(3n);
      const refused = await unary(client, "SpendUsage",
        create(SpendUsageRequestSchema, { walletId: "grpcjs", rateCardId: "none", model: "sonnet", usage: { inputTokens: 1n }, idempotencyKey: key() })).then(
        () => null,
        (err: grpc.ServiceError) => err.code,
      );
      expect(refused).toBe(grpc.status.NOT_FOUND);
    } finally {
      client.close();
    }
  });
});

describe("refusals", () => {
  it("names the field at fault", async () => {
    await fund("bad");
    const client = ledger();
    const base = { walletId: "bad", rateCardId: "llm", model: "sonnet", idempotencyKey: key() };
    const cases: [() => Promise<unknown>, string][] = [
      [() => client.reserveUsage({ ...base, estimate: { outputTokens: -1n } }), "estimate.output_tokens"],
      [() => client.reserveUsage({ ...base, estimate: {} }), "estimate"],
      [() => client.reserveUsage({ ...base, rateCardId: "", estimate: { inputTokens: 1n } }), "rate_card_id"],
      [() => client.reserveUsage({ ...base, model: "bad model", estimate: { inputTokens: 1n } }), "model"],
      [() => client.spendUsage({ ...base, usage: { inputTokens: -5n } }), "usage.input_tokens"],
      [() => client.spendUsage({ ...base, usage: {} }), "usage"],
      [() => client.captureUsage({ holdId: "", usage: {}, idempotencyKey: key() }), "hold_id"],
      // A cost beyond int64 nano units: the heaviest class is named.
      [() => client.reserveUsage({ ...base, idempotencyKey: key(), estimate: { inputTokens: 1n, outputTokens: 7_000_000_000_000_000n } }), "estimate.output_tokens"],
    ];
    for (const [call, field] of cases) {
      const { code, detail } = await failure(call());
      expect([code, detail.reason, detail.field]).toEqual([Code.InvalidArgument, "INVALID_FIELD", field]);
    }
    const free = await failure(client.reserveUsage({ ...base, idempotencyKey: key(), model: "free", estimate: { inputTokens: 1n } }));
    expect([free.code, free.detail.field]).toEqual([Code.InvalidArgument, "estimate"]);
  });

  it("answers RATE_CARD_NOT_FOUND and MODEL_NOT_PRICED", async () => {
    await fund("nf");
    const client = ledger();
    const card = await failure(client.spendUsage({ walletId: "nf", rateCardId: "nope", model: "sonnet", usage: { inputTokens: 1n }, idempotencyKey: key() }));
    expect([card.code, card.detail.reason]).toEqual([Code.NotFound, "RATE_CARD_NOT_FOUND"]);
    const model = await failure(client.spendUsage({ walletId: "nf", rateCardId: "llm", model: "gpt-9", usage: { inputTokens: 1n }, idempotencyKey: key() }));
    expect([model.code, model.detail.reason, model.detail.metadata["model"]]).toEqual([Code.FailedPrecondition, "MODEL_NOT_PRICED", "gpt-9"]);
    const cls = await failure(client.spendUsage({ walletId: "nf", rateCardId: "llm", model: "embed", usage: { outputTokens: 1n }, idempotencyKey: key() }));
    expect([cls.detail.reason, cls.detail.metadata["token_class"]]).toEqual(["MODEL_NOT_PRICED", "output"]);
  });
});

describe("wallet-scoped keys", () => {
  it("reserve and spend on their own wallet, capture their own holds, and nothing else", async () => {
    await fund("mine");
    await fund("theirs");
    const scoped = ledger("connect", await s.issue("writer", "mine"));
    const reader = ledger("connect", await s.issue("reader", "mine"));
    const estimate = { inputTokens: 1000n };
    const own = await scoped.reserveUsage({ walletId: "mine", rateCardId: "llm", model: "sonnet", estimate, idempotencyKey: key() });
    expect(own.hold?.walletId).toBe("mine");
    const other = await failure(scoped.reserveUsage({ walletId: "theirs", rateCardId: "llm", model: "sonnet", estimate, idempotencyKey: key() }));
    expect([other.code, other.detail.field]).toEqual([Code.PermissionDenied, "wallet_id"]);
    const otherSpend = await failure(scoped.spendUsage({ walletId: "theirs", rateCardId: "llm", model: "sonnet", usage: estimate, idempotencyKey: key() }));
    expect([otherSpend.code, otherSpend.detail.field]).toEqual([Code.PermissionDenied, "wallet_id"]);
    const theirHold = await ledger().reserveUsage({ walletId: "theirs", rateCardId: "llm", model: "sonnet", estimate, idempotencyKey: key() });
    const notMine = await failure(scoped.captureUsage({ holdId: theirHold.hold!.holdId, usage: estimate, idempotencyKey: key() }));
    expect([notMine.code, notMine.detail.reason]).toEqual([Code.NotFound, "HOLD_NOT_FOUND"]);
    expect((await scoped.captureUsage({ holdId: own.hold!.holdId, usage: estimate, idempotencyKey: key() })).hold?.status).toBe(HoldStatus.RELEASED);
    const denied = await failure(reader.spendUsage({ walletId: "mine", rateCardId: "llm", model: "sonnet", usage: estimate, idempotencyKey: key() }));
    expect(denied.code).toBe(Code.PermissionDenied);
  });

  it("leaves the ledger sound", async () => {
    expect(await checkInvariants(s.app.pool)).toEqual([]);
  });
});
