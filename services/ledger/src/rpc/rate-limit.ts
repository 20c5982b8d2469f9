/**
 * Rate limits per API key and per tenant, and a cap on each tenant's open streams.
 *
 * Token buckets in this process's memory: a call takes one token from its key's bucket and one
 * from its tenant's, or is refused with RESOURCE_EXHAUSTED (reason OVERLOADED) and the wait
 * until a token is back in the ErrorDetail's `retry_after_ms`. Nothing touches the database:
 * a key's own rate (CreateApiKey's `rate_limit`) comes with the key from the verifier's cache.
 * The price is that limits hold per replica: N replicas behind a balancer admit up to N times
 * the rate (docs/security.md, "Rate limits").
 *
 * Memory is bounded: buckets live in maps kept in least-recently-used order, at most
 * `bucketsMax` of each kind, and a bucket that has refilled completely is dropped, since a new
 * one would be the same. Open streams are counted per tenant only while some are open.
 *
 * @module
 */
import { HoldfastError } from "@holdfast/common/errors";
import type { Principal, RateLimit } from "../auth/api-keys.js";

/** Options of {@link createRateLimiter}. */
export interface RateLimiterOptions {
  /** Each key's bucket unless the key has its own; null puts no limit on keys without one. */
  readonly key: RateLimit | null;
  /** Each tenant's bucket, shared by all its keys; null puts no limit on tenants. */
  readonly tenant: RateLimit | null;
  /** Most server streams (WatchWallet) one tenant may hold open in this process. */
  readonly tenantStreamsMax: number;
  /** Most buckets kept of each kind (keys, tenants). */
  readonly bucketsMax: number;
  /** The clock, in milliseconds; tests pass their own. */
  readonly nowMs?: () => number;
}

/** See {@link createRateLimiter}. */
export interface RateLimiter {
  /** Takes a token for a call of `principal`, or throws a {@link RateLimitedError}. */
  take(principal: Principal): void;
  /**
   * Counts an open stream of the tenant, or throws a HoldfastError (OVERLOADED) when the
   * tenant has `tenantStreamsMax` open. Returns the function that counts it closed (once).
   */
  openStream(tenantId: string): () => void;
  /** Buckets held and streams open, for tests and diagnostics. */
  size(): { keyBuckets: number; tenantBuckets: number; tenantsStreaming: number };
}

/** A refusal of the rate limit: RESOURCE_EXHAUSTED, reason OVERLOADED, with the wait. */
export class RateLimitedError extends HoldfastError {
  override readonly name: string = "RateLimitedError";

  constructor(limit: "api_key" | "tenant", spec: RateLimit, retryAfterMs: number) {
    const whose = limit === "api_key" ? "this API key" : "this tenant";
    super("OVERLOADED", `rate limit of ${whose} reached (${spec.perSecond}/s, burst ${spec.burst}); retry after ${retryAfterMs} ms`, {
      metadata: {
        retry_after_ms: String(retryAfterMs),
        limit,
        requests_per_second: String(spec.perSecond),
        burst: String(spec.burst),
      },
    });
  }
}

/** Idle buckets checked for removal per call: enough to keep up with one new bucket per call. */
const IDLE_SWEEP_PER_CALL_MAX = 2;

interface Bucket {
  tokens: number;
  atMs: number;
  spec: RateLimit;
}

/** Creates the limiter the auth interceptor consults on every call (see the module comment). */
export function createRateLimiter(options: RateLimiterOptions): RateLimiter {
  const nowMs = options.nowMs ?? Date.now;
  const keys = new Map<string, Bucket>();
  const tenants = new Map<string, Bucket>();
  const streams = new Map<string, number>();

  function take(principal: Principal): void {
    const now = nowMs();
    const keySpec = principal.rateLimit ?? options.key;
    const keyBucket = keySpec === null ? null : bucketOf(keys, principal.keyId, keySpec, now, options.bucketsMax);
    const tenantBucket = options.tenant === null ? null : bucketOf(tenants, principal.tenantId, options.tenant, now, options.bucketsMax);
    if (keyBucket !== null && keyBucket.tokens < 1) {
      throw new RateLimitedError("api_key", keyBucket.spec, waitMs(keyBucket));
    }
    if (tenantBucket !== null && tenantBucket.tokens < 1) {
      throw new RateLimitedError("tenant", tenantBucket.spec, waitMs(tenantBucket));
    }
    // Both have a token, so both pay: a call refused by one bucket costs the other nothing.
    if (keyBucket !== null) keyBucket.tokens -= 1;
    if (tenantBucket !== null) tenantBucket.tokens -= 1;
  }

  function openStream(tenantId: string): () => void {
    const open = streams.get(tenantId) ?? 0;
    if (open >= options.tenantStreamsMax) {
      throw new HoldfastError("OVERLOADED", `this tenant has ${options.tenantStreamsMax} streams open; close one first`, {
        metadata: { tenant_streams_max: String(options.tenantStreamsMax) },
      });
    }
    streams.set(tenantId, open + 1);
    let closed = false;
    return () => {
      if (closed) return;
      closed = true;
      const left = (streams.get(tenantId) ?? 1) - 1;
      if (left > 0) streams.set(tenantId, left);
      else streams.delete(tenantId);
    };
  }

  return {
    take,
    openStream,
    size: () => ({ keyBuckets: keys.size, tenantBuckets: tenants.size, tenantsStreaming: streams.size }),
  };
}

/**
 * The bucket of `id`, refilled to `now` and moved to the end of the map (most recently used).
 * Drops idle full buckets from the front, and the least recently used beyond `bucketsMax`.
 */
function bucketOf(buckets: Map<string, Bucket>, id: string, spec: RateLimit, now: number, bucketsMax: number): Bucket {
  // Sweeping first may drop this very bucket when it is full, which is the same as keeping it.
  sweepIdle(buckets, now);
  let bucket = buckets.get(id);
  if (bucket === undefined) {
    bucket = { tokens: spec.burst, atMs: now, spec };
  } else {
    refill(bucket, now);
    buckets.delete(id);
  }
  buckets.set(id, bucket);
  for (const oldest of buckets.keys()) {
    if (buckets.size <= bucketsMax) break;
    buckets.delete(oldest);
  }
  return bucket;
}

function refill(bucket: Bucket, now: number): void {
  const elapsedMs = Math.max(0, now - bucket.atMs);
  bucket.tokens = Math.min(bucket.spec.burst, bucket.tokens + (elapsedMs * bucket.spec.perSecond) / 1000);
  bucket.atMs = now;
}

/** Removes up to {@link IDLE_SWEEP_PER_CALL_MAX} least recently used buckets that are full again. */
function sweepIdle(buckets: Map<string, Bucket>, now: number): void {
  let checked = 0;
  for (const [id, bucket] of buckets) {
    if (checked++ >= IDLE_SWEEP_PER_CALL_MAX) return;
    const tokens = bucket.tokens + (Math.max(0, now - bucket.atMs) * bucket.spec.perSecond) / 1000;
    if (tokens < bucket.spec.burst) return;
    buckets.delete(id);
  }
}

/** Milliseconds until the bucket holds one whole token again (at least 1). */
function waitMs(bucket: Bucket): number {
  return Math.max(1, Math.ceil(((1 - bucket.tokens) * 1000) / bucket.spec.perSecond));
}
