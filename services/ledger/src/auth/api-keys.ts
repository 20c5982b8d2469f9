import { createHash, randomBytes, randomUUID, timingSafeEqual } from "node:crypto";
import type { QueryConfig, QueryResult, QueryResultRow } from "pg";
import { InvalidFieldError } from "@holdfast/common/errors";
import { decodePageToken, encodePageToken } from "@holdfast/common/page-token";
import { isUuid, PAGE_SIZE_DEFAULT, PAGE_SIZE_MAX, WALLET_ID_PATTERN } from "@holdfast/common/patterns";
import { pgErrorCode } from "@holdfast/common/pg";

/** What a key may call: reader ⊂ writer ⊂ admin (see `Role` in holdfast/v1/admin.proto). */
export type Role = "admin" | "writer" | "reader";

/** Every role, in the order the database check constraint lists them. */
export const ROLES: readonly Role[] = ["admin", "writer", "reader"];

/** An API key as stored, without its secret. */
export interface ApiKeyRecord {
  readonly keyId: string;
  readonly tenantId: string;
  readonly name: string;
  readonly role: Role;
  /** When set, the key may only touch this wallet. */
  readonly walletId: string | null;
  readonly createdAt: Date;
  readonly revokedAt: Date | null;
  /** When set, the key is refused from this time on. */
  readonly expiresAt: Date | null;
  /** When the key was last used, to about {@link LAST_USED_INTERVAL_MS_DEFAULT}; null if never. */
  readonly lastUsedAt: Date | null;
  /** The key's own token bucket; null uses the server's per-key default. */
  readonly rateLimit: RateLimit | null;
}

/**
 * A token bucket: `burst` calls at once, refilled at `perSecond`. A key may carry its own
 * (CreateApiKey's `rate_limit`) in place of the server's per-key default.
 */
export interface RateLimit {
  readonly perSecond: number;
  readonly burst: number;
}

/** Bounds of a key's own rate and burst, as the database's check constraints state them. */
export const RATE_LIMIT_VALUE_MAX = 1_000_000;

/** The farthest ahead a key's expiry may be set: a typo in the year should not mean "never". */
export const KEY_EXPIRY_MS_MAX = 10 * 366 * 24 * 3600 * 1000;

/**
 * How often a verifier writes the keys it saw used to `last_used_at`: one batched update per
 * interval and process, off every call's path.
 */
export const LAST_USED_INTERVAL_MS_DEFAULT = 60_000;

/** Who is calling: the result of verifying a bearer key. */
export interface Principal {
  readonly tenantId: string;
  readonly keyId: string;
  readonly role: Role;
  readonly walletId: string | null;
  /** The key's own rate (absent: the server's per-key default); read with the key, so free. */
  readonly rateLimit?: RateLimit;
}

/** One page of {@link listApiKeys}; `nextPageToken` is empty on the last page. */
export interface ApiKeyPage {
  readonly keys: ApiKeyRecord[];
  readonly nextPageToken: string;
}

/**
 * Anything that runs a query: a `pg.Pool`, or a `pg.PoolClient` inside a transaction (the
 * CLI creates a tenant and its first admin key atomically that way).
 */
export interface Queryable {
  query<R extends QueryResultRow = QueryResultRow>(config: QueryConfig): Promise<QueryResult<R>>;
}

/** The visible prefix of every key, so leaked keys are easy to recognise and scan for. */
export const API_KEY_PREFIX = "hf_";

/** 8 random bytes give the 16 lowercase hex characters of a key id (64 bits). */
const KEY_ID_BYTES = 8;
/** 32 random bytes give the 43 base64url characters of a secret (256 bits). */
const SECRET_BYTES = 32;
/** A SHA-256 digest. */
const SECRET_HASH_BYTES = 32;
/** `hf_<16 hex>_<43 base64url>`; base64url may itself contain `_`, so match by length. */
const API_KEY_PATTERN = /^hf_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$/;
const API_KEY_LENGTH = API_KEY_PREFIX.length + 16 + 1 + 43;

