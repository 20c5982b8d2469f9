// Goal: malformed input never reaches the ledger and never crashes the server: every bad
// field is answered with INVALID_ARGUMENT, reason INVALID_FIELD and `field` naming it (the
// limits of proto/holdfast/v1/ledger.proto and admin.proto); bodies the protocol layer cannot
// even decode get HTTP 400 / invalid_argument; a sum that would overflow int64 is refused
// without changing the balance; and no error message carries SQL text (docs/architecture.md, "The public contract").
// Method: a real ledger server on port 0 over a fresh database. Typed requests go through a
// Connect client (binary over HTTP/2); bodies no typed client can send (not JSON, amounts that
// are not int64) go as raw Connect JSON with fetch, followed by a valid call to show the
// server still answers.
import { randomUUID } from "node:crypto";
import { fromBinary } from "@bufbuild/protobuf";
import { base64Decode } from "@bufbuild/protobuf/wire";
import { Code, ConnectError, type Client } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AdminService, Role } from "@holdfast/gen/holdfast/v1/admin_pb";
import { ErrorDetailSchema, type ErrorDetail } from "@holdfast/gen/holdfast/v1/errors_pb";
import { LedgerService } from "@holdfast/gen/holdfast/v1/ledger_pb";
import { HoldStatus, WalletStatus } from "@holdfast/gen/holdfast/v1/types_pb";
import { checkInvariants } from "@holdfast/ledger/invariants";
import { startTestServer } from "./support/server.js";

let s: Awaited<ReturnType<typeof startTestServer>>;
let ledger: Client<typeof LedgerService>;
let admin: Client<typeof AdminService>;

beforeAll(async () => {
  s = await startTestServer();
  ledger = s.client(LedgerService, "connect", s.keys.writer);
  admin = s.client(AdminService, "connect", s.keys.admin);
  await ledger.deposit({ walletId: "v_w", asset: "USD", amount: 1000n, idempotencyKey: key() });
  holdId = (await ledger.reserve({ walletId: "v_w", asset: "USD", amount: 10n, ttlSeconds: 3600, idempotencyKey: key() })).hold!.holdId;
});
afterAll(async () => {
  await s?.close();
});

let holdId: string;
const key = () => `k-${randomUUID()}`;
const int64_max = 2n ** 63n - 1n;
/** Words of SQL and of PostgreSQL's error messages that must never reach a caller. */
const sql_text = /select|insert|update|delete|violat|relation|syntax|constraint|column|postgres|plpgsql/i;

/** Awaits a call that must fail; checks its message carries no SQL; returns code and detail. */
async function failure(call: Promise<unknown>): Promise<{ code: Code; message: string; detail: ErrorDetail | undefined }> {
  const err = await call.then(
    () => {
      throw new Error("expected the call to fail, it succeeded");
    },
    (e: unknown) => ConnectError.from(e),
  );
  const [detail] = err.findDetails(ErrorDetailSchema);
  expect(err.rawMessage).not.toMatch(sql_text);
  expect(detail?.message ?? "").not.toMatch(sql_text);
  return { code: err.code, message: err.rawMessage, detail };
}

/** Awaits a call that must fail with INVALID_ARGUMENT / INVALID_FIELD naming `field`. */
async function invalid(call: Promise<unknown>, field: string): Promise<void> {
  const f = await failure(call);
  expect({ code: Code[f.code], reason: f.detail?.reason, field: f.detail?.field }).toEqual({
    code: Code[Code.InvalidArgument],
    reason: "INVALID_FIELD",
    field,
  });
  expect(f.message.startsWith(`${field}: `), f.message).toBe(true);
}

const deposit = (over: Partial<{ walletId: string; asset: string; amount: bigint; idempotencyKey: string; metadata: Record<string, string> }>) =>
  ledger.deposit({ walletId: "v_w", asset: "USD", amount: 1n, idempotencyKey: key(), ...over });

