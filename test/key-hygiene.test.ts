// Goal: API keys can expire, and say when they were last used, without costing a call anything
// (issue 12, Low: key hygiene). An expired key is refused like a revoked one (UNAUTHENTICATED),
// on its next call and on its open streams; `last_used_at` is written at most once per interval
// per key, in the background, never as a round trip of the call; CreateApiKey checks expires_at
// and rate_limit and ListApiKeys shows them.
// Method: the key verifier on real PostgreSQL with an injected clock and a spy counting queries;
// then a real ledger server over Connect, with keys that expire a second or two after creation.
import { setTimeout as sleep } from "node:timers/promises";
import { timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from "vitest";
import { AdminService, Role } from "@holdfast/gen/holdfast/v1/admin_pb";
import { ErrorDetailSchema } from "@holdfast/gen/holdfast/v1/errors_pb";
import { LedgerService } from "@holdfast/gen/holdfast/v1/ledger_pb";
import { createApiKey, createKeyVerifier, createTenant, listApiKeys } from "@holdfast/ledger/auth/api-keys";
import { createTestDatabase, type TestDatabase } from "./support/db.js";
import { key } from "./support/ledger.js";
import { startTestServer } from "./support/server.js";

afterEach(() => {
  vi.restoreAllMocks();
});

async function failure(call: Promise<unknown>): Promise<{ code: Code; reason: string | undefined; field: string | undefined }> {
  const err = await call.then(
    () => {
      throw new Error("expected the call to fail");
    },
    (e: unknown) => ConnectError.from(e),
  );
  const [detail] = err.findDetails(ErrorDetailSchema);
  return { code: err.code, reason: detail?.reason, field: detail?.field };
}

describe("the key verifier", () => {
  let db: TestDatabase;
  let tenantId: string;

  beforeAll(async () => {
    db = await createTestDatabase();
    tenantId = (await createTenant(db.pool, `hygiene-${key()}`)).tenantId;
  });
  afterAll(async () => {
    await db.drop();
  });

  it("refuses a key from its expiry on, without asking the database again", async () => {
    let now = Date.now();
    const expiresAt = new Date(now + 3_600_000);
    const { secret } = await createApiKey(db.pool, { tenantId, name: "expiring", role: "reader", expiresAt });
    const verifier = createKeyVerifier(db.pool, { cacheMs: 24 * 3_600_000, maxEntries: 10, nowMs: () => now, lastUsedIntervalMs: 0 });
    expect(await verifier.verify(secret)).toMatchObject({ tenantId, role: "reader" });
    const spy = vi.spyOn(db.pool, "query");
    now = expiresAt.getTime() - 1;
    expect(await verifier.verify(secret)).not.toBeNull();
    now = expiresAt.getTime();
    expect(await verifier.verify(secret)).toBeNull();
    expect(spy).not.toHaveBeenCalled();
  });

  it("refuses an expiry in the past or more than 10 years ahead, naming expires_at", async () => {
    for (const expiresAt of [new Date(Date.now() - 1000), new Date(Date.now() + 11 * 366 * 24 * 3_600_000)]) {
      await expect(createApiKey(db.pool, { tenantId, name: "bad", role: "reader", expiresAt })).rejects.toMatchObject({ field: "expires_at" });
    }
  });

  it("records last use in the background: no query per call, one update per interval", async () => {
    const { key: created, secret } = await createApiKey(db.pool, { tenantId, name: "used", role: "writer" });
    const verifier = createKeyVerifier(db.pool, { cacheMs: 60_000, maxEntries: 10, lastUsedIntervalMs: 60_000 });
    const spy = vi.spyOn(db.pool, "query");
    const verifierQueries = () => spy.mock.calls.map(([q]) => (q as { name?: string }).name).filter((name) => name?.startsWith("holdfast_api_key_"));
    for (let i = 0; i < 50; i++) expect(await verifier.verify(secret)).not.toBeNull();
    // One lookup for 50 calls (the key cache), and no write yet.
    expect(verifierQueries()).toEqual(["holdfast_api_key_verify"]);
    const lastUsed = async () => (await listApiKeys(db.pool, tenantId, { pageSize: 500 })).keys.find((k) => k.keyId === created.keyId)?.lastUsedAt;
    expect(await lastUsed()).toBeNull();
    const before = Date.now();
    await verifier.flushLastUsed();
    expect(verifierQueries()).toEqual(["holdfast_api_key_verify", "holdfast_api_key_last_used"]);
    expect((await lastUsed())!.getTime()).toBeGreaterThan(before - 5000);
    // Nothing pending: a flush without calls in between writes nothing.
    await verifier.flushLastUsed();
    expect(verifierQueries()).toHaveLength(2);
    await verifier.close();
  });

  it("writes on its own timer, and once per interval however many calls", async () => {
    const { key: created, secret } = await createApiKey(db.pool, { tenantId, name: "timer", role: "reader" });
    const verifier = createKeyVerifier(db.pool, { cacheMs: 60_000, maxEntries: 10, lastUsedIntervalMs: 200 });
    const spy = vi.spyOn(db.pool, "query");
    for (let i = 0; i < 20; i++) await verifier.verify(secret);
    await vi.waitFor(async () => {
      const found = (await listApiKeys(db.pool, tenantId, { pageSize: 500 })).keys.find((k) => k.keyId === created.keyId);
      expect(found?.lastUsedAt).not.toBeNull();
    });
    const updates = spy.mock.calls.filter(([q]) => (q as { name?: string }).name === "holdfast_api_key_last_used");
    expect(updates).toHaveLength(1);
    await verifier.close();
  });
});

describe("over the wire", () => {
  let s: Awaited<ReturnType<typeof startTestServer>>;
  let admin: ReturnType<typeof s.client<typeof AdminService>>;
  let stopped = false;

  beforeAll(async () => {
    s = await startTestServer();
    admin = s.client(AdminService, "connect", s.keys.admin);
    await s.client(LedgerService, "connect", s.keys.writer).deposit({ walletId: "w", asset: "USD", amount: 10n, idempotencyKey: key() });
  });
  afterAll(async () => {
    if (!stopped) await s?.app.stop();
    await s?.db.drop();
  });

  it("creates a key with an expiry and a rate, shows both, and refuses bad ones", async () => {
    const expiresAt = new Date(Date.now() + 3_600_000);
    const created = await admin.createApiKey({
      name: "hygienic",
      role: Role.READER,
      expiresAt: timestampFromDate(expiresAt),
      rateLimit: { requestsPerSecond: 50 },
    });
    expect(timestampDate(created.apiKey!.expiresAt!).getTime()).toBe(expiresAt.getTime());
    expect(created.apiKey?.rateLimit).toMatchObject({ requestsPerSecond: 50, burst: 50 });
    const listed = (await admin.listApiKeys({ pageSize: 500 })).apiKeys.find((k) => k.keyId === created.apiKey?.keyId);
    expect(listed?.expiresAt && timestampDate(listed.expiresAt).getTime()).toBe(expiresAt.getTime());
    expect(listed?.rateLimit).toMatchObject({ requestsPerSecond: 50, burst: 50 });
    const bad = [
      { expiresAt: timestampFromDate(new Date(Date.now() - 60_000)) },
      { rateLimit: { requestsPerSecond: 0 } },
      { rateLimit: { requestsPerSecond: 2_000_000 } },
      { rateLimit: { requestsPerSecond: 5, burst: 2_000_000 } },
    ];
    for (const extra of bad) {
      const refused = await failure(admin.createApiKey({ name: "bad", role: Role.READER, ...extra }));
      expect(refused.code).toBe(Code.InvalidArgument);
      expect(refused.field).toMatch(/^(expires_at|rate_limit\.requests_per_second|rate_limit\.burst)$/);
    }
  });

  it("refuses an expired key, and ends its open stream, with UNAUTHENTICATED", async () => {
    const expiresAt = new Date(Date.now() + 1500);
    const created = await admin.createApiKey({ name: "short-lived", role: Role.READER, expiresAt: timestampFromDate(expiresAt) });
    const client = s.client(LedgerService, "connect", created.secret);
    expect((await client.getWallet({ walletId: "w" })).wallet?.walletId).toBe("w");
    const stream = client.watchWallet({ walletId: "w" })[Symbol.asyncIterator]();
    expect((await stream.next()).value?.eventType).toBe("snapshot");
    const ended = failure(
      (async () => {
        for (;;) if ((await stream.next()).done) return;
      })(),
    );
    await sleep(Math.max(0, expiresAt.getTime() - Date.now()) + 50);
    expect(await failure(client.getWallet({ walletId: "w" }))).toMatchObject({ code: Code.Unauthenticated, reason: "UNAUTHENTICATED" });
    expect(await ended).toMatchObject({ code: Code.Unauthenticated, reason: "UNAUTHENTICATED" });
  });

  it("has written last_used_at for the keys used once the ledger stops", async () => {
    const created = await admin.createApiKey({ name: "used once", role: Role.READER });
    await s.client(LedgerService, "connect", created.secret).getWallet({ walletId: "w" });
    const unused = await admin.createApiKey({ name: "never used", role: Role.READER });
    const lastUsed = async (keyId: string) =>
      (await s.db.pool.query<{ last_used_at: Date | null }>("select last_used_at from api_keys where key_id = $1", [keyId])).rows[0]?.last_used_at;
    // The interval is a minute: nothing is written while the test runs...
    expect(await lastUsed(created.apiKey!.keyId)).toBeNull();
    // ...and stopping the ledger writes what is pending.
    stopped = true;
    await s.app.stop();
    expect(await lastUsed(created.apiKey!.keyId)).toBeInstanceOf(Date);
    expect(await lastUsed(unused.apiKey!.keyId)).toBeNull();
  });
});
