// Goal: only the holder of a live API key gets in, a key's role decides which RPCs it may call,
// a wallet-scoped key touches only its wallet, and nothing crosses tenants (docs/architecture.md,
// "Domain model" and "The public contract"): missing, malformed, unknown, wrong-secret and revoked keys are UNAUTHENTICATED;
// a role below the RPC's is PERMISSION_DENIED; another tenant's wallets, holds, transfers and
// keys look exactly like ones that do not exist; the health service needs no key.
// Method: a real ledger server on port 0 (fresh database, HOLDFAST_AUTH_CACHE_MS=0 so a
// revocation applies to the next call). Authentication and roles are checked over each of the
// four protocols; tenant isolation and wallet scope over Connect, with a second tenant and
// its key created directly through services/ledger/src/auth/api-keys.ts.
import { randomBytes, randomUUID } from "node:crypto";
import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Health, HealthCheckResponse_ServingStatus } from "@holdfast/gen/grpc/health/v1/health_pb";
import { AdminService, Role } from "@holdfast/gen/holdfast/v1/admin_pb";
import { ErrorDetailSchema, type ErrorDetail } from "@holdfast/gen/holdfast/v1/errors_pb";
import { LedgerService } from "@holdfast/gen/holdfast/v1/ledger_pb";
import { HoldStatus, WalletStatus } from "@holdfast/gen/holdfast/v1/types_pb";
import { createApiKey, createTenant } from "@holdfast/ledger/auth/api-keys";
import { checkInvariants } from "@holdfast/ledger/invariants";
import { protocols, startTestServer, type Protocol } from "./support/server.js";

let s: Awaited<ReturnType<typeof startTestServer>>;

beforeAll(async () => {
  s = await startTestServer({ HOLDFAST_AUTH_CACHE_MS: "0" });
});
afterAll(async () => {
  await s?.close();
});

const key = () => `k-${randomUUID()}`;
/** The public key id inside a key `hf_<key_id>_<secret>`. */
const keyIdOf = (apiKey: string) => apiKey.slice(3, 19);

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

/** Consumes a server stream to its end or its first error. */
async function drain(stream: AsyncIterable<unknown>): Promise<void> {
  for await (const _ of stream) {
    // Only the error matters.
  }
}

