/**
 * How every call goes out: commands get an idempotency key unless the caller gave one, and
 * transient failures are retried with the same request, so with the same key, under a bounded
 * backoff. A retried command is therefore applied at most once: the server answers a repeated
 * key with the original response (`replayed = true`), refusals included
 * (docs/architecture.md, "Domain model", the idempotency record). Business refusals and bad
 * input are answers, never retried. Errors leave as {@link HoldfastError}s.
 *
 * @module
 */
import type { DescMethod, DescService } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, type CallOptions, type Client, type Transport } from "@connectrpc/connect";
import { HoldfastError } from "./errors.js";

/** Attempts of one call, the first included. */
export const RETRY_ATTEMPTS_DEFAULT = 4;
export const RETRY_ATTEMPTS_MAX = 10;
/** The first backoff; each retry doubles it, up to the maximum, with full jitter. */
export const RETRY_DELAY_MS_INITIAL_DEFAULT = 100;
export const RETRY_DELAY_MS_MAX_DEFAULT = 2_000;
/** No backoff waits longer than a minute, whatever the options say. */
export const RETRY_DELAY_MS_LIMIT = 60_000;
/**
 * How long one attempt may wait for its answer. Past it the attempt ends with
 * DEADLINE_EXCEEDED and is retried with the same key, so a lost answer costs this much.
 */
export const ATTEMPT_TIMEOUT_MS_DEFAULT = 10_000;
export const ATTEMPT_TIMEOUT_MS_MAX = 600_000;

/** How the client retries transient failures. */
export interface RetryOptions {
  /** Attempts of one call, the first included: 1 (no retry) to 10; default 4. */
  readonly attemptsMax?: number;
  /** The first backoff in ms (then doubled per retry, with full jitter): 0-60000; default 100. */
  readonly delayMsInitial?: number;
  /** The longest backoff in ms: 0-60000; default 2000. */
  readonly delayMsMax?: number;
}

/**
 * Per-call options, connect-es's own: cancel with `signal` (which also ends the retries);
 * `timeoutMs` bounds each attempt (1-600000 ms; default the client's `timeoutMs`), not the
 * whole call; `headers` adds request headers.
 */
export type HoldfastCallOptions = CallOptions;

/** The retry policy with its bounds applied. */
export interface RetryPolicy {
  readonly attemptsMax: number;
  readonly delayMsInitial: number;
  readonly delayMsMax: number;
  readonly attemptTimeoutMs: number;
}

/** Applies the bounds to the options, so that no typo turns a bound into none. */
export function retryPolicy(options: RetryOptions = {}, attemptTimeoutMs = ATTEMPT_TIMEOUT_MS_DEFAULT): RetryPolicy {
  return {
    attemptsMax: bounded("retry.attemptsMax", options.attemptsMax ?? RETRY_ATTEMPTS_DEFAULT, 1, RETRY_ATTEMPTS_MAX),
    delayMsInitial: bounded("retry.delayMsInitial", options.delayMsInitial ?? RETRY_DELAY_MS_INITIAL_DEFAULT, 0, RETRY_DELAY_MS_LIMIT),
    delayMsMax: bounded("retry.delayMsMax", options.delayMsMax ?? RETRY_DELAY_MS_MAX_DEFAULT, 0, RETRY_DELAY_MS_LIMIT),
    attemptTimeoutMs: bounded("timeoutMs", attemptTimeoutMs, 1, ATTEMPT_TIMEOUT_MS_MAX),
  };
}

function bounded(name: string, value: number, min: number, max: number): number {
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new RangeError(`Holdfast: ${name} must be an integer from ${min} to ${max}, not ${String(value)}`);
  }
  return value;
}

/**
 * A fresh idempotency key: a random UUID (version 4). `crypto.getRandomValues` exists in Node
 * and in every browser, also outside secure contexts where `randomUUID` does not.
 */
