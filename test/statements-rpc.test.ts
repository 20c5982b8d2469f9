// Goal: the statement RPCs (LedgerService.GetStatement, AdminService.CloseStatement and
// ListStatements) behave on the wire as proto/holdfast/v1/statements.proto and
// docs/statements.md state them: the figures, replays and IDEMPOTENCY_KEY_REUSED, paging, the
// audit log entry, bad input as INVALID_ARGUMENT naming the field, who may call what (a
// wallet-scoped key reads its own wallet's statements only), and the holdfast.statement.closed
// event on NATS, which webhook filters accept.
// Method: one real ledger server on port 0 over a fresh database with a manual clock and the
// outbox relay publishing to a nats-server of the file's own. The suite runs over Connect JSON
// and over gRPC (describe.each), each run with its own wallets; a last block calls every
// statement RPC with @grpc/grpc-js, the client internal services use, reading the ErrorDetail
// from the grpc-status-details-bin trailer. Time moves by the manual clock, never by sleeping,
// except while waiting for the relay. The file ends with the invariant check.
import { randomUUID } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import * as grpc from "@grpc/grpc-js";
import { create, fromBinary, toBinary, type DescMessage, type DescMethod, type DescService, type MessageInitShape, type MessageShape } from "@bufbuild/protobuf";
import { anyUnpack, AnySchema, timestampDate, timestampFromDate, type Any } from "@bufbuild/protobuf/wkt";
import { BinaryReader } from "@bufbuild/protobuf/wire";
import { Code, ConnectError, type Client } from "@connectrpc/connect";
import { jetstream } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AdminService } from "@holdfast/gen/holdfast/v1/admin_pb";
import { ErrorDetailSchema, type ErrorDetail } from "@holdfast/gen/holdfast/v1/errors_pb";
import { EventSchema } from "@holdfast/gen/holdfast/v1/events_pb";
import { LedgerService } from "@holdfast/gen/holdfast/v1/ledger_pb";
import { StatementSide } from "@holdfast/gen/holdfast/v1/statements_pb";
import { TransferKind } from "@holdfast/gen/holdfast/v1/types_pb";
import { checkInvariants } from "@holdfast/ledger/invariants";
import { checkEventTypeFilters } from "@holdfast/webhooks-core/event-types";
import { startNatsServer } from "./support/nats.js";
import { startTestServer, type Protocol } from "./support/server.js";

const STREAM = "HOLDFAST_EVENTS";
const HOUR_MS = 3_600_000;
/** Unary grpc-js calls that take longer than this are a failure, not a wait. */
const CALL_DEADLINE_MS = 10_000;

let nats: Awaited<ReturnType<typeof startNatsServer>>;
let s: Awaited<ReturnType<typeof startTestServer>>;

beforeAll(async () => {
  nats = await startNatsServer();
  s = await startTestServer({ NATS_URL: nats.url });
});
afterAll(async () => {
  await s?.close();
  await nats?.close();
});

const key = () => `k-${randomUUID()}`;
/** The server's (manual) clock moved by `ms`, as a protobuf Timestamp. */
const at = (ms: number) => timestampFromDate(new Date(s.clock().getTime() + ms));

/** Awaits a call that must fail with `code` and `reason`; returns the ErrorDetail. */
async function refused(call: Promise<unknown>, code: Code, reason: string): Promise<ErrorDetail> {
  const err = await call.then(
    () => {
      throw new Error(`expected ${Code[code]} ${reason}, the call succeeded`);
    },
    (e: unknown) => ConnectError.from(e),
  );
  const [detail] = err.findDetails(ErrorDetailSchema);
  expect({ code: Code[err.code], reason: detail?.reason }).toEqual({ code: Code[code], reason });
  return detail!;
}

/** Awaits a call that must fail with INVALID_ARGUMENT / INVALID_FIELD naming `field`. */
async function invalid(call: Promise<unknown>, field: string): Promise<void> {
  const detail = await refused(call, Code.InvalidArgument, "INVALID_FIELD");
  expect(detail.field).toBe(field);
  expect(detail.message.startsWith(`${field}: `), detail.message).toBe(true);
}