describe.each(protocols)("over %s", (protocol: Protocol) => {
  const w = `auth_${protocol}_w`;
  /** A client that sends no authorization of its own; tests pass the raw header per call. */
  let bare: Client<typeof LedgerService>;
  let writer: Client<typeof LedgerService>;

  beforeAll(async () => {
    bare = createClient(LedgerService, s.transport(protocol, null));
    writer = s.client(LedgerService, protocol, s.keys.writer);
    await writer.deposit({ walletId: w, asset: "USD", amount: 100n, idempotencyKey: key() });
  });

  const getWallet = (authorization: string | null) =>
    bare.getWallet({ walletId: w }, authorization === null ? {} : { headers: { authorization } });

  it("refuses a call without authorization: UNAUTHENTICATED", async () => {
    await refused(getWallet(null), Code.Unauthenticated, "UNAUTHENTICATED");
    await refused(getWallet(""), Code.Unauthenticated, "UNAUTHENTICATED");
    await refused(bare.deposit({ walletId: w, asset: "USD", amount: 1n, idempotencyKey: key() }), Code.Unauthenticated, "UNAUTHENTICATED");
  });

  it("refuses a malformed authorization header: UNAUTHENTICATED", async () => {
    const valid = s.keys.reader;
    for (const header of ["Basic dXNlcjpwYXNzd29yZA==", "Bearer", "Bearer ", valid, `Token ${valid}`, `Bearer ${valid} ${valid}`, `Bearer ${valid}x`, `Bearer ${valid.slice(0, -1)}`]) {
      await refused(getWallet(header), Code.Unauthenticated, "UNAUTHENTICATED");
    }
    // The scheme is case-insensitive (RFC 9110 section 11.1).
    expect((await getWallet(`bearer ${valid}`)).wallet?.walletId).toBe(w);
  });

  it("refuses an unknown key and a known key id with a wrong secret: UNAUTHENTICATED", async () => {
    const unknown = `hf_${randomBytes(8).toString("hex")}_${randomBytes(32).toString("base64url")}`;
    await refused(getWallet(`Bearer ${unknown}`), Code.Unauthenticated, "UNAUTHENTICATED");
    const wrongSecret = `hf_${keyIdOf(s.keys.admin)}_${randomBytes(32).toString("base64url")}`;
    await refused(getWallet(`Bearer ${wrongSecret}`), Code.Unauthenticated, "UNAUTHENTICATED");
    // The right key still works: the refusals above are about the key, not the call.
    expect((await getWallet(`Bearer ${s.keys.admin}`)).wallet?.walletId).toBe(w);
  });

  it("refuses a key once it is revoked: UNAUTHENTICATED", async () => {
    const apiKey = await s.issue("writer");
    const client = s.client(LedgerService, protocol, apiKey);
    expect((await client.getWallet({ walletId: w })).wallet?.walletId).toBe(w);
    const admin = s.client(AdminService, protocol, s.keys.admin);
    await admin.revokeApiKey({ keyId: keyIdOf(apiKey) });
    await refused(client.getWallet({ walletId: w }), Code.Unauthenticated, "UNAUTHENTICATED");
    await refused(client.deposit({ walletId: w, asset: "USD", amount: 1n, idempotencyKey: key() }), Code.Unauthenticated, "UNAUTHENTICATED");
  });

  it("ends an open WatchWallet stream once its key is revoked: UNAUTHENTICATED", async () => {
    const apiKey = await s.issue("reader");
    const stream = s.client(LedgerService, protocol, apiKey).watchWallet({ walletId: w })[Symbol.asyncIterator]();
    expect((await stream.next()).value?.eventType).toBe("snapshot");
    await s.client(AdminService, protocol, s.keys.admin).revokeApiKey({ keyId: keyIdOf(apiKey) });
    const started = Date.now();
    // The key is checked again every second here (HOLDFAST_AUTH_CACHE_MS=0, at least 1 s).
    await refused(
      (async () => {
        for (;;) if ((await stream.next()).done) return;
      })(),
      Code.Unauthenticated,
      "UNAUTHENTICATED",
    );
    expect(Date.now() - started).toBeLessThan(5000);
  });

  it("lets a reader query but refuses every command: PERMISSION_DENIED", async () => {
    const reader = s.client(LedgerService, protocol, s.keys.reader);
    const before = (await reader.getWallet({ walletId: w })).wallet?.balances;
    expect(before?.[0]?.posted).toBe(100n);
    expect((await reader.listTransfers({ walletId: w })).transfers.length).toBeGreaterThan(0);
    expect((await reader.listHolds({ walletId: w })).holds).toEqual([]);
    await refused(reader.spend({ walletId: w, asset: "USD", amount: 1n, idempotencyKey: key() }), Code.PermissionDenied, "PERMISSION_DENIED");
    const commands: (() => Promise<unknown>)[] = [
      () => reader.deposit({ walletId: w, asset: "USD", amount: 1n, idempotencyKey: key() }),
      () => reader.reserve({ walletId: w, asset: "USD", amount: 1n, idempotencyKey: key() }),
      () => reader.capture({ holdId: "h", idempotencyKey: key() }),
      () => reader.release({ holdId: "h", idempotencyKey: key() }),
      () => reader.extendHold({ holdId: "h", ttlSeconds: 60, idempotencyKey: key() }),
      () => reader.refund({ transferId: randomUUID(), idempotencyKey: key() }),
      () => reader.transfer({ fromWalletId: w, toWalletId: `${w}_2`, asset: "USD", amount: 1n, idempotencyKey: key() }),
      () => reader.createWallet({ walletId: `${w}_reader` }),
    ];
    for (const command of commands) await refused(command(), Code.PermissionDenied, "PERMISSION_DENIED");
    // Nothing moved and nothing was created.
    expect((await reader.getWallet({ walletId: w })).wallet?.balances).toEqual(before);
    await refused(reader.getWallet({ walletId: `${w}_reader` }), Code.NotFound, "WALLET_NOT_FOUND");
  });

  it("refuses AdminService to writers and readers: PERMISSION_DENIED", async () => {
    for (const apiKey of [s.keys.writer, s.keys.reader]) {
      const admin = s.client(AdminService, protocol, apiKey);
      await refused(admin.updateWallet({ walletId: w, creditLimits: [{ asset: "USD", creditLimit: 1_000_000n }] }), Code.PermissionDenied, "PERMISSION_DENIED");
      await refused(admin.createApiKey({ name: "escalate", role: Role.ADMIN }), Code.PermissionDenied, "PERMISSION_DENIED");
      await refused(admin.listApiKeys({}), Code.PermissionDenied, "PERMISSION_DENIED");
      await refused(admin.revokeApiKey({ keyId: keyIdOf(s.keys.admin) }), Code.PermissionDenied, "PERMISSION_DENIED");
    }
    const reader = s.client(LedgerService, protocol, s.keys.reader);
    expect((await reader.getWallet({ walletId: w })).wallet?.balances[0]?.creditLimit).toBe(0n);
    // The admin key was not revoked.
    expect((await s.client(LedgerService, protocol, s.keys.admin).getWallet({ walletId: w })).wallet?.walletId).toBe(w);
    expect((await s.client(AdminService, protocol, s.keys.admin).listApiKeys({})).apiKeys.some((k) => k.name === "escalate")).toBe(false);
  });

  it("answers the health service without a key", async () => {
    const health = createClient(Health, s.transport(protocol, null));
    expect((await health.check({ service: "" })).status).toBe(HealthCheckResponse_ServingStatus.SERVING);
    expect((await health.check({ service: "holdfast.v1.AdminService" })).status).toBe(HealthCheckResponse_ServingStatus.SERVING);
  });
});

