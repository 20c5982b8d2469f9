// Goal: wire compatibility with @grpc/grpc-js, the client Holdfast's internal services use
// (docs/architecture.md, "Processes"): unary calls, a server stream, refusals as gRPC status codes with the
// holdfast.v1.ErrorDetail readable from the `grpc-status-details-bin` trailer, authentication
// by `authorization` metadata, and the standard grpc.health.v1.Health service without a key.
// Method: a real ledger server on port 0 (fresh database, manual clock), called by a
// grpc-js generic client over an insecure HTTP/2 channel. The client's method definitions are
// built from the generated protobuf-es service descriptors and serialize with protobuf-es
// `toBinary` / `fromBinary`, so no proto-loader or second code generator is involved. The
// trailer is a google.rpc.Status, decoded with protobuf-es's BinaryReader and the Any
// well-known type, the way connect-es encodes it (setTrailerStatus in protocol-grpc).
import { randomUUID } from "node:crypto";
import * as grpc from "@grpc/grpc-js";
import { create, fromBinary, toBinary, type DescMessage, type DescMethod, type DescService, type MessageInitShape, type MessageShape } from "@bufbuild/protobuf";
import { anyUnpack, AnySchema, type Any } from "@bufbuild/protobuf/wkt";
import { BinaryReader } from "@bufbuild/protobuf/wire";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Health, HealthCheckResponse_ServingStatus } from "@holdfast/gen/grpc/health/v1/health_pb";
import { ErrorDetailSchema, type ErrorDetail } from "@holdfast/gen/holdfast/v1/errors_pb";
import { LedgerService, type WatchWalletResponse } from "@holdfast/gen/holdfast/v1/ledger_pb";
import { HoldStatus, TransferKind } from "@holdfast/gen/holdfast/v1/types_pb";
import { checkInvariants } from "@holdfast/ledger/invariants";
import { startTestServer } from "./support/server.js";

/** Unary calls that take longer than this are a failure, not a wait. */
const CALL_DEADLINE_MS = 10_000;

let s: Awaited<ReturnType<typeof startTestServer>>;
let ledger: grpc.Client;
let health: grpc.Client;

/** The grpc-js service definition of a protobuf-es service: paths and protobuf-es codecs. */
function definitionOf(service: DescService): grpc.ServiceDefinition {
  const definition: Record<string, grpc.MethodDefinition<unknown, unknown>> = {};
  for (const method of service.methods) {
    const codec = (schema: DescMessage) => ({
      serialize: (message: unknown) => Buffer.from(toBinary(schema, message as MessageShape<DescMessage>)),
      deserialize: (bytes: Buffer) => fromBinary(schema, bytes),
    });
    const input = codec(method.input);
    const output = codec(method.output);
    definition[method.name] = {
      path: `/${service.typeName}/${method.name}`,
      requestStream: method.methodKind === "client_streaming" || method.methodKind === "bidi_streaming",
      responseStream: method.methodKind === "server_streaming" || method.methodKind === "bidi_streaming",
      requestSerialize: input.serialize,
      requestDeserialize: input.deserialize,
      responseSerialize: output.serialize,
      responseDeserialize: output.deserialize,
    };
  }
  return definition;
}

function clientFor(service: DescService): grpc.Client {
  const Constructor = grpc.makeGenericClientConstructor(definitionOf(service), service.typeName);
  return new Constructor(`127.0.0.1:${s.app.address.port}`, grpc.credentials.createInsecure());
}

/** `authorization: Bearer <key>` metadata, or none for null. */
function auth(apiKey: string | null): grpc.Metadata {
  const metadata = new grpc.Metadata();
  if (apiKey !== null) metadata.set("authorization", `Bearer ${apiKey}`);
  return metadata;
}

type UnaryMethod<I extends DescMessage, O extends DescMessage> = DescMethod & { input: I; output: O };
type UnaryCall<I, O> = (
  request: I,
  metadata: grpc.Metadata,
  options: grpc.CallOptions,
  callback: grpc.requestCallback<O>,
) => grpc.ClientUnaryCall;

/** Calls a unary method through the generic client. */
function unary<I extends DescMessage, O extends DescMessage>(
  client: grpc.Client,
  method: UnaryMethod<I, O>,
  request: MessageInitShape<I>,
  metadata: grpc.Metadata,
): Promise<MessageShape<O>> {
  // makeGenericClientConstructor adds one method per definition entry, named as the entry.
  const call = (client as unknown as Record<string, UnaryCall<MessageShape<I>, MessageShape<O>>>)[method.name]!;
  return new Promise((resolve, reject) => {
    call.call(client, create(method.input, request), metadata, { deadline: Date.now() + CALL_DEADLINE_MS }, (err, response) => {
      if (err) reject(err);
      else resolve(response!);
    });
  });
}

