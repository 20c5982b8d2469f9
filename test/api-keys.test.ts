// Goal: API keys authenticate exactly the holder of a live key, revocation takes effect within
// the verifier's cache time, malformed keys never reach the database, and one tenant can
// neither see nor revoke another tenant's keys.
// Method: real PostgreSQL (a database cloned from the migrated template). The verifier's
// clock is injected, so cache expiry is tested without sleeping; a spy on the pool counts
// database round trips.
import { afterAll, beforeAll, describe, expect, test, vi } from "vitest";
import { InvalidFieldError, InvalidPageTokenError } from "@holdfast/common/errors";
import {
  createApiKey,
  createKeyVerifier,
  createTenant,
  listApiKeys,
  revokeApiKey,
  TenantNameTakenError,
  TenantNotFoundError,
} from "@holdfast/ledger/auth/api-keys";
import { createTestDatabase } from "./support/db.js";
import type { TestDatabase } from "./support/db.js";

let db: TestDatabase;

beforeAll(async () => {
  db = await createTestDatabase();
});

afterAll(async () => {
  await db.drop();
});

/** A tenant with a unique name, so tests in this file do not collide. */
async function newTenant(): Promise<string> {
  const { tenantId } = await createTenant(db.pool, `tenant-${crypto.randomUUID()}`);
  return tenantId;
}

/** A manual clock for the verifier's cache. */
function manualClock(): { nowMs: () => number; advance(ms: number): void } {
  let now = 1_000_000;
  return { nowMs: () => now, advance: (ms) => void (now += ms) };
}