describe("wallet commands", () => {
  it("refuses an empty or malformed wallet_id", async () => {
    for (const walletId of ["", "a b", "é", "x".repeat(129), "w/1", "w\n"]) {
      await invalid(deposit({ walletId }), "wallet_id");
      await invalid(ledger.spend({ walletId, asset: "USD", amount: 1n, idempotencyKey: key() }), "wallet_id");
      await invalid(ledger.getWallet({ walletId }), "wallet_id");
    }
    // The longest allowed id is fine.
    expect((await deposit({ walletId: "x".repeat(128) })).balance?.posted).toBe(1n);
    await invalid(ledger.transfer({ fromWalletId: "a b", toWalletId: "v_w", asset: "USD", amount: 1n, idempotencyKey: key() }), "from_wallet_id");
    await invalid(ledger.transfer({ fromWalletId: "v_w", toWalletId: "", asset: "USD", amount: 1n, idempotencyKey: key() }), "to_wallet_id");
    await invalid(ledger.capture({ holdId: "h h", idempotencyKey: key() }), "hold_id");
    await invalid(ledger.reserve({ walletId: "v_w", asset: "USD", amount: 1n, holdId: "é", idempotencyKey: key() }), "hold_id");
  });

  it("refuses a malformed asset", async () => {
    for (const asset of ["", "usd", "1USD", "A".repeat(33), "US D", "_USD"]) {
      await invalid(deposit({ asset }), "asset");
    }
    expect((await deposit({ walletId: "v_assets", asset: `A${"Z".repeat(31)}` })).balance?.asset).toBe(`A${"Z".repeat(31)}`);
    await invalid(ledger.listTransfers({ walletId: "v_w", asset: "usd" }), "asset");
  });

  it("refuses a zero or negative amount", async () => {
    for (const amount of [0n, -1n, -int64_max - 1n]) {
      await invalid(deposit({ amount }), "amount");
      await invalid(ledger.spend({ walletId: "v_w", asset: "USD", amount, idempotencyKey: key() }), "amount");
      await invalid(ledger.reserve({ walletId: "v_w", asset: "USD", amount, idempotencyKey: key() }), "amount");
      await invalid(ledger.transfer({ fromWalletId: "v_w", toWalletId: "v_w2", asset: "USD", amount, idempotencyKey: key() }), "amount");
      await invalid(ledger.capture({ holdId, amount, idempotencyKey: key() }), "amount");
    }
    const spend = (await ledger.spend({ walletId: "v_w", asset: "USD", amount: 1n, idempotencyKey: key() })).transfer!;
    await invalid(ledger.refund({ transferId: spend.transferId, amount: 0n, idempotencyKey: key() }), "amount");
  });

  it("refuses a missing, overlong or non-printable idempotency_key", async () => {
    await invalid(deposit({ idempotencyKey: "" }), "idempotency_key");
    await invalid(deposit({ idempotencyKey: "k".repeat(256) }), "idempotency_key");
    await invalid(deposit({ idempotencyKey: "tab\tkey" }), "idempotency_key");
    await invalid(deposit({ idempotencyKey: "ключ" }), "idempotency_key");
    await invalid(ledger.release({ holdId, idempotencyKey: "" }), "idempotency_key");
    expect((await deposit({ idempotencyKey: `${"k".repeat(218)}${randomUUID()}` })).replayed).toBe(false);
  });

  it("refuses oversized or malformed metadata, naming the entry", async () => {
    const entries = (count: number, value = "v") => Object.fromEntries(Array.from({ length: count }, (_, i) => [`k${i}`, value]));
    await invalid(deposit({ metadata: entries(33) }), "metadata");
    expect((await deposit({ metadata: entries(32) })).transfer?.metadata).toEqual(entries(32));
    await invalid(deposit({ metadata: { model: "m".repeat(513) } }), "metadata.model");
    expect((await deposit({ metadata: { model: "m".repeat(512) } })).transfer?.metadata["model"]).toHaveLength(512);
    await invalid(deposit({ metadata: { "bad key": "v" } }), "metadata.bad key");
    await invalid(deposit({ metadata: { "": "v" } }), "metadata.");
    await invalid(deposit({ metadata: { ["k".repeat(65)]: "v" } }), `metadata.${"k".repeat(64)}`);
    // 32 entries of 300 characters: each within bounds, more than 8 KiB in all.
    await invalid(deposit({ metadata: entries(32, "v".repeat(300)) }), "metadata");
    await invalid(ledger.capture({ holdId, idempotencyKey: key(), metadata: { "a/b": "v" } }), "metadata.a/b");
    await invalid(ledger.createWallet({ walletId: "v_meta", metadata: { x: "x".repeat(513) } }), "metadata.x");
  });

  it("refuses metadata values with a NUL character, which PostgreSQL text cannot hold", async () => {
    const answers = [];
    for (const call of [
      () => deposit({ metadata: { note: "a\u0000b" } }),
      () => ledger.createWallet({ walletId: "v_nul", metadata: { note: "\u0000" } }),
      () => admin.updateWallet({ walletId: "v_w", metadata: { note: "a\u0000" } }),
    ]) {
      const f = await failure(call());
      answers.push(`${Code[f.code]} ${f.detail?.reason} ${f.detail?.field}`);
    }
    expect(answers).toEqual(Array(3).fill("InvalidArgument INVALID_FIELD metadata.note"));
    const missing = await failure(ledger.getWallet({ walletId: "v_nul" }));
    expect(missing.detail?.reason).toBe("WALLET_NOT_FOUND");
  });

  it("refuses ttl_seconds beyond 7 days on Reserve and 0 on ExtendHold", async () => {
    await invalid(ledger.reserve({ walletId: "v_w", asset: "USD", amount: 1n, ttlSeconds: 604_801, idempotencyKey: key() }), "ttl_seconds");
    await invalid(ledger.extendHold({ holdId, ttlSeconds: 0, idempotencyKey: key() }), "ttl_seconds");
    await invalid(ledger.extendHold({ holdId, ttlSeconds: 604_801, idempotencyKey: key() }), "ttl_seconds");
    const week = await ledger.reserve({ walletId: "v_w", asset: "USD", amount: 1n, ttlSeconds: 604_800, idempotencyKey: key() });
    expect(week.hold?.status).toBe(HoldStatus.PENDING);
    await ledger.release({ holdId: week.hold!.holdId, idempotencyKey: key() });
  });

  it("refuses a refund whose transfer_id is not a UUID", async () => {
    for (const transferId of ["", "not-a-uuid", "123", randomUUID().toUpperCase(), `${randomUUID()}x`, "'; drop table transfers; --"]) {
      await invalid(ledger.refund({ transferId, idempotencyKey: key() }), "transfer_id");
    }
  });

  it("refuses a transfer from a wallet to itself, naming to_wallet_id", async () => {
    await invalid(ledger.transfer({ fromWalletId: "v_w", toWalletId: "v_w", asset: "USD", amount: 1n, idempotencyKey: key() }), "to_wallet_id");
  });
});

