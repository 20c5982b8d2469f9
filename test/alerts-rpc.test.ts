// Goal: AdminService.PutBalanceAlert, ListBalanceAlerts and DeleteBalanceAlert behave on the
// wire as proto/holdfast/v1/alerts.proto and docs/alerts.md state them, over Connect JSON and
// over gRPC with @grpc/grpc-js (the client internal services use): create and replace, pages,
// delete, bad input refused with INVALID_FIELD naming the field, BALANCE_ALERT_NOT_FOUND, the
// 100-alert bound (BALANCE_ALERT_LIMIT), admin only and closed to wallet-scoped keys, an audit
// entry per put and delete, and an alert put over the wire firing on the next command.
// Method: one real ledger server on port 0 over a fresh database with a manual clock; the same
// suite runs once per protocol (describe.each), each run with its own alert and wallet id
// prefix. The grpc-js client is a generic client built from the protobuf-es descriptors (as in
// test/grpc-js.test.ts), and its ErrorDetail is read from the grpc-status-details-bin trailer.
import { randomUUID } from "node:crypto";
import * as grpc from "@grpc/grpc-js";
import { create, fromBinary, toBinary, type DescMessage, type DescMethod, type DescService, type MessageInitShape, type MessageShape } from "@bufbuild/protobuf";
import { anyUnpack, AnySchema, type Any } from "@bufbuild/protobuf/wkt";
import { BinaryReader } from "@bufbuild/protobuf/wire";
import { Code, ConnectError } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AdminService } from "@holdfast/gen/holdfast/v1/admin_pb";
import type {
  DeleteBalanceAlertRequestSchema,
  DeleteBalanceAlertResponse,
  ListBalanceAlertsRequestSchema,
  ListBalanceAlertsResponse,
  PutBalanceAlertRequestSchema,
  PutBalanceAlertResponse,
} from "@holdfast/gen/holdfast/v1/alerts_pb";
import { ErrorDetailSchema, type ErrorDetail } from "@holdfast/gen/holdfast/v1/errors_pb";
import { LedgerService } from "@holdfast/gen/holdfast/v1/ledger_pb";
import { checkInvariants } from "@holdfast/ledger/invariants";
import { startTestServer } from "./support/server.js";

/** Unary calls that take longer than this are a failure, not a wait. */
const CALL_DEADLINE_MS = 10_000;
/** The bound docs/alerts.md documents. */
const ALERTS_PER_TENANT_MAX = 100;

let s: Awaited<ReturnType<typeof startTestServer>>;
let grpcAdmin: grpc.Client;

beforeAll(async () => {
  s = await startTestServer();
  grpcAdmin = clientFor(AdminService);
});
afterAll(async () => {
  grpcAdmin?.close();
  await s?.close();
});

// --- grpc-js: a generic client whose codecs are protobuf-es's -------------------------------

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
      requestStream: false,
      responseStream: false,
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

type UnaryCall<I, O> = (request: I, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<O>) => grpc.ClientUnaryCall;

function grpcUnary<I extends DescMessage, O extends DescMessage>(
  method: DescMethod & { input: I; output: O },
  request: MessageInitShape<I>,
  apiKey: string,
): Promise<MessageShape<O>> {
  const call = (grpcAdmin as unknown as Record<string, UnaryCall<MessageShape<I>, MessageShape<O>>>)[method.name]!;
  const metadata = new grpc.Metadata();
  metadata.set("authorization", `Bearer ${apiKey}`);
  return new Promise((resolve, reject) => {
    call.call(grpcAdmin, create(method.input, request), metadata, { deadline: Date.now() + CALL_DEADLINE_MS }, (err, response) => {
      if (err) reject(err);
      else resolve(response!);
    });
  });
}

/** google.rpc.Status: code = 1, message = 2, details = 3 (repeated Any). */
function decodeStatus(bytes: Uint8Array): { code: number; details: Any[] } {
  const reader = new BinaryReader(bytes);
  const status = { code: 0, details: [] as Any[] };
  while (reader.pos < reader.len) {
    const [field, wireType] = reader.tag();
    if (field === 1) status.code = reader.int32();
    else if (field === 3) status.details.push(fromBinary(AnySchema, reader.bytes()));
    else reader.skip(wireType);
  }
  return status;
}