const NAME_LENGTH_MAX = 128;
/** A page cursor's time: created_at in UTC with microseconds, as listApiKeys prints it. */
const CURSOR_TIME_PATTERN = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$/;
const KEY_ID_PATTERN = /^[0-9a-f]{16}$/;

/** unique_violation: another tenant already has the name. */
const UNIQUE_VIOLATION_SQLSTATE = "23505";
/** foreign_key_violation: the tenant of a new key does not exist. */
const FOREIGN_KEY_VIOLATION_SQLSTATE = "23503";

/** Thrown by {@link createApiKey} when the tenant does not exist. */
export class TenantNotFoundError extends Error {
  override readonly name = "TenantNotFoundError";
  constructor(readonly tenantId: string) {
    super(`tenant ${tenantId} does not exist`);
  }
}

/** Thrown by {@link createTenant} when another tenant already has the name. */
export class TenantNameTakenError extends Error {
  override readonly name = "TenantNameTakenError";
  constructor(readonly tenantName: string) {
    super(`a tenant named ${JSON.stringify(tenantName)} already exists`);
  }
}

/** Creates a tenant. Names are unique, 1–128 characters. */
export async function createTenant(db: Queryable, name: string): Promise<{ tenantId: string }> {
  checkName("name", name);
  const tenantId = randomUUID();
  try {
    await db.query({ text: "insert into tenants (id, name) values ($1, $2)", values: [tenantId, name] });
  } catch (error) {
    if (pgErrorCode(error) === UNIQUE_VIOLATION_SQLSTATE) throw new TenantNameTakenError(name);
    throw error;
  }
  return { tenantId };
}

/** What {@link createApiKey} needs; `walletId` scopes a writer or reader key to one wallet. */
export interface CreateApiKeyInput {
  readonly tenantId: string;
  readonly name: string;
  readonly role: Role;
  readonly walletId?: string | undefined;
  /** When set, the key is refused from this time on; must be in the future. */
  readonly expiresAt?: Date | undefined;
  /** The key's own rate in place of the server's per-key default. */
  readonly rateLimit?: RateLimit | undefined;
}

/**
 * Issues a key. `secret` is the full bearer string (`hf_<key_id>_<secret>`): return it to the
 * caller once, because only its hash is stored and it cannot be shown again.
 */
export async function createApiKey(
  db: Queryable,
  input: CreateApiKeyInput,
): Promise<{ key: ApiKeyRecord; secret: string }> {
  const walletId = checkCreateInput(input);
  const expiresAt = checkExpiry(input.expiresAt);
  const rateLimit = checkRateLimit(input.rateLimit);
  const keyId = randomBytes(KEY_ID_BYTES).toString("hex");
  const secret = randomBytes(SECRET_BYTES).toString("base64url");
  try {
    const { rows } = await db.query<ApiKeyRow>({
      text: `insert into api_keys (tenant_id, key_id, name, role, wallet_id, secret_hash, expires_at, rate_per_second, rate_burst)
             values ($1, $2, $3, $4, $5, $6, $7, $8, $9)
             returning ${API_KEY_COLUMNS}`,
      values: [input.tenantId, keyId, input.name, input.role, walletId, hashSecret(secret), expiresAt, rateLimit?.perSecond ?? null, rateLimit?.burst ?? null],
    });
    return { key: toRecord(firstRow(rows)), secret: `${API_KEY_PREFIX}${keyId}_${secret}` };
  } catch (error) {
    if (pgErrorCode(error) === FOREIGN_KEY_VIOLATION_SQLSTATE) throw new TenantNotFoundError(input.tenantId);
    throw error;
  }
}

/**
 * Pages through a tenant's keys, oldest first. The page token is an opaque cursor on
 * (created_at, key_id), so pages stay stable while keys are added; a token that this
 * function did not produce throws an InvalidPageTokenError (@holdfast/common/errors).
 */
