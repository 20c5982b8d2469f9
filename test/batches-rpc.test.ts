// Goal: LedgerService.ExecuteBatch on the wire, as docs/batches.md and batches.proto state it:
// results per command, replays, a refused batch failing with the refused command's code and
// ErrorDetail (metadata index and reason) plus a BatchFailure detail reporting every other
// command BATCH_COMMAND_NOT_APPLIED, bad input and size limits naming the field
// (commands[3].spend.amount), roles and wallet-scoped keys held to each command's own rule, and
// the batch id on every event the batch published.
// Method: one real ledger server on port 0 over a fresh database with a manual clock and the
// outbox relay publishing to a nats-server of the file's own; the suite runs over Connect JSON
// and over gRPC (describe.each), each run with its own wallets, then once with @grpc/grpc-js,
// reading both details from the grpc-status-details-bin trailer. The file ends by checking
// every ledger invariant over the whole database.
import { randomUUID } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import * as grpc from "@grpc/grpc-js";
import { create, fromBinary, toBinary, type MessageInitShape } from "@bufbuild/protobuf";
import { anyUnpack, AnySchema, timestampFromDate, type Any } from "@bufbuild/protobuf/wkt";
import { BinaryReader } from "@bufbuild/protobuf/wire";
import { Code, ConnectError, type Client } from "@connectrpc/connect";
import { jetstream } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  BatchFailureSchema,
  ExecuteBatchRequestSchema,
  ExecuteBatchResponseSchema,
  type BatchCommandSchema,
  type BatchFailure,
  type ExecuteBatchResponse,
} from "@holdfast/gen/holdfast/v1/batches_pb";
import { ErrorDetailSchema, type ErrorDetail } from "@holdfast/gen/holdfast/v1/errors_pb";
import { EventSchema, type Event } from "@holdfast/gen/holdfast/v1/events_pb";
import { LedgerService } from "@holdfast/gen/holdfast/v1/ledger_pb";
import { RateCardService } from "@holdfast/gen/holdfast/v1/rate_cards_pb";
import { HoldStatus, TransferKind } from "@holdfast/gen/holdfast/v1/types_pb";
import { checkInvariants } from "@holdfast/ledger/invariants";
import { startNatsServer } from "./support/nats.js";
import { startTestServer, type Protocol } from "./support/server.js";

const STREAM = "HOLDFAST_EVENTS";
/** Unary calls that take longer than this are a failure, not a wait. */
const CALL_DEADLINE_MS = 10_000;

let nats: Awaited<ReturnType<typeof startNatsServer>>;
let s: Awaited<ReturnType<typeof startTestServer>>;

beforeAll(async () => {
  nats = await startNatsServer();
  s = await startTestServer({ NATS_URL: nats.url });
  // $3 input and $15 output per million tokens, in USD.
  await s.client(RateCardService, "connect-json").putRateCard({
    rateCardId: "llm",
    asset: "USD",
    idempotencyKey: key(),
    models: [{ model: "sonnet", inputNanoPerMtok: 300_000_000_000n, outputNanoPerMtok: 1_500_000_000_000n }],
  });
});
afterAll(async () => {
  await s?.close();
  await nats?.close();
});

const key = () => `k-${randomUUID()}`;
type Command = MessageInitShape<typeof BatchCommandSchema>;

const deposit = (walletId: string, amount: bigint): Command => ({ command: { case: "deposit", value: { walletId, asset: "USD", amount } } });
const spend = (walletId: string, amount: bigint): Command => ({ command: { case: "spend", value: { walletId, asset: "USD", amount } } });

/** Awaits a call that must fail with `code` and `reason`; returns the error. */
async function refused(call: Promise<unknown>, code: Code, reason: string): Promise<{ detail: ErrorDetail; failure: BatchFailure | undefined }> {
  const err = await call.then(
    () => {
      throw new Error(`expected ${Code[code]} ${reason}, the call succeeded`);
    },
    (e: unknown) => ConnectError.from(e),
  );
  const [detail] = err.findDetails(ErrorDetailSchema);
  expect({ code: Code[err.code], reason: detail?.reason }).toEqual({ code: Code[code], reason });
  const [failure] = err.findDetails(BatchFailureSchema);
  return { detail: detail!, failure };
}