describe.each(["connect-json", "grpc"] as Protocol[])("over %s", (protocol) => {
  const prefix = `${protocol.replace("-", "_")}_`;
  let n = 0;
  const wallet = () => `${prefix}w${++n}`;
  let writer: Client<typeof LedgerService>;
  let reader: Client<typeof LedgerService>;
  let admin: Client<typeof AdminService>;

  beforeAll(() => {
    writer = s.client(LedgerService, protocol, s.keys.writer);
    reader = s.client(LedgerService, protocol, s.keys.reader);
    admin = s.client(AdminService, protocol, s.keys.admin);
  });

  it("GetStatement answers the period's figures; CloseStatement stores them, replays, and is listed and audited", async () => {
    const w = wallet();
    const start = at(0);
    await writer.createWallet({ walletId: w });
    await admin.updateWallet({ walletId: w, creditLimits: [{ asset: "USD", creditLimit: 10_000n }] });
    s.clock.advance(HOUR_MS);
    await writer.deposit({ walletId: w, asset: "USD", amount: 500n, idempotencyKey: key() });
    for (const [amount, model] of [[300n, "m-large"], [200n, "m-small"], [400n, "m-large"]] as const) {
      s.clock.advance(HOUR_MS);
      await writer.spend({ walletId: w, asset: "USD", amount, idempotencyKey: key(), metadata: { model } });
    }
    const end = at(HOUR_MS);
    s.clock.advance(2 * HOUR_MS);

    const got = (await reader.getStatement({ walletId: w, asset: "USD", periodStart: start, periodEnd: end, groupBy: "model" })).statement!;
    expect(got).toMatchObject({
      statementId: "",
      walletId: w,
      asset: "USD",
      groupBy: "model",
      openingPosted: 0n,
      closingPosted: -400n,
      totalDebits: 900n,
      totalCredits: 500n,
      amountDue: 400n,
    });
    expect(got.closedAt).toBeUndefined();
    expect(timestampDate(got.periodStart!)).toEqual(timestampDate(start));
    expect(got.lines.map((l) => [l.kind, l.side, l.groupValue, l.count, l.amount])).toEqual([
      [TransferKind.SPEND, StatementSide.DEBIT, "m-large", 2n, 700n],
      [TransferKind.SPEND, StatementSide.DEBIT, "m-small", 1n, 200n],
      [TransferKind.DEPOSIT, StatementSide.CREDIT, "", 1n, 500n],
    ]);

    const request = { walletId: w, asset: "USD", periodEnd: end, groupBy: "model", idempotencyKey: key() };
    const closed = await admin.closeStatement(request);
    expect(closed.replayed).toBe(false);
    expect(closed.statement?.statementId).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-/);
    expect(timestampDate(closed.statement!.closedAt!)).toEqual(s.clock());
    // The period starts at the wallet's creation: the same instant GetStatement was asked from.
    expect({ ...closed.statement, statementId: "", closedAt: undefined }).toEqual(got);
    const replay = await admin.closeStatement(request);
    expect(replay.replayed).toBe(true);
    expect(replay.statement).toEqual(closed.statement);
    await refused(admin.closeStatement({ ...request, groupBy: "" }), Code.AlreadyExists, "IDEMPOTENCY_KEY_REUSED");

    const listed = await admin.listStatements({ walletId: w });
    expect(listed.statements).toEqual([closed.statement]);
    expect(listed.nextPageToken).toBe("");
    const entry = (await admin.listAuditLog({})).entries.find((e) => e.target === closed.statement!.statementId);
    expect(entry).toMatchObject({ action: "statement.closed", details: { wallet_id: w, asset: "USD", group_by: "model" } });
    expect(entry?.keyId).not.toBe("");
  });

  it("chains periods and pages through them newest first, for a wallet and for the tenant", async () => {
    const w = wallet();
    await writer.deposit({ walletId: w, asset: "USD", amount: 1_000n, idempotencyKey: key() });
    const ends = [];
    for (let i = 1; i <= 3; i++) {
      s.clock.advance(HOUR_MS);
      await writer.spend({ walletId: w, asset: "USD", amount: BigInt(10 * i), idempotencyKey: key() });
      ends.push(at(1));
    }
    s.clock.advance(HOUR_MS);
    const closed = [];
    for (const end of ends) {
      closed.push((await admin.closeStatement({ walletId: w, asset: "USD", periodEnd: end, idempotencyKey: key() })).statement!);
    }
    expect(closed.map((c) => [c.openingPosted, c.closingPosted])).toEqual([
      [0n, 990n],
      [990n, 970n],
      [970n, 940n],
    ]);
    expect(closed[1]!.periodStart).toEqual(closed[0]!.periodEnd);
    expect(closed[2]!.periodStart).toEqual(closed[1]!.periodEnd);
    const first = await admin.listStatements({ walletId: w, asset: "USD", pageSize: 2 });
    expect(first.statements.map((c) => c.statementId)).toEqual([closed[2]!.statementId, closed[1]!.statementId]);
    const second = await admin.listStatements({ walletId: w, asset: "USD", pageSize: 2, pageToken: first.nextPageToken });
    expect(second.statements.map((c) => c.statementId)).toEqual([closed[0]!.statementId]);
    expect(second.nextPageToken).toBe("");
    // The tenant's listing holds them too, newest period first.
    const tenant = await admin.listStatements({ pageSize: 500 });
    const ids = tenant.statements.map((c) => c.statementId);
    expect(ids.indexOf(closed[2]!.statementId)).toBeLessThan(ids.indexOf(closed[0]!.statementId));
    expect((await admin.listStatements({ walletId: w, asset: "EUR" })).statements).toEqual([]);
  });

  it("refuses bad input, naming the field", async () => {
    const w = wallet();
    await writer.deposit({ walletId: w, asset: "USD", amount: 10n, idempotencyKey: key() });
    const period = { walletId: w, asset: "USD", periodStart: at(-HOUR_MS), periodEnd: at(HOUR_MS) };
    await invalid(reader.getStatement({ ...period, walletId: "" }), "wallet_id");
    await invalid(reader.getStatement({ ...period, walletId: "a b" }), "wallet_id");
    await invalid(reader.getStatement({ ...period, asset: "usd" }), "asset");
    await invalid(reader.getStatement({ ...period, periodStart: undefined }), "period_start");
    await invalid(reader.getStatement({ ...period, periodEnd: undefined }), "period_end");
    await invalid(reader.getStatement({ ...period, periodEnd: period.periodStart }), "period_end");
    if (protocol === "grpc") {
      // Past the year 9999: only a binary encoding can carry it (the JSON client refuses to send it).
      await invalid(reader.getStatement({ ...period, periodStart: { seconds: 253_402_300_800n, nanos: 0 } }), "period_start");
    }
    for (const groupBy of ["a b", "x".repeat(65), "modèle"]) {
      await invalid(reader.getStatement({ ...period, groupBy }), "group_by");
    }
    await refused(reader.getStatement({ ...period, walletId: `${prefix}missing` }), Code.NotFound, "WALLET_NOT_FOUND");

    const close = { walletId: w, asset: "USD", periodEnd: at(-1), idempotencyKey: key() };
    await invalid(admin.closeStatement({ ...close, walletId: "" }), "wallet_id");
    await invalid(admin.closeStatement({ ...close, asset: "" }), "asset");
    await invalid(admin.closeStatement({ ...close, periodEnd: undefined }), "period_end");
    await invalid(admin.closeStatement({ ...close, idempotencyKey: "" }), "idempotency_key");
    await invalid(admin.closeStatement({ ...close, groupBy: "a/b" }), "group_by");
    // Checks that depend on the clock or the wallet's periods are the ledger's, named alike.
    await invalid(admin.closeStatement({ ...close, periodEnd: at(1000), idempotencyKey: key() }), "period_end");
    await invalid(admin.closeStatement({ ...close, periodEnd: at(-2 * HOUR_MS), idempotencyKey: key() }), "period_end");
    await refused(admin.closeStatement({ ...close, walletId: `${prefix}missing`, idempotencyKey: key() }), Code.NotFound, "WALLET_NOT_FOUND");

    await invalid(admin.listStatements({ walletId: "a b" }), "wallet_id");
    await invalid(admin.listStatements({ asset: "usd" }), "asset");
    await invalid(admin.listStatements({ pageSize: 501 }), "page_size");
    await invalid(admin.listStatements({ pageToken: "bm90LW91cnM" }), "page_token");
  });

  it("roles: readers get statements, only admins close and list them; a scoped key reads its own wallet's only", async () => {
    const w = wallet();
    const other = wallet();
    await writer.deposit({ walletId: w, asset: "USD", amount: 10n, idempotencyKey: key() });
    await writer.deposit({ walletId: other, asset: "USD", amount: 10n, idempotencyKey: key() });
    s.clock.advance(HOUR_MS);
    const period = { asset: "USD", periodStart: at(-2 * HOUR_MS), periodEnd: at(0) };
    const close = { walletId: w, asset: "USD", periodEnd: at(0), idempotencyKey: key() };
    for (const client of [s.client(AdminService, protocol, s.keys.reader), s.client(AdminService, protocol, s.keys.writer)]) {
      await refused(client.closeStatement(close), Code.PermissionDenied, "PERMISSION_DENIED");
      await refused(client.listStatements({ walletId: w }), Code.PermissionDenied, "PERMISSION_DENIED");
    }
    const scopedReader = s.client(LedgerService, protocol, await s.issue("reader", w));
    expect((await scopedReader.getStatement({ ...period, walletId: w })).statement?.closingPosted).toBe(10n);
    const denied = await refused(scopedReader.getStatement({ ...period, walletId: other }), Code.PermissionDenied, "PERMISSION_DENIED");
    expect(denied.field).toBe("wallet_id");
    const scopedAdmin = s.client(AdminService, protocol, await s.issue("writer", w));
    await refused(scopedAdmin.closeStatement(close), Code.PermissionDenied, "PERMISSION_DENIED");
    await refused(scopedAdmin.listStatements({ walletId: w }), Code.PermissionDenied, "PERMISSION_DENIED");
    // Nothing was closed by the refused calls.
    expect((await admin.listStatements({ walletId: w })).statements).toEqual([]);
  });
});