// --- One interface over both protocols -------------------------------------------------------

type PutRequest = MessageInitShape<typeof PutBalanceAlertRequestSchema>;
type ListRequest = MessageInitShape<typeof ListBalanceAlertsRequestSchema>;
type DeleteRequest = MessageInitShape<typeof DeleteBalanceAlertRequestSchema>;

interface AlertCalls {
  put(req: PutRequest, apiKey?: string): Promise<PutBalanceAlertResponse>;
  list(req: ListRequest, apiKey?: string): Promise<ListBalanceAlertsResponse>;
  delete(req: DeleteRequest, apiKey?: string): Promise<DeleteBalanceAlertResponse>;
  /** The code (gRPC numbering, which Connect shares) and ErrorDetail of a failed call. */
  failure(err: unknown): { code: Code; detail: ErrorDetail };
}

const m = AdminService.method;

const protocols: Record<"connect-json" | "grpc-js", () => AlertCalls> = {
  "connect-json": () => ({
    put: (req, apiKey = s.keys.admin) => s.client(AdminService, "connect-json", apiKey).putBalanceAlert(req),
    list: (req, apiKey = s.keys.admin) => s.client(AdminService, "connect-json", apiKey).listBalanceAlerts(req),
    delete: (req, apiKey = s.keys.admin) => s.client(AdminService, "connect-json", apiKey).deleteBalanceAlert(req),
    failure(err) {
      const e = ConnectError.from(err);
      const [detail] = e.findDetails(ErrorDetailSchema);
      expect(detail, "ErrorDetail").toBeDefined();
      return { code: e.code, detail: detail! };
    },
  }),
  "grpc-js": () => ({
    put: (req, apiKey = s.keys.admin) => grpcUnary(m.putBalanceAlert, req, apiKey),
    list: (req, apiKey = s.keys.admin) => grpcUnary(m.listBalanceAlerts, req, apiKey),
    delete: (req, apiKey = s.keys.admin) => grpcUnary(m.deleteBalanceAlert, req, apiKey),
    failure(err) {
      const e = err as grpc.ServiceError;
      const [bin] = e.metadata.get("grpc-status-details-bin");
      expect(bin, "grpc-status-details-bin trailer").toBeInstanceOf(Buffer);
      const status = decodeStatus(bin as Buffer);
      expect(status.code).toBe(e.code);
      const detail = anyUnpack(status.details[0]!, ErrorDetailSchema);
      expect(detail, "ErrorDetail").toBeDefined();
      return { code: e.code as number as Code, detail: detail! };
    },
  }),
};