describe("tenant isolation", () => {
  let mine: Client<typeof LedgerService>;
  let theirs: Client<typeof LedgerService>;
  let theirAdmin: Client<typeof AdminService>;
  let theirKeyId: string;
  let spendId: string;
  const sharedKey = key();

  beforeAll(async () => {
    mine = s.client(LedgerService, "connect", s.keys.writer);
    const { tenantId } = await createTenant(s.app.pool, `other-${randomUUID()}`);
    const created = await createApiKey(s.app.pool, { tenantId, name: "other admin", role: "admin" });
    theirKeyId = created.key.keyId;
    theirs = s.client(LedgerService, "connect", created.secret);
    theirAdmin = s.client(AdminService, "connect", created.secret);
    await mine.deposit({ walletId: "tenant_w", asset: "USD", amount: 1000n, idempotencyKey: sharedKey });
    await mine.reserve({ walletId: "tenant_w", asset: "USD", amount: 100n, holdId: "tenant_h", ttlSeconds: 3600, idempotencyKey: key() });
    spendId = (await mine.spend({ walletId: "tenant_w", asset: "USD", amount: 50n, idempotencyKey: key() })).transfer!.transferId;
  });

  it("hides another tenant's wallet: WALLET_NOT_FOUND", async () => {
    await refused(theirs.getWallet({ walletId: "tenant_w" }), Code.NotFound, "WALLET_NOT_FOUND");
    await refused(theirs.spend({ walletId: "tenant_w", asset: "USD", amount: 1n, idempotencyKey: key() }), Code.NotFound, "WALLET_NOT_FOUND");
    await refused(theirAdmin.updateWallet({ walletId: "tenant_w", status: WalletStatus.FROZEN }), Code.NotFound, "WALLET_NOT_FOUND");
    await refused(drain(theirs.watchWallet({ walletId: "tenant_w" })), Code.NotFound, "WALLET_NOT_FOUND");
    expect((await theirs.listTransfers({ walletId: "tenant_w" })).transfers).toEqual([]);
    expect((await theirs.listHolds({ walletId: "tenant_w" })).holds).toEqual([]);
  });

  it("hides another tenant's hold: HOLD_NOT_FOUND, and the hold stays pending", async () => {
    await refused(theirs.getHold({ holdId: "tenant_h" }), Code.NotFound, "HOLD_NOT_FOUND");
    await refused(theirs.capture({ holdId: "tenant_h", idempotencyKey: key() }), Code.NotFound, "HOLD_NOT_FOUND");
    await refused(theirs.release({ holdId: "tenant_h", idempotencyKey: key() }), Code.NotFound, "HOLD_NOT_FOUND");
    await refused(theirs.extendHold({ holdId: "tenant_h", ttlSeconds: 60, idempotencyKey: key() }), Code.NotFound, "HOLD_NOT_FOUND");
    expect((await mine.getHold({ holdId: "tenant_h" })).hold?.status).toBe(HoldStatus.PENDING);
  });

  it("hides another tenant's transfer: Refund is TRANSFER_NOT_FOUND", async () => {
    await refused(theirs.refund({ transferId: spendId, idempotencyKey: key() }), Code.NotFound, "TRANSFER_NOT_FOUND");
    await refused(theirs.refund({ transferId: spendId, amount: 10n, idempotencyKey: key() }), Code.NotFound, "TRANSFER_NOT_FOUND");
  });

  it("keeps wallet ids and idempotency keys per tenant", async () => {
    // The same wallet id and idempotency key in the other tenant is a new wallet and a new command.
    const r = await theirs.deposit({ walletId: "tenant_w", asset: "USD", amount: 5n, idempotencyKey: sharedKey });
    expect(r.replayed).toBe(false);
    expect(r.balance?.posted).toBe(5n);
    expect((await mine.getWallet({ walletId: "tenant_w" })).wallet?.balances[0]).toMatchObject({ posted: 950n, held: 100n });
    expect((await theirs.getWallet({ walletId: "tenant_w" })).wallet?.balances[0]).toMatchObject({ posted: 5n, held: 0n });
  });

  it("lists and revokes only the tenant's own API keys", async () => {
    const listed = (await theirAdmin.listApiKeys({ pageSize: 500 })).apiKeys.map((k) => k.keyId);
    expect(listed).toEqual([theirKeyId]);
    const ours = (await s.client(AdminService, "connect", s.keys.admin).listApiKeys({ pageSize: 500 })).apiKeys.map((k) => k.keyId);
    expect(ours).toContain(keyIdOf(s.keys.writer));
    expect(ours).not.toContain(theirKeyId);
    await refused(theirAdmin.revokeApiKey({ keyId: keyIdOf(s.keys.writer) }), Code.NotFound, "API_KEY_NOT_FOUND");
    expect((await mine.getWallet({ walletId: "tenant_w" })).wallet?.walletId).toBe("tenant_w");
    // A key created through the other tenant's AdminService belongs to that tenant.
    const created = await theirAdmin.createApiKey({ name: "their reader", role: Role.READER });
    await refused(s.client(LedgerService, "connect", created.secret).getHold({ holdId: "tenant_h" }), Code.NotFound, "HOLD_NOT_FOUND");
  });
});