describe("holdfast.statement.closed", () => {
  it("reaches NATS with the statement, on the wallet's sequence, and webhook filters accept it", async () => {
    const w = "event_wallet";
    const ledger = s.client(LedgerService, "connect", s.keys.writer);
    const admin = s.client(AdminService, "connect", s.keys.admin);
    await ledger.deposit({ walletId: w, asset: "USD", amount: 70n, idempotencyKey: key() });
    s.clock.advance(HOUR_MS);
    const closed = (await admin.closeStatement({ walletId: w, asset: "USD", periodEnd: at(0), idempotencyKey: key() })).statement!;

    const deadline = Date.now() + 30_000;
    while ((await s.app.relay!.refreshStatus()).backlog > 0) {
      if (Date.now() > deadline) throw new Error("timed out waiting for the relay");
      await sleep(50);
    }
    const nc = await connect({ servers: nats.url });
    try {
      const consumer = await jetstream(nc).consumers.get(STREAM, { filter_subjects: `holdfast.events.${s.tenantId}.${w}.statement.closed` });
      const [message] = await (async () => {
        const out = [];
        for await (const m of await consumer.fetch({ max_messages: 1, expires: 5000 })) out.push(m);
        return out;
      })();
      expect(message?.headers?.get("ce-type")).toBe("holdfast.statement.closed");
      const event = fromBinary(EventSchema, message!.data);
      expect(event).toMatchObject({ type: "holdfast.statement.closed", walletId: w, asset: "USD", sequence: 2n });
      expect(event.balance).toBeUndefined();
      expect(event.payload.case).toBe("statementClosed");
      expect(event.payload.case === "statementClosed" && event.payload.value.statement).toEqual(closed);
    } finally {
      await nc.close();
    }
    expect(checkEventTypeFilters(["holdfast.statement.closed"])).toBeNull();
    expect(checkEventTypeFilters(["holdfast.statement.*"])).toBeNull();
  });
});