/** Awaits a call that must fail with INVALID_ARGUMENT / INVALID_FIELD naming `field`. */
async function invalid(call: Promise<unknown>, field: string): Promise<void> {
  const { detail } = await refused(call, Code.InvalidArgument, "INVALID_FIELD");
  expect(detail.field).toBe(field);
  expect(detail.message.startsWith(`${field}: `), detail.message).toBe(true);
}

/** The reason of every result of a BatchFailure, in order. */
function failureReasons(failure: BatchFailure | undefined): string[] {
  return (failure?.results ?? []).map((r) => (r.result.case === "error" ? r.result.value.reason : `not an error: ${String(r.result.case)}`));
}

/** Every event of one wallet on the stream, once the relay has published the whole outbox. */
async function walletEvents(walletId: string): Promise<Event[]> {
  const deadline = Date.now() + 30_000;
  while ((await s.app.relay!.refreshStatus()).backlog > 0) {
    if (Date.now() > deadline) throw new Error("timed out waiting for the relay");
    await sleep(50);
  }
  const { rows } = await s.app.pool.query<{ n: number }>("select count(*)::int as n from events where tenant_id = $1 and wallet_id = $2", [
    s.tenantId,
    walletId,
  ]);
  const total = rows[0]!.n;
  const nc = await connect({ servers: nats.url });
  try {
    const consumer = await jetstream(nc).consumers.get(STREAM, { filter_subjects: `holdfast.events.${s.tenantId}.${walletId}.>` });
    const out: Event[] = [];
    while (out.length < total) {
      for await (const m of await consumer.fetch({ max_messages: 100, expires: 2000 })) {
        out.push(fromBinary(EventSchema, m.data));
      }
    }
    return out;
  } finally {
    await nc.close();
  }
}