describe.each(Object.keys(protocols) as (keyof typeof protocols)[])("balance alert RPCs over %s", (protocol) => {
  let calls: AlertCalls;
  const p = protocol.replace("-", "_");
  beforeAll(() => {
    calls = protocols[protocol]();
  });

  /** Awaits a call that must fail with `code` and `reason`; returns the ErrorDetail. */
  async function refused(call: Promise<unknown>, code: Code, reason: string): Promise<ErrorDetail> {
    const err = await call.then(
      () => {
        throw new Error(`expected ${Code[code]} ${reason}, the call succeeded`);
      },
      (e: unknown) => e,
    );
    const { code: got, detail } = calls.failure(err);
    expect({ code: Code[got], reason: detail.reason }).toEqual({ code: Code[code], reason });
    return detail;
  }

  async function invalid(call: Promise<unknown>, field: string): Promise<void> {
    const detail = await refused(call, Code.InvalidArgument, "INVALID_FIELD");
    expect(detail.field).toBe(field);
    expect(detail.message.startsWith(`${field}: `), detail.message).toBe(true);
  }

  it("creates, replaces, lists and deletes alerts", async () => {
    const created = await calls.put({ alertId: `${p}_low`, walletId: `${p}_w`, asset: "USD", below: 500n, hysteresis: 100n, metadata: { notify: "ops" } });
    expect(created.created).toBe(true);
    expect(created.alert).toMatchObject({ alertId: `${p}_low`, walletId: `${p}_w`, asset: "USD", below: 500n, hysteresis: 100n, metadata: { notify: "ops" } });
    expect(created.alert!.createdAt).toBeDefined();

    // hysteresis defaults to 0; an empty wallet_id watches every wallet.
    const replaced = await calls.put({ alertId: `${p}_low`, asset: "USD", below: 2n ** 62n });
    expect(replaced.created).toBe(false);
    expect(replaced.alert).toMatchObject({ alertId: `${p}_low`, walletId: "", below: 2n ** 62n, hysteresis: 0n, metadata: {} });
    expect(replaced.alert!.createdAt).toEqual(created.alert!.createdAt);

    for (const n of [1, 2, 3, 4]) await calls.put({ alertId: `${p}_page_${n}`, walletId: `${p}_w${n}`, asset: "EUR", below: BigInt(n) });
    const seen: string[] = [];
    let pageToken = "";
    do {
      const page = await calls.list({ pageSize: 2, pageToken });
      expect(page.alerts.length).toBeLessThanOrEqual(2);
      seen.push(...page.alerts.map((a) => a.alertId));
      pageToken = page.nextPageToken;
    } while (pageToken !== "");
    const mine = seen.filter((id) => id.startsWith(`${p}_`));
    expect(mine).toEqual([`${p}_low`, `${p}_page_1`, `${p}_page_2`, `${p}_page_3`, `${p}_page_4`]);
    expect(seen).toEqual([...seen].sort());

    const deleted = await calls.delete({ alertId: `${p}_page_2` });
    expect(deleted.alert).toMatchObject({ alertId: `${p}_page_2`, walletId: `${p}_w2`, asset: "EUR", below: 2n });
    const after = await calls.list({ pageSize: 500 });
    expect(after.alerts.map((a) => a.alertId)).not.toContain(`${p}_page_2`);
    await refused(calls.delete({ alertId: `${p}_page_2` }), Code.NotFound, "BALANCE_ALERT_NOT_FOUND");
    for (const n of [1, 3, 4]) await calls.delete({ alertId: `${p}_page_${n}` });
    await calls.delete({ alertId: `${p}_low` });
  });

  it("records every put and delete in the audit log", async () => {
    await calls.put({ alertId: `${p}_audit`, asset: "USD", below: 10n });
    await calls.put({ alertId: `${p}_audit`, asset: "USD", below: 20n, hysteresis: 5n });
    await calls.delete({ alertId: `${p}_audit` });
    const log = await s.client(AdminService).listAuditLog({ pageSize: 500 });
    const entries = log.entries.filter((e) => e.target === `${p}_audit`).reverse();
    expect(entries.map((e) => e.action)).toEqual(["balance_alert.created", "balance_alert.updated", "balance_alert.deleted"]);
    expect(entries[1]!.details).toMatchObject({ wallet_id: "", asset: "USD", below: "20", hysteresis: "5" });
    expect(entries.every((e) => e.keyId !== "")).toBe(true);
  });

  it("refuses bad input naming the field", async () => {
    const good = { alertId: `${p}_bad`, walletId: "", asset: "USD", below: 10n, hysteresis: 0n };
    await invalid(calls.put({ ...good, alertId: "" }), "alert_id");
    await invalid(calls.put({ ...good, alertId: "not an id!" }), "alert_id");
    await invalid(calls.put({ ...good, alertId: "a".repeat(129) }), "alert_id");
    await invalid(calls.put({ ...good, walletId: "bad wallet" }), "wallet_id");
    await invalid(calls.put({ ...good, asset: "" }), "asset");
    await invalid(calls.put({ ...good, asset: "usd" }), "asset");
    await invalid(calls.put({ ...good, below: 0n }), "below");
    await invalid(calls.put({ ...good, below: -5n }), "below");
    await invalid(calls.put({ ...good, hysteresis: -1n }), "hysteresis");
    await invalid(calls.put({ ...good, below: 2n ** 62n, hysteresis: 2n ** 62n }), "hysteresis");
    await invalid(calls.put({ ...good, metadata: { "bad key": "x" } }), "metadata.bad key");
    await invalid(calls.list({ pageSize: 501 }), "page_size");
    await invalid(calls.list({ pageToken: "not-a-token" }), "page_token");
    await invalid(calls.delete({ alertId: "" }), "alert_id");
    await invalid(calls.delete({ alertId: "no such id!" }), "alert_id");
    // Nothing was stored by the refusals.
    const page = await calls.list({ pageSize: 500 });
    expect(page.alerts.map((a) => a.alertId)).not.toContain(`${p}_bad`);
  });

  it("is for admin keys only, and never for wallet-scoped keys", async () => {
    const scoped = await s.issue("writer", `${p}_scoped_w`);
    for (const apiKey of [s.keys.writer, s.keys.reader, scoped]) {
      await refused(calls.put({ alertId: `${p}_role`, asset: "USD", below: 1n }, apiKey), Code.PermissionDenied, "PERMISSION_DENIED");
      await refused(calls.list({}, apiKey), Code.PermissionDenied, "PERMISSION_DENIED");
      await refused(calls.delete({ alertId: `${p}_role` }, apiKey), Code.PermissionDenied, "PERMISSION_DENIED");
    }
  });

  it("an alert put over the wire fires on the next command", async () => {
    const walletId = `${p}_fire`;
    await calls.put({ alertId: `${p}_fire`, walletId, asset: "USD", below: 100n, metadata: { plan: "pro" } });
    const ledger = s.client(LedgerService, "connect-json", s.keys.writer);
    await ledger.deposit({ walletId, asset: "USD", amount: 150n, idempotencyKey: `k-${randomUUID()}` });
    await ledger.spend({ walletId, asset: "USD", amount: 100n, idempotencyKey: `k-${randomUUID()}` });
    const { rows } = await s.app.pool.query<{ type: string; data: { episode: string; metadata: Record<string, string> } }>(
      "select type, data from events where tenant_id = $1 and wallet_id = $2 and type like 'holdfast.balance.%' order by seq",
      [s.tenantId, walletId],
    );
    expect(rows.map((r) => [r.type, r.data.episode, r.data.metadata])).toEqual([["holdfast.balance.low", "1", { plan: "pro" }]]);
    await calls.delete({ alertId: `${p}_fire` });
  });
});