export async function listApiKeys(
  db: Queryable,
  tenantId: string,
  options: { readonly pageSize?: number | undefined; readonly pageToken?: string | undefined } = {},
): Promise<ApiKeyPage> {
  checkTenantId(tenantId);
  const pageSize = normalizePageSize(options.pageSize);
  const [afterTime, afterKeyId] = decodePageToken(options.pageToken ?? "", [isCursorTime, isKeyId]) ?? ["-infinity", ""];
  const { rows } = await db.query<ApiKeyRow & { cursor_created_at: string }>({
    text: `select ${API_KEY_COLUMNS},
                  to_char(created_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') as cursor_created_at
           from api_keys
           where tenant_id = $1 and (created_at, key_id) > ($2::timestamptz, $3)
           order by created_at, key_id
           limit $4`,
    values: [tenantId, afterTime, afterKeyId, pageSize + 1],
  });
  const page = rows.slice(0, pageSize);
  const last = page[page.length - 1];
  const nextPageToken =
    rows.length > pageSize && last !== undefined ? encodePageToken([last.cursor_created_at, last.key_id]) : "";
  return { keys: page.map(toRecord), nextPageToken };
}

/**
 * Revokes a key for good and returns it; revoking twice keeps the first revocation time.
 * Returns null when the tenant has no such key, whether or not another tenant does, so the
 * answer reveals nothing about other tenants.
 */
export async function revokeApiKey(db: Queryable, tenantId: string, keyId: string): Promise<ApiKeyRecord | null> {
  checkTenantId(tenantId);
  const { rows } = await db.query<ApiKeyRow>({
    text: `update api_keys set revoked_at = coalesce(revoked_at, now())
           where tenant_id = $1 and key_id = $2
           returning ${API_KEY_COLUMNS}`,
    values: [tenantId, keyId],
  });
  const row = rows[0];
  return row === undefined ? null : toRecord(row);
}

/** Options of {@link createKeyVerifier}. */
export interface KeyVerifierOptions {
  /**
   * How long a lookup (found, unknown or revoked) is reused. This is also how long a revoked
   * key keeps working on a server that verified it just before the revocation.
   */
  readonly cacheMs: number;
  /** The most keys kept; past it, the oldest lookup is dropped. */
  readonly maxEntries: number;
  /** The clock, in milliseconds; tests pass their own. */
  readonly nowMs?: () => number;
  /**
   * How often the keys seen in use are written to `last_used_at`, in one update;
   * {@link LAST_USED_INTERVAL_MS_DEFAULT} when absent, 0 never writes.
   */
  readonly lastUsedIntervalMs?: number;
}

/** Verifies bearer keys; see {@link createKeyVerifier}. */
export interface KeyVerifier {
  /** Resolves to the caller, or null for a malformed, unknown, revoked, expired or wrong key. */
  verify(bearer: string): Promise<Principal | null>;
  /** Writes the pending `last_used_at` times now (a failed write keeps them for the next try). */
  flushLastUsed(): Promise<void>;
  /** Stops the background writer after a last flush. */
  close(): Promise<void>;
}

/** A key as the verifier keeps it: who it is, the hash to compare secrets against, its expiry. */
interface StoredKey {
  readonly principal: Principal;
  readonly secretHash: Buffer;
  /** Epoch ms from which the key is refused; null never. */
  readonly expiresAtMs: number | null;
  /**
   * The secret's bytes once a call has shown that they hash to `secretHash`, so that the
   * following calls with this key compare bytes (in constant time) instead of hashing again;
   * it lives as long as the cached lookup. Null until then.
   */
  verifiedSecret: Buffer | null;
}

interface CacheEntry {
  readonly expiresAtMs: number;
  readonly lookup: Promise<StoredKey | null>;
}

/**
 * Creates the verifier behind `authorization: Bearer <key>`. `verify` takes the key itself
 * (without "Bearer "). A malformed key is refused without touching the database. Lookups by
 * key id are cached for `cacheMs`, found or not, in a map bounded by `maxEntries`, so the hot
 * path costs a map read and a byte comparison (a hash the first time a secret is seen) rather
 * than a round trip, and a flood of made-up keys
 * costs the database at most one query per key id per `cacheMs`. Concurrent requests for a
 * key id that is not cached share one query.
 *
 * Consequence: a revoked key is refused within `cacheMs` (the revocation delay), not at once.
 * An expired key is refused at once: the expiry is read with the key and compared on every call.
 * The keys seen in use are written to `last_used_at` in the background, once per
 * `lastUsedIntervalMs` (see {@link createLastUsedWriter}).
 */
