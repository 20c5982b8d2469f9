/**
 * The contract between the delivery loop and one billing engine, and the HTTP plumbing every
 * engine shares: timeouts, Retry-After, and the rule for which answers are worth retrying.
 *
 * @module
 */
import type { SinkConfig } from "../config.js";
import type { BillableUsage } from "../mapping.js";

/** The engine's answer about one usage record of a request. */
export type ItemResult =
  /** Accepted, or already held under the same idempotency key (a duplicate counts as delivered). */
  | { readonly status: "accepted" }
  /** Refused for good because of this very record (a 4xx naming it). */
  | { readonly status: "rejected"; readonly httpStatus: number; readonly answer: string }
  /**
   * The whole request was refused for good without saying which record is at fault; the
   * delivery loop splits the request to find it.
   */
  | { readonly status: "batch_rejected"; readonly httpStatus: number; readonly answer: string }
  /** Not stored because a neighbour in the request was refused; send again at once. */
  | { readonly status: "resend" }
  /** A transient failure (network, timeout, 429, 5xx, bad credentials); retry after a delay. */
  | { readonly status: "retry"; readonly httpStatus: number | null; readonly retryAfterMs: number | null; readonly answer: string };

/** One billing engine. */
export interface Sink {
  readonly config: SinkConfig;
  /**
   * Sends up to `config.batchSizeMax` records and returns one result per record, in order.
   * Never throws for an engine's answer or a network failure: those are results.
   */
  send(batch: readonly BillableUsage[], signal: AbortSignal): Promise<ItemResult[]>;
  /** The request body the sink would send for one record, for the dead-letter table. */
  describe(usage: BillableUsage): unknown;
}

/** Longest engine answer kept in a result (and so in the dead-letter table). */
export const ANSWER_LENGTH_MAX = 2000;
/**
 * Most bytes of an engine's answer read: enough for {@link ANSWER_LENGTH_MAX} characters of
 * UTF-8 (at most 4 bytes each). The rest is never read, so an engine (or whatever answers at
 * its address) cannot make the worker buffer a huge or endless body.
 */
export const ANSWER_READ_BYTES_MAX = 4 * ANSWER_LENGTH_MAX;

/** What one HTTP exchange came to. */
export type HttpOutcome =
  | { readonly kind: "answer"; readonly status: number; readonly body: string; readonly retryAfterMs: number | null }
  | { readonly kind: "network"; readonly error: string };

/** Posts `body` with a timeout; network failures and timeouts are outcomes, not exceptions. */
export async function post(
  url: string,
  headers: Record<string, string>,
  body: string,
  timeoutMs: number,
  signal: AbortSignal,
): Promise<HttpOutcome> {
  try {
    const response = await fetch(url, {
      method: "POST",
      headers,
      body,
      signal: AbortSignal.any([signal, AbortSignal.timeout(timeoutMs)]),
      redirect: "error",
    });
    const text = await readCapped(response, ANSWER_READ_BYTES_MAX);
    return {
      kind: "answer",
      status: response.status,
      body: text.slice(0, ANSWER_LENGTH_MAX),
      retryAfterMs: parseRetryAfter(response.headers.get("retry-after")),
    };
  } catch (error) {
    const err = error as Error & { cause?: { code?: string } };
    return { kind: "network", error: `${err.name}: ${err.cause?.code ?? err.message}` };
  }
}

/**
 * The first `bytesMax` bytes of a response body as text; the rest is not read, and the body is
 * cancelled so the connection does not wait for it. A character cut at the end decodes as U+FFFD.
 */
export async function readCapped(response: Response, bytesMax: number): Promise<string> {
  if (response.body === null) return "";
  const reader = response.body.getReader();
  const chunks: Uint8Array[] = [];
  let bytes = 0;
  try {
    while (bytes < bytesMax) {
      const { done, value } = await reader.read();
      if (done) break;
      chunks.push(value);
      bytes += value.byteLength;
    }
  } finally {
    await reader.cancel().catch(() => undefined);
  }
  return new TextDecoder().decode(Buffer.concat(chunks).subarray(0, bytesMax));
}

/** Retry-After in milliseconds, from delta-seconds or an HTTP date; null when absent or bad. */
export function parseRetryAfter(value: string | null, now: number = Date.now()): number | null {
  if (value === null) return null;
  const trimmed = value.trim();
  if (/^\d{1,9}$/.test(trimmed)) return Number(trimmed) * 1000;
  const at = Date.parse(trimmed);
  return Number.isNaN(at) ? null : Math.max(0, at - now);
}

/**
 * The default reading of an answer for a whole request:
 * - 2xx: accepted;
 * - 408, 425, 429 and 5xx: transient;
 * - 401, 403, 404, 405: the sink is misconfigured (key, URL). Retrying cannot fix it, but
 *   neither is the usage at fault: dead-lettering every record until an operator fixes the key
 *   would be worse than waiting, so these retry (and are logged loudly) like an outage;
 * - 413: too large, split like any other whole-request refusal;
 * - any other 4xx: refused for good.
 */
export function classify(outcome: HttpOutcome): ItemResult {
  if (outcome.kind === "network") return { status: "retry", httpStatus: null, retryAfterMs: null, answer: outcome.error };
  const { status, body, retryAfterMs } = outcome;
  if (status >= 200 && status < 300) return { status: "accepted" };
  if (status === 408 || status === 425 || status === 429 || status >= 500 || [401, 403, 404, 405].includes(status)) {
    return { status: "retry", httpStatus: status, retryAfterMs, answer: body };
  }
  if (status >= 400) return { status: "batch_rejected", httpStatus: status, answer: body };
  return { status: "retry", httpStatus: status, retryAfterMs, answer: `unexpected HTTP ${status}` };
}

/** The same result for every record of a request. */
export function forAll(count: number, result: ItemResult): ItemResult[] {
  return Array.from({ length: count }, () => result);
}

/** The Authorization header of a Bearer-token engine, when the sink has a secret. */
export function bearer(config: SinkConfig): Record<string, string> {
  return config.secret === null ? {} : { authorization: `Bearer ${config.secret}` };
}

/** RFC 3339 with milliseconds, in UTC. */
export const rfc3339 = (at: Date): string => at.toISOString();

/** Unix seconds. */
export const unixSeconds = (at: Date): number => Math.floor(at.getTime() / 1000);