describe("queries", () => {
  it("refuses page_size 501", async () => {
    await invalid(ledger.listTransfers({ walletId: "v_w", pageSize: 501 }), "page_size");
    await invalid(ledger.listHolds({ walletId: "v_w", pageSize: 501 }), "page_size");
    await invalid(admin.listApiKeys({ pageSize: 501 }), "page_size");
    expect((await ledger.listTransfers({ walletId: "v_w", pageSize: 500 })).transfers.length).toBeGreaterThan(0);
  });

  it("refuses a page_token this server did not issue", async () => {
    const token = (parts: unknown) => Buffer.from(JSON.stringify(parts)).toString("base64url");
    for (const pageToken of ["garbage!", "bm90IGpzb24", token(["not-a-uuid"]), token([randomUUID(), "extra"]), token({ a: 1 }), token([1])]) {
      await invalid(ledger.listTransfers({ walletId: "v_w", pageToken }), "page_token");
    }
    for (const pageToken of ["garbage!", token(["2026-01-01 00:00:00+00"]), token(["yesterday", "h"]), token(["2026-01-01 00:00:00+00", ""])]) {
      await invalid(ledger.listHolds({ walletId: "v_w", pageToken }), "page_token");
    }
    for (const pageToken of ["garbage!", Buffer.from("2026-02-30T00:00:00.000000Z|0000000000000000").toString("base64url")]) {
      await invalid(admin.listApiKeys({ pageToken }), "page_token");
    }
  });

  it("refuses a ListHolds page_token whose timestamp is shaped right but impossible", async () => {
    // Shaped like the server's cursor (it passes the token's pattern check) but no real instant.
    const token = Buffer.from(JSON.stringify(["2026-13-45 25:61:61+00", "h"])).toString("base64url");
    await invalid(ledger.listHolds({ walletId: "v_w", pageToken: token }), "page_token");
  });

  it("refuses an unknown hold status filter", async () => {
    await invalid(ledger.listHolds({ walletId: "v_w", status: 99 as HoldStatus }), "status");
  });
});