export function createKeyVerifier(db: Queryable, options: KeyVerifierOptions): KeyVerifier {
  checkVerifierOptions(options);
  const nowMs = options.nowMs ?? Date.now;
  const cache = new Map<string, CacheEntry>();
  const lastUsed = createLastUsedWriter(db, options.lastUsedIntervalMs ?? LAST_USED_INTERVAL_MS_DEFAULT, options.maxEntries);

  function lookup(keyId: string): Promise<StoredKey | null> {
    const now = nowMs();
    const cached = cache.get(keyId);
    if (cached !== undefined && now < cached.expiresAtMs) return cached.lookup;
    const entry: CacheEntry = { expiresAtMs: now + options.cacheMs, lookup: loadKey(db, keyId) };
    // Re-inserting moves the key to the end of the map's insertion order, so the first key
    // is always the oldest lookup.
    cache.delete(keyId);
    cache.set(keyId, entry);
    evictOldest(cache, options.maxEntries);
    // A failed query (database down) is not an answer about the key: forget it so the next
    // request asks again instead of being refused for cacheMs.
    entry.lookup.catch(() => {
      if (cache.get(keyId) === entry) cache.delete(keyId);
    });
    return entry.lookup;
  }

  return {
    async verify(bearer: string): Promise<Principal | null> {
      const parsed = parseApiKey(bearer);
      if (parsed === null) return null;
      const stored = await lookup(parsed.keyId);
      if (stored === null) return null;
      if (!secretMatches(stored, parsed.secret)) return null;
      const now = nowMs();
      if (stored.expiresAtMs !== null && now >= stored.expiresAtMs) return null;
      lastUsed.record(parsed.keyId, now);
      return stored.principal;
    },
    flushLastUsed: lastUsed.flush,
    close: lastUsed.close,
  };
}

/**
 * Remembers when each key was last used and writes the times in one batched update every
 * `intervalMs`, so a key's `last_used_at` is written at most once per interval and process
 * and no call waits for it. At most `entriesMax` keys wait between two writes; a key seen
 * beyond that is written at the next interval it is seen in.
 */
function createLastUsedWriter(db: Queryable, intervalMs: number, entriesMax: number) {
  let pending = new Map<string, number>();
  let flushing: Promise<void> = Promise.resolve();
  const timer = intervalMs > 0 ? setInterval(() => void flush(), intervalMs) : null;
  timer?.unref();

  function record(keyId: string, atMs: number): void {
    if (timer === null || (pending.size >= entriesMax && !pending.has(keyId))) return;
    pending.set(keyId, Math.max(atMs, pending.get(keyId) ?? 0));
  }

  function flush(): Promise<void> {
    flushing = flushing.then(async () => {
      if (pending.size === 0) return;
      const batch = pending;
      pending = new Map();
      try {
        await db.query({
          name: "holdfast_api_key_last_used",
          text: `update api_keys k set last_used_at = greatest(k.last_used_at, u.at)
                 from unnest($1::text[], $2::timestamptz[]) as u(key_id, at)
                 where k.key_id = u.key_id`,
          values: [[...batch.keys()], [...batch.values()].map((ms) => new Date(ms))],
        });
      } catch {
        // The database is away: keep the times (merged with newer ones) for the next interval.
        for (const [keyId, atMs] of batch) record(keyId, atMs);
      }
    });
    return flushing;
  }

  async function close(): Promise<void> {
    if (timer !== null) clearInterval(timer);
    await flush();
  }

  return { record, flush, close };
}