/** The grpc-js service definition of a protobuf-es service: paths and protobuf-es codecs. */
function definitionOf(service: DescService): grpc.ServiceDefinition {
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
  return definition;
}

type UnaryCall<I, O> = (request: I, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<O>) => grpc.ClientUnaryCall;

/** Calls a unary method through a grpc-js generic client, with `authorization: Bearer <apiKey>`. */
function unary<I extends DescMessage, O extends DescMessage>(
  client: grpc.Client,
  method: DescMethod & { input: I; output: O },
  request: MessageInitShape<I>,
  apiKey: string,
): Promise<MessageShape<O>> {
  const metadata = new grpc.Metadata();
  metadata.set("authorization", `Bearer ${apiKey}`);
  const call = (client as unknown as Record<string, UnaryCall<MessageShape<I>, MessageShape<O>>>)[method.name]!;
  return new Promise((resolve, reject) => {
    call.call(client, create(method.input, request), metadata, { deadline: Date.now() + CALL_DEADLINE_MS }, (err, response) => {
      if (err) reject(err);
      else resolve(response!);
    });
  });
}

/** The ErrorDetail of a grpc-js error, from its grpc-status-details-bin trailer (a google.rpc.Status). */
function errorDetailOf(err: grpc.ServiceError): ErrorDetail {
  const [bin] = err.metadata.get("grpc-status-details-bin");
  const reader = new BinaryReader(bin as Buffer);
  const details: Any[] = [];
  while (reader.pos < reader.len) {
    const [field, wireType] = reader.tag();
    if (field === 3) details.push(fromBinary(AnySchema, reader.bytes()));
    else reader.skip(wireType);
  }
  return anyUnpack(details[0]!, ErrorDetailSchema)!;
}