describe("AdminService", () => {
  it("refuses a negative credit limit and a malformed credit limit asset, naming the list entry", async () => {
    await invalid(admin.updateWallet({ walletId: "v_w", creditLimits: [{ asset: "USD", creditLimit: -1n }] }), "credit_limits[0].credit_limit");
    await invalid(
      admin.updateWallet({ walletId: "v_w", creditLimits: [{ asset: "USD", creditLimit: 1n }, { asset: "usd", creditLimit: 1n }] }),
      "credit_limits[1].asset",
    );
    await invalid(admin.updateWallet({ walletId: "v_w", status: WalletStatus.UNSPECIFIED }), "status");
    await invalid(admin.updateWallet({ walletId: "a b" }), "wallet_id");
    expect((await ledger.getWallet({ walletId: "v_w" })).wallet?.balances[0]?.creditLimit).toBe(0n);
  });

  it("refuses a credit limit whose available balance would overflow int64", async () => {
    await ledger.deposit({ walletId: "v_credit", asset: "USD", amount: 10n, idempotencyKey: key() });
    await invalid(admin.updateWallet({ walletId: "v_credit", creditLimits: [{ asset: "USD", creditLimit: int64_max }] }), "credit_limits[0].credit_limit");
    expect((await ledger.getWallet({ walletId: "v_credit" })).wallet?.balances[0]).toMatchObject({ posted: 10n, creditLimit: 0n });
  });

  it("refuses CreateApiKey without a role, with a bad name, and an admin key scoped to a wallet", async () => {
    await invalid(admin.createApiKey({ name: "k", role: Role.UNSPECIFIED }), "role");
    await invalid(admin.createApiKey({ name: "k", role: 42 as Role }), "role");
    await invalid(admin.createApiKey({ name: "k", role: Role.ADMIN, walletId: "v_w" }), "wallet_id");
    await invalid(admin.createApiKey({ name: "", role: Role.READER }), "name");
    await invalid(admin.createApiKey({ name: "n".repeat(129), role: Role.READER }), "name");
    await invalid(admin.createApiKey({ name: "k", role: Role.READER, walletId: "a b" }), "wallet_id");
    await invalid(admin.revokeApiKey({ keyId: "" }), "key_id");
    const listed = (await admin.listApiKeys({ pageSize: 500 })).apiKeys;
    expect(listed).toHaveLength(3); // only the test server's own admin, writer and reader keys
  });

  it("refuses an API key name with a NUL character, which PostgreSQL text cannot hold", async () => {
    await invalid(admin.createApiKey({ name: "nul\u0000name", role: Role.READER }), "name");
  });
});