/** Fetches a live key by id on the hot path, hence a named prepared statement. */
async function loadKey(db: Queryable, keyId: string): Promise<StoredKey | null> {
  const { rows } = await db.query<VerifyRow>({
    name: "holdfast_api_key_verify",
    text: `select tenant_id, role, wallet_id, secret_hash, expires_at, rate_per_second, rate_burst
           from api_keys where key_id = $1 and revoked_at is null`,
    values: [keyId],
  });
  const row = rows[0];
  // A stored hash of the wrong length could never match, and timingSafeEqual would throw on it.
  if (row === undefined || row.secret_hash.length !== SECRET_HASH_BYTES) return null;
  const rateLimit = rateLimitOf(row);
  const principal: Principal = Object.freeze({
    tenantId: row.tenant_id,
    keyId,
    role: row.role,
    walletId: row.wallet_id,
    ...(rateLimit === null ? {} : { rateLimit }),
  });
  return { principal, secretHash: row.secret_hash, expiresAtMs: row.expires_at?.getTime() ?? null, verifiedSecret: null };
}

interface VerifyRow {
  tenant_id: string;
  role: Role;
  wallet_id: string | null;
  secret_hash: Buffer;
  expires_at: Date | null;
  rate_per_second: number | null;
  rate_burst: number | null;
}

function rateLimitOf(row: { rate_per_second: number | null; rate_burst: number | null }): RateLimit | null {
  return row.rate_per_second === null || row.rate_burst === null ? null : Object.freeze({ perSecond: row.rate_per_second, burst: row.rate_burst });
}

function evictOldest(cache: Map<string, CacheEntry>, maxEntries: number): void {
  for (const keyId of cache.keys()) {
    if (cache.size <= maxEntries) return;
    cache.delete(keyId);
  }
}

/** Splits `hf_<key_id>_<secret>`, or returns null when the string is not shaped like a key. */
function parseApiKey(bearer: string): { keyId: string; secret: string } | null {
  if (bearer.length !== API_KEY_LENGTH) return null;
  const match = API_KEY_PATTERN.exec(bearer);
  if (match === null || match[1] === undefined || match[2] === undefined) return null;
  return { keyId: match[1], secret: match[2] };
}

/**
 * Whether the secret is the key's: equal (in constant time) to the secret last verified for this
 * cached key, or else hashing to its stored hash, then remembered as verified. A call with the
 * right key costs a byte comparison rather than a SHA-256 (0.8% of the service's CPU on a hot
 * wallet, docs/performance.md); a wrong secret is still hashed and compared with the hash, so it
 * takes as long as before whatever it shares with the right one.
 */
function secretMatches(stored: StoredKey, secret: string): boolean {
  const given = Buffer.from(secret, "utf8");
  const known = stored.verifiedSecret;
  if (known !== null && known.length === given.length && timingSafeEqual(given, known)) return true;
  if (!timingSafeEqual(hashSecret(secret), stored.secretHash)) return false;
  stored.verifiedSecret = given;
  return true;
}

/**
 * SHA-256 of the secret text. A slow password hash (scrypt, argon2) would add nothing: the
 * secret is 256 random bits, so no dictionary or brute-force attack on a stolen hash can
 * succeed, and a fast hash keeps verification cheap on every request.
 */
function hashSecret(secret: string): Buffer {
  return createHash("sha256").update(secret, "utf8").digest();
}

const API_KEY_COLUMNS =
  "key_id, tenant_id, name, role, wallet_id, created_at, revoked_at, expires_at, last_used_at, rate_per_second, rate_burst";

interface ApiKeyRow {
  key_id: string;
  tenant_id: string;
  name: string;
  role: Role;
  wallet_id: string | null;
  created_at: Date;
  revoked_at: Date | null;
  expires_at: Date | null;
  last_used_at: Date | null;
  rate_per_second: number | null;
  rate_burst: number | null;
}

function toRecord(row: ApiKeyRow): ApiKeyRecord {
  return {
    keyId: row.key_id,
    tenantId: row.tenant_id,
    name: row.name,
    role: row.role,
    walletId: row.wallet_id,
    createdAt: row.created_at,
    revokedAt: row.revoked_at,
    expiresAt: row.expires_at,
    lastUsedAt: row.last_used_at,
    rateLimit: rateLimitOf(row),
  };
}

function firstRow<T>(rows: readonly T[]): T {
  const row = rows[0];
  if (row === undefined) throw new Error("assertion failed: insert … returning produced no row");
  return row;
}