/** Awaits a call that must fail with a gRPC status error. */
async function grpcError(call: Promise<unknown>): Promise<grpc.ServiceError> {
  return call.then(
    (value) => {
      throw new Error(`expected the call to fail, it answered ${String(value)}`);
    },
    (err: grpc.ServiceError) => err,
  );
}

/** google.rpc.Status: code = 1 (int32), message = 2 (string), details = 3 (repeated Any). */
function decodeStatus(bytes: Uint8Array): { code: number; message: string; details: Any[] } {
  const reader = new BinaryReader(bytes);
  const status = { code: 0, message: "", details: [] as Any[] };
  while (reader.pos < reader.len) {
    const [field, wireType] = reader.tag();
    if (field === 1) status.code = reader.int32();
    else if (field === 2) status.message = reader.string();
    else if (field === 3) status.details.push(fromBinary(AnySchema, reader.bytes()));
    else reader.skip(wireType);
  }
  return status;
}

/** The ErrorDetail from a grpc-js error's `grpc-status-details-bin` trailer. */
function errorDetailOf(err: grpc.ServiceError): ErrorDetail {
  const [bin] = err.metadata.get("grpc-status-details-bin");
  expect(bin, "grpc-status-details-bin trailer").toBeInstanceOf(Buffer);
  const status = decodeStatus(bin as Buffer);
  expect(status.code).toBe(err.code);
  expect(status.details.map((d) => d.typeUrl)).toEqual(["type.googleapis.com/holdfast.v1.ErrorDetail"]);
  const detail = anyUnpack(status.details[0]!, ErrorDetailSchema);
  expect(detail).toBeDefined();
  return detail!;
}

const key = () => `k-${randomUUID()}`;
const m = LedgerService.method;

beforeAll(async () => {
  s = await startTestServer();
  ledger = clientFor(LedgerService);
  health = clientFor(Health);
});
afterAll(async () => {
  ledger?.close();
  health?.close();
  await s?.close();
});