describe("int64 overflow", () => {
  it("refuses a deposit that would overflow the balance, and leaves the balance unchanged", async () => {
    const w = "v_big";
    await ledger.deposit({ walletId: w, asset: "USD", amount: 2n ** 62n, idempotencyKey: key() });
    await invalid(ledger.deposit({ walletId: w, asset: "USD", amount: 2n ** 62n, idempotencyKey: key() }), "amount");
    expect((await ledger.getWallet({ walletId: w })).wallet?.balances[0]).toMatchObject({ posted: 2n ** 62n, available: 2n ** 62n });
    // Up to int64's maximum exactly is fine; one more is not.
    const full = await ledger.deposit({ walletId: w, asset: "USD", amount: 2n ** 62n - 1n, idempotencyKey: key() });
    expect(full.balance).toMatchObject({ posted: int64_max, available: int64_max });
    const k = key();
    await invalid(ledger.deposit({ walletId: w, asset: "USD", amount: 1n, idempotencyKey: k }), "amount");
    await ledger.deposit({ walletId: "v_big2", asset: "USD", amount: int64_max, idempotencyKey: key() });
    await invalid(ledger.transfer({ fromWalletId: "v_big2", toWalletId: w, asset: "USD", amount: 1n, idempotencyKey: key() }), "amount");
    expect((await ledger.getWallet({ walletId: w })).wallet?.balances[0]).toMatchObject({ posted: int64_max, held: 0n, available: int64_max });
    expect((await ledger.getWallet({ walletId: "v_big2" })).wallet?.balances[0]).toMatchObject({ posted: int64_max });
    // A retry with the same key is refused the same way: nothing was applied or recorded as applied.
    await invalid(ledger.deposit({ walletId: w, asset: "USD", amount: 1n, idempotencyKey: k }), "amount");
    const transfers = (await ledger.listTransfers({ walletId: w })).transfers;
    expect(transfers.map((t) => t.amount)).toEqual([2n ** 62n - 1n, 2n ** 62n]);
  });
});

describe("raw Connect JSON bodies", () => {
  const url = () => `${s.app.url}/holdfast.v1.LedgerService/Deposit`;
  const post = (body: string) =>
    fetch(url(), {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${s.keys.writer}` },
      body,
    });

  /** Asserts HTTP 400 with a Connect error body of code invalid_argument; returns the body. */
  async function badRequest(body: string): Promise<{ code: string; message?: string; details?: { type: string; value: string }[] }> {
    const res = await post(body);
    expect(res.status).toBe(400);
    const json = (await res.json()) as { code: string; message?: string; details?: { type: string; value: string }[] };
    expect(json.code).toBe("invalid_argument");
    expect(json.message ?? "").not.toMatch(sql_text);
    return json;
  }

  async function stillServes(): Promise<void> {
    const res = await post(JSON.stringify({ walletId: "v_json", asset: "USD", amount: "7", idempotencyKey: key() }));
    expect(res.status).toBe(200);
    const json = (await res.json()) as { balance: { posted: string }; replayed?: boolean };
    expect(BigInt(json.balance.posted) % 7n).toBe(0n);
  }

  it("answers a body that is not JSON with 400 invalid_argument, and keeps serving", async () => {
    await badRequest("this is not json");
    await badRequest('{"walletId": "v_json", ');
    await stillServes();
  });

  it("answers an amount that is not a number with 400 invalid_argument, and keeps serving", async () => {
    await badRequest(JSON.stringify({ walletId: "v_json", asset: "USD", amount: "abc", idempotencyKey: key() }));
    await badRequest(JSON.stringify({ walletId: "v_json", asset: "USD", amount: 1.5, idempotencyKey: key() }));
    await stillServes();
  });

  it("answers an int64 overflow with 400 invalid_argument, and keeps serving", async () => {
    await badRequest(JSON.stringify({ walletId: "v_json", asset: "USD", amount: "9223372036854775808", idempotencyKey: key() }));
    await badRequest(JSON.stringify({ walletId: "v_json", asset: "USD", amount: "-9223372036854775809", idempotencyKey: key() }));
    await badRequest(JSON.stringify({ walletId: "v_json", asset: "USD", amount: "18446744073709551616", idempotencyKey: key() }));
    await stillServes();
  });

  it("names the field in the ErrorDetail of a well-formed body with a bad value", async () => {
    const json = await badRequest(JSON.stringify({ walletId: "v_json", asset: "USD", amount: "-1", idempotencyKey: key() }));
    const detail = json.details?.find((d) => d.type === "holdfast.v1.ErrorDetail");
    expect(detail).toBeDefined();
    // Connect JSON sends detail values as base64 without padding.
    expect(fromBinary(ErrorDetailSchema, base64Decode(detail!.value))).toMatchObject({ reason: "INVALID_FIELD", field: "amount" });
    await stillServes();
  });
});

it("leaves every ledger invariant intact", async () => {
  expect(await checkInvariants(s.app.pool)).toEqual([]);
});