describe("the per-tenant bound", () => {
  it(`refuses alert ${ALERTS_PER_TENANT_MAX + 1} with BALANCE_ALERT_LIMIT; replacing one at the bound still works`, async () => {
    const admin = s.client(AdminService, "connect-json");
    const existing = (await admin.listBalanceAlerts({ pageSize: 500 })).alerts.length;
    for (let i = existing; i < ALERTS_PER_TENANT_MAX; i++) {
      await admin.putBalanceAlert({ alertId: `bound_${i}`, asset: "USD", below: 1n });
    }
    const err = await admin.putBalanceAlert({ alertId: "bound_over", asset: "USD", below: 1n }).then(
      () => null,
      (e: unknown) => ConnectError.from(e),
    );
    expect(err?.code).toBe(Code.ResourceExhausted);
    expect(err?.findDetails(ErrorDetailSchema)[0]?.reason).toBe("BALANCE_ALERT_LIMIT");
    const replaced = await admin.putBalanceAlert({ alertId: `bound_${ALERTS_PER_TENANT_MAX - 1}`, asset: "USD", below: 2n });
    expect(replaced.created).toBe(false);
    await admin.deleteBalanceAlert({ alertId: `bound_${ALERTS_PER_TENANT_MAX - 1}` });
    expect((await admin.putBalanceAlert({ alertId: "bound_over", asset: "USD", below: 1n })).created).toBe(true);
    expect(await checkInvariants(s.app.pool)).toEqual([]);
  });
});
