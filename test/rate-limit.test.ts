// Goal: no key and no tenant can take the whole ledger (issue 12, finding 7). Each key has a
// token bucket and so does each tenant; a call beyond either is RESOURCE_EXHAUSTED (reason
// OVERLOADED) with the wait in `retry_after_ms`; other keys keep working; the tenant's bucket
// caps the sum of its keys; a key's own rate (CreateApiKey's rate_limit) replaces the default;
// each tenant has a cap on open streams; memory stays bounded; no call costs a query.
// Method: the limiter alone with a manual clock for the arithmetic, then a real ledger with
// tiny limits (1 call/s, bursts of 3 per key and 5 per tenant), one fresh tenant per test so
// their buckets do not mix, over Connect and gRPC.
import { Code, ConnectError } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { ErrorDetailSchema, type ErrorDetail } from "@holdfast/gen/holdfast/v1/errors_pb";
import { LedgerService } from "@holdfast/gen/holdfast/v1/ledger_pb";
import { createApiKey, createTenant, type Principal } from "@holdfast/ledger/auth/api-keys";
import { createRateLimiter, RateLimitedError } from "@holdfast/ledger/rpc/rate-limit";
import { key } from "./support/ledger.js";
import { startTestServer } from "./support/server.js";

const principal = (keyId: string, tenantId = "t1", extra: Partial<Principal> = {}): Principal => ({ tenantId, keyId, role: "writer", walletId: null, ...extra });

function manualClock() {
  let now = 1_000_000;
  return { nowMs: () => now, advance: (ms: number) => void (now += ms) };
}

function refusal(call: () => void): RateLimitedError {
  try {
    call();
  } catch (err) {
    if (err instanceof RateLimitedError) return err;
    throw err;
  }
  throw new Error("expected a RateLimitedError, the call was admitted");
}

describe("the limiter", () => {
  it("admits a burst, refuses the next call with the wait, and refills at the rate", () => {
    const clock = manualClock();
    const limiter = createRateLimiter({ key: { perSecond: 10, burst: 3 }, tenant: null, tenantStreamsMax: 10, bucketsMax: 100, nowMs: clock.nowMs });
    for (let i = 0; i < 3; i++) limiter.take(principal("a"));
    const err = refusal(() => limiter.take(principal("a")));
    expect(err.reason).toBe("OVERLOADED");
    expect(err.metadata).toEqual({ retry_after_ms: "100", limit: "api_key", requests_per_second: "10", burst: "3" });
    clock.advance(60);
    expect(refusal(() => limiter.take(principal("a"))).metadata["retry_after_ms"]).toBe("40");
    clock.advance(40);
    limiter.take(principal("a"));
    expect(() => limiter.take(principal("a"))).toThrow(RateLimitedError);
  });

  it("keeps keys apart, and the tenant's bucket caps all its keys together", () => {
    const clock = manualClock();
    const limiter = createRateLimiter({ key: { perSecond: 1, burst: 3 }, tenant: { perSecond: 1, burst: 5 }, tenantStreamsMax: 10, bucketsMax: 100, nowMs: clock.nowMs });
    for (let i = 0; i < 3; i++) limiter.take(principal("a"));
    expect(refusal(() => limiter.take(principal("a"))).metadata["limit"]).toBe("api_key");
    // Another key is unaffected by a's empty bucket...
    limiter.take(principal("b"));
    limiter.take(principal("b"));
    // ...until the tenant's five calls are spent; a key of another tenant still gets through.
    const err = refusal(() => limiter.take(principal("c")));
    expect(err.metadata).toMatchObject({ limit: "tenant", burst: "5", retry_after_ms: "1000" });
    limiter.take(principal("d", "t2"));
  });

  it("gives a key with its own rate that rate instead of the default", () => {
    const clock = manualClock();
    const limiter = createRateLimiter({ key: { perSecond: 1, burst: 1 }, tenant: null, tenantStreamsMax: 10, bucketsMax: 100, nowMs: clock.nowMs });
    const generous = principal("g", "t1", { rateLimit: { perSecond: 100, burst: 50 } });
    for (let i = 0; i < 50; i++) limiter.take(generous);
    expect(refusal(() => limiter.take(generous)).metadata).toMatchObject({ limit: "api_key", burst: "50", retry_after_ms: "10" });
    limiter.take(principal("plain"));
    expect(() => limiter.take(principal("plain"))).toThrow(RateLimitedError);
  });

  it("puts no limit where none is configured", () => {
    const limiter = createRateLimiter({ key: null, tenant: null, tenantStreamsMax: 10, bucketsMax: 100 });
    for (let i = 0; i < 10_000; i++) limiter.take(principal("a"));
    expect(limiter.size()).toMatchObject({ keyBuckets: 0, tenantBuckets: 0 });
  });

  it("keeps memory bounded: full idle buckets go, and never more than bucketsMax", () => {
    const clock = manualClock();
    const limiter = createRateLimiter({ key: { perSecond: 10, burst: 10 }, tenant: { perSecond: 1000, burst: 1000 }, tenantStreamsMax: 10, bucketsMax: 50, nowMs: clock.nowMs });
    for (let i = 0; i < 500; i++) limiter.take(principal(`k${i}`, `t${i}`));
    expect(limiter.size().keyBuckets).toBeLessThanOrEqual(50);
    expect(limiter.size().tenantBuckets).toBeLessThanOrEqual(50);
    // A second later every bucket is full again: each new call sweeps two of them away.
    clock.advance(1000);
    const busy = principal("busy", "t-busy", { rateLimit: { perSecond: 1000, burst: 1000 } });
    for (let i = 0; i < 30; i++) limiter.take(busy);
    expect(limiter.size()).toMatchObject({ keyBuckets: 1, tenantBuckets: 1 });
  });

  it("caps a tenant's open streams and counts a closed one once", () => {
    const limiter = createRateLimiter({ key: null, tenant: null, tenantStreamsMax: 2, bucketsMax: 100 });
    const first = limiter.openStream("t1");
    limiter.openStream("t1");
    expect(() => limiter.openStream("t1")).toThrow(/2 streams open/);
    limiter.openStream("t2");
    first();
    first();
    limiter.openStream("t1");
    expect(() => limiter.openStream("t1")).toThrow(/2 streams open/);
  });
});