describe("createApiKey and verify", () => {
  test("a new key verifies to its tenant, role and wallet scope", async () => {
    const tenantId = await newTenant();
    const { key, secret } = await createApiKey(db.pool, { tenantId, name: "checkout", role: "writer", walletId: "user_1" });

    expect(secret).toMatch(/^hf_[0-9a-f]{16}_[A-Za-z0-9_-]{43}$/);
    expect(secret.startsWith(`hf_${key.keyId}_`)).toBe(true);
    expect(key).toMatchObject({ tenantId, name: "checkout", role: "writer", walletId: "user_1", revokedAt: null });
    expect(key.createdAt).toBeInstanceOf(Date);

    const verifier = createKeyVerifier(db.pool, { cacheMs: 0, maxEntries: 10 });
    expect(await verifier.verify(secret)).toEqual({ tenantId, keyId: key.keyId, role: "writer", walletId: "user_1" });
  });

  test("only the secret's hash is stored", async () => {
    const tenantId = await newTenant();
    const { key, secret } = await createApiKey(db.pool, { tenantId, name: "k", role: "reader" });
    const { rows } = await db.pool.query<{ secret_hash: Buffer }>("select secret_hash from api_keys where key_id = $1", [
      key.keyId,
    ]);
    const stored = rows[0]?.secret_hash;
    expect(stored?.length).toBe(32);
    expect(stored?.toString("latin1")).not.toContain(secret.slice(-43));
  });

  test("a wrong secret for a real key id is refused", async () => {
    const tenantId = await newTenant();
    const { secret } = await createApiKey(db.pool, { tenantId, name: "k", role: "admin" });
    const verifier = createKeyVerifier(db.pool, { cacheMs: 60_000, maxEntries: 10 });
    const last = secret.at(-1) === "A" ? "B" : "A";
    const wrong = `${secret.slice(0, -1)}${last}`;

    expect(await verifier.verify(wrong)).toBeNull();
    // The cached row must not let the right secret through as wrong, or the wrong one as right.
    expect(await verifier.verify(secret)).not.toBeNull();
    expect(await verifier.verify(wrong)).toBeNull();
  });

  test("once the right secret has been verified, a wrong one is still refused, and the right one still passes", async () => {
    const tenantId = await newTenant();
    const { secret } = await createApiKey(db.pool, { tenantId, name: "k", role: "writer" });
    const verifier = createKeyVerifier(db.pool, { cacheMs: 60_000, maxEntries: 10 });
    const last = secret.at(-1) === "A" ? "B" : "A";
    const wrong = `${secret.slice(0, -1)}${last}`;
    const other = `${secret.slice(0, -43)}${"x".repeat(43)}`;

    // The first right call hashes and remembers the secret; the next ones compare bytes.
    expect(await verifier.verify(secret)).not.toBeNull();
    expect(await verifier.verify(secret)).not.toBeNull();
    expect(await verifier.verify(wrong)).toBeNull();
    expect(await verifier.verify(other)).toBeNull();
    expect(await verifier.verify(secret)).not.toBeNull();
  });

  test("malformed keys are refused without a database query", async () => {
    const verifier = createKeyVerifier(db.pool, { cacheMs: 60_000, maxEntries: 10 });
    const query = vi.spyOn(db.pool, "query");
    try {
      const good = `hf_${"a".repeat(16)}_${"b".repeat(43)}`;
      const malformed = [
        "",
        "hf_",
        "Bearer " + good,
        good.toUpperCase(),
        `xx_${"a".repeat(16)}_${"b".repeat(43)}`,
        `hf_${"a".repeat(15)}_${"b".repeat(44)}`,
        `hf_${"g".repeat(16)}_${"b".repeat(43)}`,
        `hf_${"a".repeat(16)}_${"b".repeat(42)}=`,
        `${good}x`,
        "x".repeat(10_000),
      ];
      for (const bearer of malformed) expect(await verifier.verify(bearer)).toBeNull();
      expect(query).not.toHaveBeenCalled();
    } finally {
      query.mockRestore();
    }
  });

  test("lookups, failed ones included, are cached for cacheMs", async () => {
    const tenantId = await newTenant();
    const { secret } = await createApiKey(db.pool, { tenantId, name: "k", role: "reader" });
    const unknown = `hf_${"0".repeat(16)}_${"b".repeat(43)}`;
    const clock = manualClock();
    const verifier = createKeyVerifier(db.pool, { cacheMs: 1_000, maxEntries: 10, nowMs: clock.nowMs });
    const query = vi.spyOn(db.pool, "query");
    try {
      for (let i = 0; i < 3; i++) {
        expect(await verifier.verify(secret)).not.toBeNull();
        expect(await verifier.verify(unknown)).toBeNull();
      }
      expect(query).toHaveBeenCalledTimes(2);
      clock.advance(1_000);
      await verifier.verify(secret);
      expect(query).toHaveBeenCalledTimes(3);
    } finally {
      query.mockRestore();
    }
  });

  test("the cache holds at most maxEntries keys, dropping the oldest", async () => {
    const verifier = createKeyVerifier(db.pool, { cacheMs: 60_000, maxEntries: 2 });
    const keys = ["1", "2", "3"].map((digit) => `hf_${digit.repeat(16)}_${"b".repeat(43)}`);
    const query = vi.spyOn(db.pool, "query");
    try {
      for (const key of keys) await verifier.verify(key);
      expect(query).toHaveBeenCalledTimes(3);
      await verifier.verify(keys[2] ?? ""); // still cached
      await verifier.verify(keys[0] ?? ""); // evicted, asks again
      expect(query).toHaveBeenCalledTimes(4);
    } finally {
      query.mockRestore();
    }
  });

  test("refuses bad input with typed errors", async () => {
    const tenantId = await newTenant();
    await expect(createApiKey(db.pool, { tenantId, name: "", role: "reader" })).rejects.toThrow(InvalidFieldError);
    await expect(
      createApiKey(db.pool, { tenantId, name: "k", role: "admin", walletId: "user_1" }),
    ).rejects.toThrow(InvalidFieldError);
    await expect(
      createApiKey(db.pool, { tenantId, name: "k", role: "reader", walletId: "not a wallet" }),
    ).rejects.toThrow(InvalidFieldError);
    await expect(
      createApiKey(db.pool, { tenantId: crypto.randomUUID(), name: "k", role: "reader" }),
    ).rejects.toThrow(TenantNotFoundError);
    const name = `taken-${crypto.randomUUID()}`;
    await createTenant(db.pool, name);
    await expect(createTenant(db.pool, name)).rejects.toThrow(TenantNameTakenError);
  });
});