describe("wallet-scoped keys", () => {
  let scoped: Client<typeof LedgerService>;
  let writer: Client<typeof LedgerService>;
  let otherHold: string;
  let otherSpend: string;

  beforeAll(async () => {
    scoped = s.client(LedgerService, "connect", await s.issue("writer", "scoped_w"));
    writer = s.client(LedgerService, "connect", s.keys.writer);
    await writer.deposit({ walletId: "unscoped_w", asset: "USD", amount: 500n, idempotencyKey: key() });
    otherHold = (await writer.reserve({ walletId: "unscoped_w", asset: "USD", amount: 100n, ttlSeconds: 3600, idempotencyKey: key() })).hold!.holdId;
    otherSpend = (await writer.spend({ walletId: "unscoped_w", asset: "USD", amount: 10n, idempotencyKey: key() })).transfer!.transferId;
  });

  it("may spend, reserve and capture on its own wallet, but not deposit into it", async () => {
    const denied = await refused(scoped.deposit({ walletId: "scoped_w", asset: "USD", amount: 300n, idempotencyKey: key() }), Code.PermissionDenied, "PERMISSION_DENIED");
    expect(denied.field).toBe("wallet_id");
    expect((await writer.deposit({ walletId: "scoped_w", asset: "USD", amount: 300n, idempotencyKey: key() })).balance?.posted).toBe(300n);
    expect((await scoped.spend({ walletId: "scoped_w", asset: "USD", amount: 100n, idempotencyKey: key() })).balance?.posted).toBe(200n);
    const hold = (await scoped.reserve({ walletId: "scoped_w", asset: "USD", amount: 50n, ttlSeconds: 600, idempotencyKey: key() })).hold!;
    expect((await scoped.getHold({ holdId: hold.holdId })).hold?.walletId).toBe("scoped_w");
    expect((await scoped.capture({ holdId: hold.holdId, idempotencyKey: key() })).balance?.posted).toBe(150n);
    expect((await scoped.getWallet({ walletId: "scoped_w" })).wallet?.balances[0]?.posted).toBe(150n);
  });

  it("gets PERMISSION_DENIED naming the field for another wallet", async () => {
    const denied = await refused(scoped.deposit({ walletId: "unscoped_w", asset: "USD", amount: 1n, idempotencyKey: key() }), Code.PermissionDenied, "PERMISSION_DENIED");
    expect(denied.field).toBe("wallet_id");
    await refused(scoped.spend({ walletId: "unscoped_w", asset: "USD", amount: 1n, idempotencyKey: key() }), Code.PermissionDenied, "PERMISSION_DENIED");
    await refused(scoped.getWallet({ walletId: "unscoped_w" }), Code.PermissionDenied, "PERMISSION_DENIED");
    await refused(scoped.listTransfers({ walletId: "unscoped_w" }), Code.PermissionDenied, "PERMISSION_DENIED");
    await refused(scoped.listHolds({ walletId: "unscoped_w" }), Code.PermissionDenied, "PERMISSION_DENIED");
    await refused(drain(scoped.watchWallet({ walletId: "unscoped_w" })), Code.PermissionDenied, "PERMISSION_DENIED");
    const transfer = await refused(
      scoped.transfer({ fromWalletId: "unscoped_w", toWalletId: "scoped_w", asset: "USD", amount: 1n, idempotencyKey: key() }),
      Code.PermissionDenied,
      "PERMISSION_DENIED",
    );
    expect(transfer.field).toBe("from_wallet_id");
    expect((await writer.getWallet({ walletId: "unscoped_w" })).wallet?.balances[0]?.posted).toBe(490n);
  });

  it("gets HOLD_NOT_FOUND for another wallet's hold and TRANSFER_NOT_FOUND for its transfers", async () => {
    await refused(scoped.getHold({ holdId: otherHold }), Code.NotFound, "HOLD_NOT_FOUND");
    await refused(scoped.capture({ holdId: otherHold, idempotencyKey: key() }), Code.NotFound, "HOLD_NOT_FOUND");
    await refused(scoped.release({ holdId: otherHold, idempotencyKey: key() }), Code.NotFound, "HOLD_NOT_FOUND");
    await refused(scoped.extendHold({ holdId: otherHold, ttlSeconds: 60, idempotencyKey: key() }), Code.NotFound, "HOLD_NOT_FOUND");
    await refused(scoped.refund({ transferId: otherSpend, idempotencyKey: key() }), Code.NotFound, "TRANSFER_NOT_FOUND");
    expect((await writer.getHold({ holdId: otherHold })).hold?.status).toBe(HoldStatus.PENDING);
  });

  it("cannot read another wallet's answer by replaying its idempotency key", async () => {
    const k = key();
    const hold = (await writer.reserve({ walletId: "unscoped_w", asset: "USD", amount: 5n, ttlSeconds: 600, idempotencyKey: key() })).hold!;
    await writer.release({ holdId: hold.holdId, idempotencyKey: k });
    await refused(scoped.release({ holdId: hold.holdId, idempotencyKey: k }), Code.AlreadyExists, "IDEMPOTENCY_KEY_REUSED");
  });
});

it("leaves every ledger invariant intact", async () => {
  expect(await checkInvariants(s.app.pool)).toEqual([]);
});