describe.each(["connect-json", "grpc"] as Protocol[])("over %s", (protocol) => {
  const prefix = `${protocol.replace("-", "_")}_`;
  let n = 0;
  const wallet = () => `${prefix}w${++n}`;
  let writer: Client<typeof LedgerService>;

  beforeAll(() => {
    writer = s.client(LedgerService, protocol, s.keys.writer);
  });

  async function available(walletId: string): Promise<bigint> {
    const r = await writer.getWallet({ walletId });
    return r.wallet?.balances.find((b) => b.asset === "USD")?.available ?? 0n;
  }

  it("answers every command's result in order, replays them, and stamps the batch id on every event", async () => {
    const [a, b] = [wallet(), wallet()];
    const holdId = `${prefix}hold${++n}`;
    const idempotencyKey = key();
    const commands: Command[] = [
      deposit(a, 1_000n),
      { command: { case: "reserve", value: { walletId: a, asset: "USD", amount: 300n, holdId, ttlSeconds: 60, metadata: { model: "m1" } } } },
      { command: { case: "capture", value: { holdId, amount: 120n } } },
      { command: { case: "transfer", value: { fromWalletId: a, toWalletId: b, asset: "USD", amount: 80n } } },
      spend(b, 30n),
    ];
    const r = await writer.executeBatch({ idempotencyKey, commands });
    expect(r.replayed).toBe(false);
    expect(r.batchId).toMatch(/^[0-9a-f-]{36}$/);
    expect(r.results.map((x) => x.result.case)).toEqual(["deposit", "reserve", "capture", "transfer", "spend"]);
    const [dep, res, cap, xfer, sp] = r.results.map((x) => x.result.value) as [
      { transfer: { kind: TransferKind }; balance: { available: bigint } },
      { hold: { status: HoldStatus }; balance: { available: bigint } },
      { hold: { status: HoldStatus; capturedAmount: bigint }; balance: { available: bigint } },
      { fromBalance: { available: bigint }; toBalance: { available: bigint } },
      { balance: { available: bigint } },
    ];
    expect(dep).toMatchObject({ transfer: { kind: TransferKind.DEPOSIT }, balance: { available: 1_000n } });
    expect(res).toMatchObject({ hold: { status: HoldStatus.PENDING }, balance: { available: 700n } });
    expect(cap).toMatchObject({ hold: { status: HoldStatus.CAPTURED, capturedAmount: 120n }, balance: { available: 880n } });
    expect(xfer).toMatchObject({ fromBalance: { available: 800n }, toBalance: { available: 80n } });
    expect(sp).toMatchObject({ balance: { available: 50n } });

    const again = await writer.executeBatch({ idempotencyKey, commands });
    expect(again.replayed).toBe(true);
    expect(again.batchId).toBe(r.batchId);
    expect(again.results).toEqual(r.results);
    expect([await available(a), await available(b)]).toEqual([800n, 50n]);

    const events = [...(await walletEvents(a)), ...(await walletEvents(b))];
    expect(events.map((e) => e.type).sort()).toEqual(
      [
        "holdfast.deposit.completed",
        "holdfast.hold.created",
        "holdfast.hold.captured",
        "holdfast.transfer.sent",
        "holdfast.transfer.received",
        "holdfast.spend.completed",
      ].sort(),
    );
    for (const event of events) {
      expect(event.batchId, event.type).toBe(r.batchId);
    }
  });

  it("records a usage's token legs with money legs in one batch, or none of them", async () => {
    const [agent, platform] = [wallet(), wallet()];
    const holdId = `${prefix}usage_hold${++n}`;
    await writer.deposit({ walletId: agent, asset: "USD", amount: 1_000n, idempotencyKey: key() });
    const usage = { inputTokens: 1_000n, outputTokens: 4_000n };
    const r = await writer.executeBatch({
      idempotencyKey: key(),
      commands: [
        { command: { case: "reserveUsage", value: { walletId: agent, rateCardId: "llm", model: "sonnet", estimate: usage, holdId } } },
        { command: { case: "captureUsage", value: { holdId, usage: { inputTokens: 1_000n, outputTokens: 1_500n } } } },
        { command: { case: "spendUsage", value: { walletId: agent, rateCardId: "llm", model: "sonnet", usage } } },
        // The platform's share, in the same write.
        { command: { case: "transfer", value: { fromWalletId: agent, toWalletId: platform, asset: "USD", amount: 2n } } },
      ],
    });
    expect(r.results.map((x) => x.result.case)).toEqual(["reserveUsage", "captureUsage", "spendUsage", "transfer"]);
    const reserved = r.results[0]!.result;
    const captured = r.results[1]!.result;
    const spent = r.results[2]!.result;
    if (reserved.case !== "reserveUsage" || captured.case !== "captureUsage" || spent.case !== "spendUsage") throw new Error("unexpected result cases");
    // 0.3 ¢ + 6 ¢ = 6.3 ¢, held as 7; the capture costs 2.55 ¢: 2 charged, 0.55 carried; the
    // spend costs 6.3 ¢ + the carry: 6 charged, 0.85 carried.
    expect(reserved.value.hold?.amount).toBe(7n);
    expect([captured.value.amount, captured.value.carryNano, captured.value.tokenTransfers.length]).toEqual([2n, 550_000_000n, 2]);
    expect([spent.value.amount, spent.value.carryNano, spent.value.tokenTransfers.length]).toEqual([6n, 850_000_000n, 2]);
    expect(spent.value.tokenTransfers.every((t) => t.kind === TransferKind.USAGE)).toBe(true);
    expect(await available(agent)).toBe(990n);

    // The money leg after it cannot be paid: no token leg of the spend remains either.
    const legsBefore = (await writer.listTransfers({ walletId: agent, pageSize: 500 })).transfers.length;
    const { detail } = await refused(
      writer.executeBatch({
        idempotencyKey: key(),
        commands: [
          { command: { case: "spendUsage", value: { walletId: agent, rateCardId: "llm", model: "sonnet", usage } } },
          { command: { case: "transfer", value: { fromWalletId: agent, toWalletId: platform, asset: "USD", amount: 5_000n } } },
        ],
      }),
      Code.FailedPrecondition,
      "INSUFFICIENT_FUNDS",
    );
    expect(detail.metadata).toMatchObject({ index: "1" });
    expect((await writer.listTransfers({ walletId: agent, pageSize: 500 })).transfers).toHaveLength(legsBefore);
    expect(await available(agent)).toBe(990n);
    await invalid(
      writer.executeBatch({ idempotencyKey: key(), commands: [{ command: { case: "spendUsage", value: { walletId: agent, rateCardId: "llm", model: "sonnet", usage: { outputTokens: -1n } } } }] }),
      "commands[0].spend_usage.usage.output_tokens",
    );
  });

  it("fails a refused batch with the command's code and reason, its index, and every other command not applied", async () => {
    const [a, b] = [wallet(), wallet()];
    await writer.deposit({ walletId: a, asset: "USD", amount: 100n, idempotencyKey: key() });
    const idempotencyKey = key();
    const commands = [deposit(b, 50n), spend(a, 60n), spend(a, 60n), deposit(a, 5n)];
    const { detail, failure } = await refused(writer.executeBatch({ idempotencyKey, commands }), Code.FailedPrecondition, "INSUFFICIENT_FUNDS");
    expect(detail.metadata).toEqual({ index: "2", reason: "INSUFFICIENT_FUNDS", available: "40" });
    expect(failure?.replayed).toBe(false);
    expect(failureReasons(failure)).toEqual(["BATCH_COMMAND_NOT_APPLIED", "BATCH_COMMAND_NOT_APPLIED", "INSUFFICIENT_FUNDS", "BATCH_COMMAND_NOT_APPLIED"]);
    // Nothing of it was applied: the first deposit's wallet does not even exist.
    expect(await available(a)).toBe(100n);
    await refused(writer.getWallet({ walletId: b }), Code.NotFound, "WALLET_NOT_FOUND");
    // Recorded under the batch's key: the same request answers the same refusal.
    const replay = await refused(writer.executeBatch({ idempotencyKey, commands }), Code.FailedPrecondition, "INSUFFICIENT_FUNDS");
    expect(replay.detail.metadata).toEqual(detail.metadata);
    expect(replay.failure?.replayed).toBe(true);
    await refused(writer.executeBatch({ idempotencyKey, commands: [deposit(a, 1n)] }), Code.AlreadyExists, "IDEMPOTENCY_KEY_REUSED");
  });

  it("names the field at fault under the command's path, before anything runs", async () => {
    const a = wallet();
    const three = [deposit(a, 1n), deposit(a, 1n), deposit(a, 1n)];
    await invalid(writer.executeBatch({ idempotencyKey: key(), commands: [...three, spend(a, 0n)] }), "commands[3].spend.amount");
    await invalid(writer.executeBatch({ idempotencyKey: key(), commands: [] }), "commands");
    await invalid(writer.executeBatch({ idempotencyKey: key(), commands: Array.from({ length: 101 }, () => deposit(a, 1n)) }), "commands");
    await invalid(writer.executeBatch({ idempotencyKey: "", commands: three }), "idempotency_key");
    await invalid(writer.executeBatch({ idempotencyKey: key(), commands: [deposit(a, 1n), {}] }), "commands[1]");
    await invalid(writer.executeBatch({ idempotencyKey: key(), commands: [{ command: { case: "deposit", value: { walletId: "bad id", asset: "USD", amount: 1n } } }] }), "commands[0].deposit.wallet_id");
    await invalid(writer.executeBatch({ idempotencyKey: key(), commands: [{ command: { case: "release", value: { holdId: "" } } }] }), "commands[0].release.hold_id");
    await invalid(writer.executeBatch({ idempotencyKey: key(), commands: [{ command: { case: "extendHold", value: { holdId: "h", ttlSeconds: 0 } } }] }), "commands[0].extend_hold.ttl_seconds");
    await invalid(writer.executeBatch({ idempotencyKey: key(), commands: [{ command: { case: "refund", value: { transferId: "nope" } } }] }), "commands[0].refund.transfer_id");
    await invalid(
      writer.executeBatch({ idempotencyKey: key(), commands: [{ command: { case: "transfer", value: { fromWalletId: a, toWalletId: a, asset: "USD", amount: 1n } } }] }),
      "commands[0].transfer.to_wallet_id",
    );
    await invalid(
      writer.executeBatch({ idempotencyKey: key(), commands: [deposit(a, 1n), { command: { case: "spend", value: { walletId: a, asset: "USD", amount: 1n, metadata: { "bad key": "x" } } } }] }),
      "commands[1].spend.metadata.bad key",
    );
    // Nothing ran: not even the deposits before the command at fault.
    await refused(writer.getWallet({ walletId: a }), Code.NotFound, "WALLET_NOT_FOUND");
  });

  it("names the field of a refusal only the ledger can make: a grant expiring before the command's time, a sum beyond int64", async () => {
    const a = wallet();
    const ago = (ms: number) => timestampFromDate(new Date(s.clock().getTime() - ms));
    const grant: Command = { command: { case: "createGrant", value: { walletId: a, asset: "USD", amount: 5n, startsAt: ago(2000), expiresAt: ago(1000) } } };
    const { detail, failure } = await refused(writer.executeBatch({ idempotencyKey: key(), commands: [deposit(a, 1n), grant] }), Code.InvalidArgument, "INVALID_FIELD");
    expect(detail.field).toBe("commands[1].create_grant.expires_at");
    expect(detail.message).toBe("commands[1].create_grant.expires_at: must be in the future");
    expect(detail.metadata).toMatchObject({ index: "1", reason: "INVALID_FIELD" });
    expect(failureReasons(failure)).toEqual(["BATCH_COMMAND_NOT_APPLIED", "INVALID_FIELD"]);

    const overflow = await refused(
      writer.executeBatch({ idempotencyKey: key(), commands: [deposit(a, 2n ** 63n - 1n), deposit(a, 1n)] }),
      Code.InvalidArgument,
      "INVALID_FIELD",
    );
    expect(overflow.detail.field).toBe("commands[1].deposit.amount");
    await refused(writer.getWallet({ walletId: a }), Code.NotFound, "WALLET_NOT_FOUND");
  });

  it("holds every command to its single RPC's rule: readers may not, a scoped key only what it may do alone", async () => {
    const [mine, theirs] = [wallet(), wallet()];
    const theirHold = `${prefix}their_hold${++n}`;
    await writer.executeBatch({
      idempotencyKey: key(),
      commands: [deposit(mine, 100n), deposit(theirs, 100n), { command: { case: "reserve", value: { walletId: theirs, asset: "USD", amount: 10n, holdId: theirHold } } }],
    });
    const reader = s.client(LedgerService, protocol, s.keys.reader);
    await refused(reader.executeBatch({ idempotencyKey: key(), commands: [spend(mine, 1n)] }), Code.PermissionDenied, "PERMISSION_DENIED");

    const scoped = s.client(LedgerService, protocol, await s.issue("writer", mine));
    const myHold = `${prefix}my_hold${++n}`;
    const r = await scoped.executeBatch({
      idempotencyKey: key(),
      commands: [spend(mine, 5n), { command: { case: "reserve", value: { walletId: mine, asset: "USD", amount: 10n, holdId: myHold } } }, { command: { case: "capture", value: { holdId: myHold } } }],
    });
    expect(r.results).toHaveLength(3);

    const otherWallet = await refused(scoped.executeBatch({ idempotencyKey: key(), commands: [spend(mine, 1n), spend(theirs, 1n)] }), Code.PermissionDenied, "PERMISSION_DENIED");
    expect(otherWallet.detail.field).toBe("commands[1].spend.wallet_id");
    const dep = await refused(scoped.executeBatch({ idempotencyKey: key(), commands: [deposit(mine, 1n)] }), Code.PermissionDenied, "PERMISSION_DENIED");
    expect(dep.detail.field).toBe("commands[0].deposit.wallet_id");
    const usageElsewhere: Command = { command: { case: "spendUsage", value: { walletId: theirs, rateCardId: "llm", model: "sonnet", usage: { inputTokens: 1n } } } };
    const metered = await refused(scoped.executeBatch({ idempotencyKey: key(), commands: [spend(mine, 1n), usageElsewhere] }), Code.PermissionDenied, "PERMISSION_DENIED");
    expect(metered.detail.field).toBe("commands[1].spend_usage.wallet_id");
    const xfer: Command = { command: { case: "transfer", value: { fromWalletId: mine, toWalletId: theirs, asset: "USD", amount: 1n } } };
    const moved = await refused(scoped.executeBatch({ idempotencyKey: key(), commands: [xfer] }), Code.PermissionDenied, "PERMISSION_DENIED");
    expect(moved.detail.field).toBe("commands[0].transfer.from_wallet_id");
    // Another wallet's hold looks like one that does not exist, as it does to Capture alone.
    const notFound = await refused(
      scoped.executeBatch({ idempotencyKey: key(), commands: [spend(mine, 1n), { command: { case: "capture", value: { holdId: theirHold } } }] }),
      Code.NotFound,
      "HOLD_NOT_FOUND",
    );
    expect(notFound.detail.metadata).toMatchObject({ index: "1" });
    expect(await available(mine)).toBe(85n);
    expect(await available(theirs)).toBe(90n);
  });
});