describe("revokeApiKey", () => {
  test("a revoked key is refused once the cache entry expires", async () => {
    const tenantId = await newTenant();
    const { key, secret } = await createApiKey(db.pool, { tenantId, name: "k", role: "writer" });
    const clock = manualClock();
    const verifier = createKeyVerifier(db.pool, { cacheMs: 5_000, maxEntries: 10, nowMs: clock.nowMs });
    expect(await verifier.verify(secret)).not.toBeNull();

    const revoked = await revokeApiKey(db.pool, tenantId, key.keyId);
    expect(revoked?.revokedAt).toBeInstanceOf(Date);

    // Within cacheMs the verifier still trusts its cached lookup: that is the documented delay.
    clock.advance(4_999);
    expect(await verifier.verify(secret)).not.toBeNull();
    clock.advance(1);
    expect(await verifier.verify(secret)).toBeNull();
    // A verifier without a cache refuses at once.
    expect(await createKeyVerifier(db.pool, { cacheMs: 0, maxEntries: 1 }).verify(secret)).toBeNull();
  });

  test("revoking twice keeps the first revocation time", async () => {
    const tenantId = await newTenant();
    const { key } = await createApiKey(db.pool, { tenantId, name: "k", role: "writer" });
    const first = await revokeApiKey(db.pool, tenantId, key.keyId);
    const second = await revokeApiKey(db.pool, tenantId, key.keyId);
    expect(second?.revokedAt).toEqual(first?.revokedAt);
  });
});

describe("tenant isolation", () => {
  test("one tenant can neither list nor revoke another tenant's keys", async () => {
    const [alice, bob] = [await newTenant(), await newTenant()];
    const { key, secret } = await createApiKey(db.pool, { tenantId: alice, name: "alice's", role: "admin" });

    const bobsPage = await listApiKeys(db.pool, bob, {});
    expect(bobsPage.keys).toEqual([]);
    expect(await revokeApiKey(db.pool, bob, key.keyId)).toBeNull();

    const verifier = createKeyVerifier(db.pool, { cacheMs: 0, maxEntries: 10 });
    expect((await verifier.verify(secret))?.tenantId).toBe(alice);
    expect((await listApiKeys(db.pool, alice, {})).keys.map((k) => k.keyId)).toEqual([key.keyId]);
  });
});

describe("listApiKeys", () => {
  test("pages through every key once, oldest first", async () => {
    const tenantId = await newTenant();
    const created: string[] = [];
    for (let i = 0; i < 7; i++) {
      created.push((await createApiKey(db.pool, { tenantId, name: `key ${i}`, role: "reader" })).key.keyId);
    }
    const seen: string[] = [];
    let pageToken = "";
    let pages = 0;
    do {
      const page = await listApiKeys(db.pool, tenantId, { pageSize: 3, pageToken });
      seen.push(...page.keys.map((key) => key.keyId));
      pageToken = page.nextPageToken;
      pages++;
    } while (pageToken !== "");
    expect(pages).toBe(3);
    expect(seen).toEqual(created);
  });

  test("keys created in the same microsecond are neither skipped nor repeated", async () => {
    const tenantId = await newTenant();
    // now() is the transaction's start time, so every key inserted here shares created_at.
    const client = await db.pool.connect();
    const created: string[] = [];
    try {
      await client.query("begin");
      for (let i = 0; i < 5; i++) {
        created.push((await createApiKey(client, { tenantId, name: `same ${i}`, role: "reader" })).key.keyId);
      }
      await client.query("commit");
    } finally {
      client.release();
    }
    const first = await listApiKeys(db.pool, tenantId, { pageSize: 2 });
    const second = await listApiKeys(db.pool, tenantId, { pageSize: 2, pageToken: first.nextPageToken });
    const third = await listApiKeys(db.pool, tenantId, { pageSize: 2, pageToken: second.nextPageToken });
    const seen = [...first.keys, ...second.keys, ...third.keys].map((key) => key.keyId);
    expect(seen).toEqual([...created].sort());
    expect(third.nextPageToken).toBe("");
  });

  test("page size 0 means the default and large sizes are capped", async () => {
    const tenantId = await newTenant();
    await createApiKey(db.pool, { tenantId, name: "k", role: "reader" });
    expect((await listApiKeys(db.pool, tenantId, { pageSize: 0 })).keys).toHaveLength(1);
    expect((await listApiKeys(db.pool, tenantId, { pageSize: 1_000_000 })).keys).toHaveLength(1);
    await expect(listApiKeys(db.pool, tenantId, { pageSize: -1 })).rejects.toThrow(InvalidFieldError);
  });

  test("a malformed page token throws InvalidPageTokenError", async () => {
    const tenantId = await newTenant();
    const forged = Buffer.from("2024-02-30T00:00:00.000000Z|0123456789abcdef").toString("base64url");
    for (const pageToken of ["!!!", "abc", forged, "A".repeat(1_000)]) {
      await expect(listApiKeys(db.pool, tenantId, { pageSize: 1, pageToken })).rejects.toThrow(InvalidPageTokenError);
    }
  });
});