describe("grpc-js client", () => {
  it("runs Deposit → Reserve → Capture → GetWallet with int64 amounts intact", async () => {
    const md = auth(s.keys.writer);
    const big = 2n ** 53n + 1n; // not representable as a double: proves int64 travels as int64
    const deposit = await unary(ledger, m.deposit, { walletId: "gj_w1", asset: "USD", amount: big, idempotencyKey: key() }, md);
    expect(deposit.transfer).toMatchObject({ kind: TransferKind.DEPOSIT, creditWalletId: "gj_w1", amount: big });
    expect(deposit.balance).toMatchObject({ posted: big, available: big });

    const reserve = await unary(
      ledger,
      m.reserve,
      { walletId: "gj_w1", asset: "USD", amount: 500n, holdId: "gj_h1", ttlSeconds: 600, idempotencyKey: key(), metadata: { model: "m" } },
      md,
    );
    expect(reserve.hold).toMatchObject({ holdId: "gj_h1", amount: 500n, status: HoldStatus.PENDING, metadata: { model: "m" } });
    expect(reserve.balance).toMatchObject({ posted: big, held: 500n, available: big - 500n });

    const capture = await unary(ledger, m.capture, { holdId: "gj_h1", amount: 320n, idempotencyKey: key() }, md);
    expect(capture.transfer).toMatchObject({ kind: TransferKind.CAPTURE, amount: 320n, holdId: "gj_h1" });
    expect(capture.hold).toMatchObject({ status: HoldStatus.CAPTURED, capturedAmount: 320n });
    expect(capture.balance).toMatchObject({ posted: big - 320n, held: 0n, available: big - 320n });
    expect(capture.replayed).toBe(false);

    const got = await unary(ledger, m.getWallet, { walletId: "gj_w1" }, auth(s.keys.reader));
    expect(got.wallet?.walletId).toBe("gj_w1");
    expect(got.wallet?.balances).toHaveLength(1);
    expect(got.wallet?.balances[0]).toMatchObject({ asset: "USD", posted: big - 320n, held: 0n, available: big - 320n, creditLimit: 0n });
  });

  it("replays a command sent twice with the same idempotency key", async () => {
    const md = auth(s.keys.writer);
    const request = { walletId: "gj_w2", asset: "USD", amount: 70n, idempotencyKey: key() };
    const first = await unary(ledger, m.deposit, request, md);
    const second = await unary(ledger, m.deposit, request, md);
    expect([first.replayed, second.replayed]).toEqual([false, true]);
    expect(second.transfer?.transferId).toBe(first.transfer?.transferId);
  });

  it("answers INSUFFICIENT_FUNDS as FAILED_PRECONDITION with the ErrorDetail in grpc-status-details-bin", async () => {
    const md = auth(s.keys.writer);
    await unary(ledger, m.deposit, { walletId: "gj_w3", asset: "USD", amount: 100n, idempotencyKey: key() }, md);
    const err = await grpcError(unary(ledger, m.spend, { walletId: "gj_w3", asset: "USD", amount: 101n, idempotencyKey: key() }, md));
    expect(err.code).toBe(grpc.status.FAILED_PRECONDITION);
    const detail = errorDetailOf(err);
    expect(detail).toMatchObject({ reason: "INSUFFICIENT_FUNDS", metadata: { available: "100" } });
    expect(err.details).toBe(detail.message);
  });

  it("answers malformed input as INVALID_ARGUMENT naming the field", async () => {
    const err = await grpcError(
      unary(ledger, m.deposit, { walletId: "gj w", asset: "USD", amount: 1n, idempotencyKey: key() }, auth(s.keys.writer)),
    );
    expect(err.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(errorDetailOf(err)).toMatchObject({ reason: "INVALID_FIELD", field: "wallet_id" });
  });

  it("refuses a call without a key as UNAUTHENTICATED, and a reader's command as PERMISSION_DENIED", async () => {
    const missing = await grpcError(unary(ledger, m.getWallet, { walletId: "gj_w1" }, auth(null)));
    expect(missing.code).toBe(grpc.status.UNAUTHENTICATED);
    expect(errorDetailOf(missing).reason).toBe("UNAUTHENTICATED");
    const reader = await grpcError(
      unary(ledger, m.deposit, { walletId: "gj_w1", asset: "USD", amount: 1n, idempotencyKey: key() }, auth(s.keys.reader)),
    );
    expect(reader.code).toBe(grpc.status.PERMISSION_DENIED);
    expect(errorDetailOf(reader).reason).toBe("PERMISSION_DENIED");
  });

  it("answers grpc.health.v1.Health/Check with SERVING without a key", async () => {
    const server = await unary(health, Health.method.check, { service: "" }, auth(null));
    expect(server.status).toBe(HealthCheckResponse_ServingStatus.SERVING);
    const service = await unary(health, Health.method.check, { service: "holdfast.v1.LedgerService" }, auth(null));
    expect(service.status).toBe(HealthCheckResponse_ServingStatus.SERVING);
    const unknown = await grpcError(unary(health, Health.method.check, { service: "no.such.Service" }, auth(null)));
    expect(unknown.code).toBe(grpc.status.NOT_FOUND);
  });

  it("streams WatchWallet: the snapshot, then each change in sequence, until cancelled", async () => {
    const md = auth(s.keys.writer);
    await unary(ledger, m.deposit, { walletId: "gj_w4", asset: "USD", amount: 1000n, idempotencyKey: key() }, md);
    const call = (ledger as unknown as Record<string, (req: unknown, md: grpc.Metadata) => grpc.ClientReadableStream<WatchWalletResponse>>)[
      m.watchWallet.name
    ]!.call(ledger, create(m.watchWallet.input, { walletId: "gj_w4" }), auth(s.keys.reader));
    const ended = new Promise<grpc.StatusObject>((resolve) => call.on("status", resolve));
    const errors: grpc.ServiceError[] = [];
    call.on("error", (err: grpc.ServiceError) => errors.push(err));
    const messages = call[Symbol.asyncIterator]() as AsyncIterator<WatchWalletResponse>;
    try {
      const snapshot = (await messages.next()).value as WatchWalletResponse;
      expect(snapshot).toMatchObject({ walletId: "gj_w4", eventType: "snapshot", balance: { posted: 1000n, available: 1000n } });

      const hold = await unary(
        ledger,
        m.reserve,
        { walletId: "gj_w4", asset: "USD", amount: 300n, ttlSeconds: 600, idempotencyKey: key() },
        md,
      );
      await unary(ledger, m.release, { holdId: hold.hold!.holdId, idempotencyKey: key() }, md);

      const reserved = (await messages.next()).value as WatchWalletResponse;
      expect(reserved).toMatchObject({
        eventType: "holdfast.hold.created",
        sequence: snapshot.sequence + 1n,
        balance: { posted: 1000n, held: 300n, available: 700n },
      });
      const released = (await messages.next()).value as WatchWalletResponse;
      expect(released).toMatchObject({
        eventType: "holdfast.hold.released",
        sequence: snapshot.sequence + 2n,
        balance: { posted: 1000n, held: 0n, available: 1000n },
      });
    } finally {
      call.cancel();
    }
    expect((await ended).code).toBe(grpc.status.CANCELLED);
  });

  it("leaves every ledger invariant intact", async () => {
    expect(await checkInvariants(s.app.pool)).toEqual([]);
  });
});