describe("over the wire", () => {
  let s: Awaited<ReturnType<typeof startTestServer>>;

  beforeAll(async () => {
    s = await startTestServer({
      HOLDFAST_RATE_LIMIT_KEY_PER_SECOND: "1",
      HOLDFAST_RATE_LIMIT_KEY_BURST: "3",
      HOLDFAST_RATE_LIMIT_TENANT_PER_SECOND: "1",
      HOLDFAST_RATE_LIMIT_TENANT_BURST: "5",
      HOLDFAST_TENANT_STREAMS_MAX: "2",
    });
  });
  afterAll(async () => {
    await s?.close();
  });

  /** A fresh tenant with a funded wallet `w`, and a function issuing its keys. */
  async function freshTenant() {
    const { tenantId } = await createTenant(s.app.pool, `rate-${key()}`);
    await s.app.ledger.deposit({ tenantId, scopeWalletId: null }, { walletId: "w", asset: "USD", amount: 100n, idempotencyKey: key(), metadata: {} });
    const issue = async (role: "admin" | "writer" | "reader" = "reader") => (await createApiKey(s.app.pool, { tenantId, name: role, role })).secret;
    return { tenantId, issue };
  }

  async function refused(call: Promise<unknown>): Promise<ErrorDetail> {
    const err = await call.then(
      () => {
        throw new Error("expected RESOURCE_EXHAUSTED, the call succeeded");
      },
      (e: unknown) => ConnectError.from(e),
    );
    expect(Code[err.code]).toBe(Code[Code.ResourceExhausted]);
    return err.findDetails(ErrorDetailSchema)[0]!;
  }

  it.each(["connect", "grpc"] as const)("refuses a key's burst beyond its bucket with retry_after_ms, other keys unaffected (%s)", async (protocol) => {
    const tenant = await freshTenant();
    const busy = s.client(LedgerService, protocol, await tenant.issue());
    for (let i = 0; i < 3; i++) await busy.getWallet({ walletId: "w" });
    const detail = await refused(busy.getWallet({ walletId: "w" }));
    expect(detail.reason).toBe("OVERLOADED");
    expect(detail.metadata["limit"]).toBe("api_key");
    const retryAfterMs = Number(detail.metadata["retry_after_ms"]);
    expect(retryAfterMs).toBeGreaterThan(0);
    expect(retryAfterMs).toBeLessThanOrEqual(1000);
    // The tenant has two of its five calls left, and another key may spend them.
    const calm = s.client(LedgerService, protocol, await tenant.issue());
    expect((await calm.getWallet({ walletId: "w" })).wallet?.walletId).toBe("w");
  });

  it("caps the sum of a tenant's keys with the tenant's bucket", async () => {
    const tenant = await freshTenant();
    const [a, b] = [s.client(LedgerService, "connect", await tenant.issue()), s.client(LedgerService, "connect", await tenant.issue())];
    for (let i = 0; i < 3; i++) await a.getWallet({ walletId: "w" });
    await b.getWallet({ walletId: "w" });
    await b.getWallet({ walletId: "w" });
    const detail = await refused(b.getWallet({ walletId: "w" }));
    expect(detail.metadata).toMatchObject({ limit: "tenant", requests_per_second: "1", burst: "5" });
    // Another tenant's keys do not share that bucket.
    const other = await freshTenant();
    await s.client(LedgerService, "connect", await other.issue()).getWallet({ walletId: "w" });
  });

  it("applies a key's own rate instead of the default, lower or higher", async () => {
    const tenant = await freshTenant();
    const ownRate = async (perSecond: number, burst: number) =>
      s.client(LedgerService, "connect", (await createApiKey(s.app.pool, { tenantId: tenant.tenantId, name: "own", role: "reader", rateLimit: { perSecond, burst } })).secret);
    const slow = await ownRate(1, 1);
    await slow.getWallet({ walletId: "w" });
    expect((await refused(slow.getWallet({ walletId: "w" }))).metadata).toMatchObject({ limit: "api_key", burst: "1" });
    // Four calls in a row, one more than the default burst of 3, and the fifth is the key's.
    const fast = await ownRate(1, 4);
    for (let i = 0; i < 4; i++) await fast.getWallet({ walletId: "w" });
    expect((await refused(fast.getWallet({ walletId: "w" }))).metadata).toMatchObject({ limit: "api_key", burst: "4" });
  });

  it("caps a tenant's open WatchWallet streams, and frees the slot when one closes", async () => {
    const tenant = await freshTenant();
    const watch = async () => {
      const abort = new AbortController();
      const stream = s.client(LedgerService, "connect", await tenant.issue()).watchWallet({ walletId: "w" }, { signal: abort.signal })[Symbol.asyncIterator]();
      return { first: stream.next(), close: () => abort.abort() };
    };
    const one = await watch();
    const two = await watch();
    expect((await one.first).value?.eventType).toBe("snapshot");
    expect((await two.first).value?.eventType).toBe("snapshot");
    const three = await watch();
    const detail = await refused(three.first);
    expect(detail.metadata).toEqual({ tenant_streams_max: "2" });
    one.close();
    await vi.waitFor(
      async () => {
        const again = await watch();
        expect((await again.first).value?.eventType).toBe("snapshot");
        again.close();
      },
      { timeout: 10_000, interval: 500 },
    );
    two.close();
  });

  it("costs no database query: a refused call runs only the key lookup", async () => {
    const tenant = await freshTenant();
    const client = s.client(LedgerService, "connect", await tenant.issue());
    for (let i = 0; i < 3; i++) await client.getWallet({ walletId: "w" });
    const spy = vi.spyOn(s.app.pool, "query");
    await refused(client.getWallet({ walletId: "w" }));
    const names = spy.mock.calls.map(([q]) => (q as { name?: string }).name);
    spy.mockRestore();
    // HOLDFAST_AUTH_CACHE_MS=0 here, so the key is looked up on every call; nothing else runs.
    expect(names).toEqual(["holdfast_api_key_verify"]);
  });
});