describe("over @grpc/grpc-js", () => {
  let client: grpc.Client;

  beforeAll(() => {
    const method = LedgerService.method.executeBatch;
    const definition: grpc.ServiceDefinition = {
      ExecuteBatch: {
        path: `/${LedgerService.typeName}/ExecuteBatch`,
        requestStream: false,
        responseStream: false,
        requestSerialize: (m: unknown) => Buffer.from(toBinary(method.input, m as never)),
        requestDeserialize: (b: Buffer) => fromBinary(method.input, b),
        responseSerialize: (m: unknown) => Buffer.from(toBinary(method.output, m as never)),
        responseDeserialize: (b: Buffer) => fromBinary(method.output, b),
      },
    };
    const Constructor = grpc.makeGenericClientConstructor(definition, LedgerService.typeName);
    client = new Constructor(`127.0.0.1:${s.app.address.port}`, grpc.credentials.createInsecure());
  });
  afterAll(() => client?.close());

  function executeBatch(request: MessageInitShape<typeof ExecuteBatchRequestSchema>): Promise<ExecuteBatchResponse> {
    const metadata = new grpc.Metadata();
    metadata.set("authorization", `Bearer ${s.keys.writer}`);
    const call = (client as unknown as Record<string, (...args: unknown[]) => void>)["ExecuteBatch"]!;
    return new Promise((resolve, reject) => {
      call.call(client, create(ExecuteBatchRequestSchema, request), metadata, { deadline: Date.now() + CALL_DEADLINE_MS }, (err: unknown, res: ExecuteBatchResponse) =>
        err ? reject(err) : resolve(res),
      );
    });
  }

  /** google.rpc.Status: code = 1 (int32), message = 2 (string), details = 3 (repeated Any). */
  function detailsOf(err: grpc.ServiceError): Any[] {
    const [bin] = err.metadata.get("grpc-status-details-bin");
    const reader = new BinaryReader(bin as Buffer);
    const details: Any[] = [];
    while (reader.pos < reader.len) {
      const [field, wireType] = reader.tag();
      if (field === 3) details.push(fromBinary(AnySchema, reader.bytes()));
      else reader.skip(wireType);
    }
    return details;
  }

  it("answers results, and a refusal as a gRPC status with the ErrorDetail and the BatchFailure", async () => {
    const r = await executeBatch({ idempotencyKey: key(), commands: [deposit("grpcjs_a", 40n), spend("grpcjs_a", 15n)] });
    expect(ExecuteBatchResponseSchema.typeName).toBe("holdfast.v1.ExecuteBatchResponse");
    expect(r.results.map((x) => x.result.case)).toEqual(["deposit", "spend"]);

    const err = await executeBatch({ idempotencyKey: key(), commands: [spend("grpcjs_a", 20n), spend("grpcjs_a", 20n)] }).then(
      () => {
        throw new Error("expected the batch to be refused");
      },
      (e: grpc.ServiceError) => e,
    );
    expect(err.code).toBe(grpc.status.FAILED_PRECONDITION);
    const details = detailsOf(err);
    expect(details.map((d) => d.typeUrl)).toEqual(["type.googleapis.com/holdfast.v1.ErrorDetail", "type.googleapis.com/holdfast.v1.BatchFailure"]);
    expect(anyUnpack(details[0]!, ErrorDetailSchema)).toMatchObject({ reason: "INSUFFICIENT_FUNDS", metadata: { index: "1", reason: "INSUFFICIENT_FUNDS", available: "5" } });
    expect(failureReasons(anyUnpack(details[1]!, BatchFailureSchema))).toEqual(["BATCH_COMMAND_NOT_APPLIED", "INSUFFICIENT_FUNDS"]);
  });
});

it("leaves every ledger invariant intact", async () => {
  expect(await checkInvariants(s.app.pool)).toEqual([]);
});