describe("@grpc/grpc-js client", () => {
  let ledger: grpc.Client;
  let admin: grpc.Client;

  beforeAll(() => {
    const address = `127.0.0.1:${s.app.address.port}`;
    ledger = new (grpc.makeGenericClientConstructor(definitionOf(LedgerService), LedgerService.typeName))(address, grpc.credentials.createInsecure());
    admin = new (grpc.makeGenericClientConstructor(definitionOf(AdminService), AdminService.typeName))(address, grpc.credentials.createInsecure());
  });
  afterAll(() => {
    ledger?.close();
    admin?.close();
  });

  it("calls GetStatement, CloseStatement and ListStatements with int64 amounts intact, and reads a refusal's ErrorDetail", async () => {
    const w = "grpcjs_wallet";
    const big = 2n ** 53n + 1n; // not representable as a double: proves int64 travels as int64
    const start = at(0);
    await unary(ledger, LedgerService.method.deposit, { walletId: w, asset: "USD", amount: big, idempotencyKey: key() }, s.keys.writer);
    s.clock.advance(HOUR_MS);
    const periodEnd = at(0);
    const got = await unary(ledger, LedgerService.method.getStatement, { walletId: w, asset: "USD", periodStart: start, periodEnd }, s.keys.reader);
    expect(got.statement).toMatchObject({ openingPosted: 0n, closingPosted: big, totalCredits: big, amountDue: 0n });
    expect(got.statement?.lines.map((l) => [l.kind, l.side, l.amount])).toEqual([[TransferKind.DEPOSIT, StatementSide.CREDIT, big]]);

    const closed = await unary(admin, AdminService.method.closeStatement, { walletId: w, asset: "USD", periodEnd, idempotencyKey: key() }, s.keys.admin);
    expect(closed).toMatchObject({ replayed: false, statement: { walletId: w, closingPosted: big } });
    const listed = await unary(admin, AdminService.method.listStatements, { walletId: w }, s.keys.admin);
    expect(listed.statements.map((c) => c.statementId)).toEqual([closed.statement!.statementId]);

    const err = await unary(admin, AdminService.method.closeStatement, { walletId: w, asset: "USD", periodEnd, idempotencyKey: key() }, s.keys.admin).then(
      () => {
        throw new Error("expected the second close of the same period to be refused");
      },
      (e: grpc.ServiceError) => e,
    );
    expect(err.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(errorDetailOf(err)).toMatchObject({ reason: "INVALID_FIELD", field: "period_end" });
    const denied = await unary(ledger, LedgerService.method.getStatement, { walletId: w, asset: "USD", periodStart: start, periodEnd }, await s.issue("reader", "grpcjs_other")).then(
      () => {
        throw new Error("expected PERMISSION_DENIED");
      },
      (e: grpc.ServiceError) => e,
    );
    expect(denied.code).toBe(grpc.status.PERMISSION_DENIED);
    expect(errorDetailOf(denied)).toMatchObject({ reason: "PERMISSION_DENIED", field: "wallet_id" });
  });
});

describe("the whole database", () => {
  it("keeps every ledger invariant", async () => {
    expect(await checkInvariants(s.app.pool)).toEqual([]);
  });
});