/**
 * A cursor time this module could have printed. The pattern admits impossible dates such as
 * February 30, which Postgres would reject with an error that is the caller's fault: a real
 * date survives a round trip through Date.
 */
function isCursorTime(text: string): boolean {
  if (!CURSOR_TIME_PATTERN.test(text)) return false;
  const ms = Date.parse(text);
  return !Number.isNaN(ms) && new Date(ms).toISOString().slice(0, 19) === text.slice(0, 19);
}

function isKeyId(text: string): boolean {
  return KEY_ID_PATTERN.test(text);
}

function normalizePageSize(pageSize: number | undefined): number {
  if (pageSize === undefined || pageSize === 0) return PAGE_SIZE_DEFAULT;
  if (!Number.isInteger(pageSize) || pageSize < 0) {
    throw new InvalidFieldError("page_size", `must be an integer from 0 to ${PAGE_SIZE_MAX}`);
  }
  return Math.min(pageSize, PAGE_SIZE_MAX);
}

function checkCreateInput(input: CreateApiKeyInput): string | null {
  checkTenantId(input.tenantId);
  checkName("name", input.name);
  if (!ROLES.includes(input.role)) throw new InvalidFieldError("role", `must be one of ${ROLES.join(", ")}`);
  const walletId = input.walletId === undefined || input.walletId === "" ? null : input.walletId;
  if (walletId === null) return null;
  if (!WALLET_ID_PATTERN.test(walletId)) {
    throw new InvalidFieldError("wallet_id", "must be 1-128 characters of A-Z a-z 0-9 _ : -");
  }
  if (input.role === "admin") throw new InvalidFieldError("wallet_id", "an admin key cannot be scoped to a wallet");
  return walletId;
}

/** An expiry must lie ahead, and not absurdly far (see {@link KEY_EXPIRY_MS_MAX}). */
function checkExpiry(expiresAt: Date | undefined): Date | null {
  if (expiresAt === undefined) return null;
  const ms = expiresAt.getTime();
  if (Number.isNaN(ms) || ms <= Date.now()) throw new InvalidFieldError("expires_at", "must be in the future");
  if (ms > Date.now() + KEY_EXPIRY_MS_MAX) throw new InvalidFieldError("expires_at", "must be at most 10 years ahead");
  return expiresAt;
}

/** A key's own rate: both values whole numbers from 1 to {@link RATE_LIMIT_VALUE_MAX}. */
function checkRateLimit(rateLimit: RateLimit | undefined): RateLimit | null {
  if (rateLimit === undefined) return null;
  for (const [field, value] of [["rate_limit.requests_per_second", rateLimit.perSecond], ["rate_limit.burst", rateLimit.burst]] as const) {
    if (!Number.isInteger(value) || value < 1 || value > RATE_LIMIT_VALUE_MAX) {
      throw new InvalidFieldError(field, `must be an integer from 1 to ${RATE_LIMIT_VALUE_MAX}`);
    }
  }
  return rateLimit;
}

function checkTenantId(tenantId: string): void {
  if (!isUuid(tenantId)) throw new InvalidFieldError("tenant_id", "must be a UUID");
}

/** Counts code points, as Postgres's length() does, not UTF-16 units. */
function checkName(field: string, name: string): void {
  const length = [...name].length;
  if (length < 1 || length > NAME_LENGTH_MAX) {
    throw new InvalidFieldError(field, `must be 1-${NAME_LENGTH_MAX} characters`);
  }
}

function checkVerifierOptions(options: KeyVerifierOptions): void {
  if (!Number.isInteger(options.cacheMs) || options.cacheMs < 0) {
    throw new RangeError("cacheMs must be an integer >= 0");
  }
  if (!Number.isInteger(options.maxEntries) || options.maxEntries < 1) {
    throw new RangeError("maxEntries must be an integer >= 1");
  }
  const lastUsedIntervalMs = options.lastUsedIntervalMs ?? LAST_USED_INTERVAL_MS_DEFAULT;
  if (!Number.isInteger(lastUsedIntervalMs) || lastUsedIntervalMs < 0) {
    throw new RangeError("lastUsedIntervalMs must be an integer >= 0");
  }
}