export function newIdempotencyKey(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[6] = (bytes[6]! & 0x0f) | 0x40;
  bytes[8] = (bytes[8]! & 0x3f) | 0x80;
  const hex = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/** Node's error codes of a connection that broke before the answer arrived. */
const CONNECTION_ERROR_CODES = new Set([
  "ECONNRESET",
  "ECONNREFUSED",
  "EPIPE",
  "ETIMEDOUT",
  "ENETUNREACH",
  "EHOSTUNREACH",
  "ERR_STREAM_PREMATURE_CLOSE",
  "ERR_HTTP2_GOAWAY_SESSION",
  "ERR_HTTP2_INVALID_SESSION",
  "ERR_HTTP2_SESSION_ERROR",
  "ERR_HTTP2_STREAM_CANCEL",
  "ERR_HTTP2_STREAM_ERROR",
]);

/**
 * True for a failure that says nothing about the command: the server is unavailable or
 * draining, the attempt's deadline passed before an answer came, or the connection broke
 * (reset, refused, a fetch that failed in a browser). An answer of the server with any other
 * code (a refusal, bad input, a denied key, OVERLOADED) is not transient.
 */
export function isTransient(error: unknown): boolean {
  const connectError = ConnectError.from(error);
  if (connectError.code === Code.Unavailable || connectError.code === Code.DeadlineExceeded) return true;
  if (connectError.code === Code.Canceled) return false;
  for (let cause: unknown = connectError.cause, depth = 0; cause instanceof Error && depth < 8; cause = cause.cause, depth++) {
    const code = (cause as { code?: unknown }).code;
    if (typeof code === "string" && CONNECTION_ERROR_CODES.has(code)) return true;
    // fetch() rejects with a TypeError when the network fails (a browser's "Failed to fetch",
    // undici's "fetch failed"); an answer, even a broken one, never does.
    if (cause instanceof TypeError && /fetch|network/i.test(cause.message)) return true;
  }
  return false;
}

/** Waits `ms`, or less when `signal` aborts (the caller's cancellation ends the retries). */
export function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const timer = setTimeout(done, ms);
    signal?.addEventListener("abort", done, { once: true });
    function done() {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    }
  });
}

/** The backoff before retry number `retry` (1, 2, ...): full jitter under a doubling cap. */
export function backoffMs(policy: RetryPolicy, retry: number): number {
  const cap = Math.min(policy.delayMsMax, policy.delayMsInitial * 2 ** Math.min(retry - 1, 30));
  return Math.floor(Math.random() * (cap + 1));
}

/**
 * Runs `attempt` until it answers, fails for good, or the attempts run out; each attempt gets
 * its own deadline. Every failure leaves as a HoldfastError.
 */
export async function withRetry<T>(
  policy: RetryPolicy,
  options: HoldfastCallOptions,
  retryable: boolean,
  attempt: (options: CallOptions) => Promise<T>,
): Promise<T> {
  const callOptions: CallOptions = {
    ...options,
    timeoutMs: options.timeoutMs === undefined ? policy.attemptTimeoutMs : bounded("timeoutMs", options.timeoutMs, 1, ATTEMPT_TIMEOUT_MS_MAX),
  };
  for (let n = 1; ; n++) {
    try {
      return await attempt(callOptions);
    } catch (error) {
      const last = !retryable || n >= policy.attemptsMax || options.signal?.aborted === true || !isTransient(error);
      if (last) throw HoldfastError.from(error);
      await sleep(backoffMs(policy, n), options.signal);
      if (options.signal?.aborted) throw HoldfastError.from(error);
    }
  }
}

/** Reads with no effect but their answer, safe to repeat without a key. */
const READ_METHOD = /^(Get|List)[A-Z]|^QuoteUsage$/;

/** True when the method's request has an `idempotency_key` field. */
function takesIdempotencyKey(method: DescMethod): boolean {
  return method.input.fields.some((field) => field.name === "idempotency_key");
}

/**
 * A connect-es client of `service` whose unary calls fill an empty `idempotencyKey` with a new
 * key and retry transient failures with the same request. Only commands that take a key and
 * reads are retried: a write without a key (CreateWallet, the admin and webhook writes) could
 * apply twice, so its transient failure reaches the caller, who knows whether to repeat it.
 * Streaming methods pass through unchanged; the wallet's watch() handles its own reconnects.
 */
export function createRetryingClient<S extends DescService>(service: S, transport: Transport, policy: RetryPolicy): Client<S> {
  const base = createClient(service, transport) as unknown as Record<string, (request: object, options?: CallOptions) => unknown>;
  const client: Record<string, unknown> = {};
  for (const method of service.methods) {
    const call = base[method.localName]!;
    if (method.methodKind !== "unary") {
      client[method.localName] = call;
      continue;
    }
    const keyed = takesIdempotencyKey(method);
    const retryable = keyed || READ_METHOD.test(method.name);
    client[method.localName] = (request: Record<string, unknown>, options: HoldfastCallOptions = {}) => {
      const message = keyed && !request["idempotencyKey"] ? { ...request, idempotencyKey: newIdempotencyKey() } : request;
      return withRetry(policy, options, retryable, (callOptions) => call(message, callOptions) as Promise<unknown>);
    };
  }
  return client as Client<S>;
}
