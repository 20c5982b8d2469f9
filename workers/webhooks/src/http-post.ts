/**
 * The HTTP client of the worker: one POST per attempt, with every limit explicit.
 *
 * - The whole attempt (DNS, connect, TLS, request, response) is bounded by `timeoutMs`.
 * - Redirects are never followed: a 3xx is a failed attempt, so a receiver cannot bounce the
 *   worker to an address the URL check never saw.
 * - Every connection is checked against the URL policy at connect time, through a `lookup`
 *   hook for host names and directly for IP literals (which Node connects to without a lookup).
 * - At most `responseBytesMax` of the answer is read; a longer body is cut and the socket
 *   dropped rather than drained.
 *
 * Built on node:http/https rather than fetch, because fetch has no connect-time lookup hook.
 *
 * @module
 */
import { lookup as dnsLookup, type LookupAddress } from "node:dns";
import http from "node:http";
import https from "node:https";
import { isIP, type LookupFunction } from "node:net";
import { hostOf, type UrlPolicy } from "@holdfast/webhooks-core/url-policy";
import { parseRetryAfter, type AttemptResult } from "./schedule.js";

export interface HttpPosterOptions {
  readonly policy: UrlPolicy;
  readonly timeoutMs: number;
  /** Most open sockets per origin and in all; the sender's concurrency bound is the real limit. */
  readonly socketsMax: number;
  /** Most bytes of a response read, for the error text of a failed attempt. */
  readonly responseBytesMax: number;
  readonly userAgent: string;
}

export interface HttpPoster {
  post(url: string, headers: Record<string, string>, body: string): Promise<AttemptResult>;
  /** Closes idle keep-alive sockets. */
  close(): void;
}

/** Longest error text kept from one attempt. */
export const ERROR_LENGTH_MAX = 512;
/** How long an idle keep-alive socket is kept for the next delivery to the same origin. */
const KEEP_ALIVE_IDLE_MS = 10_000;

/** A connection refused by the URL policy; never retried on another address. */
class BlockedAddressError extends Error {
  override readonly name = "BlockedAddressError";
}

export function createHttpPoster(options: HttpPosterOptions): HttpPoster {
  const agentOptions = {
    keepAlive: true,
    keepAliveMsecs: 1000,
    maxSockets: options.socketsMax,
    maxTotalSockets: options.socketsMax,
    maxFreeSockets: Math.min(options.socketsMax, 256),
    timeout: KEEP_ALIVE_IDLE_MS,
    scheduling: "lifo" as const,
  };
  const agents = { "http:": new http.Agent(agentOptions), "https:": new https.Agent(agentOptions) };
  const lookups = { "http:": guardedLookup(options.policy, true), "https:": guardedLookup(options.policy, false) };

  async function post(rawUrl: string, headers: Record<string, string>, body: string): Promise<AttemptResult> {
    const started = performance.now();
    const elapsed = () => Math.round(performance.now() - started);
    const url = new URL(rawUrl);
    const scheme = url.protocol === "http:" ? "http:" : "https:";
    const host = hostOf(url);
    if (isIP(host) !== 0) {
      const problem = options.policy.addressProblem(host, scheme === "http:");
      if (problem !== null) {
        return { status: null, retryAfterMs: null, error: `blocked: ${problem}`, latencyMs: elapsed() };
      }
    }
    try {
      const response = await send(url, scheme, headers, body);
      return { ...response, latencyMs: elapsed() };
    } catch (err) {
      return { status: null, retryAfterMs: null, error: describe(err, options.timeoutMs), latencyMs: elapsed() };
    }
  }

  function send(url: URL, scheme: "http:" | "https:", headers: Record<string, string>, body: string) {
    return new Promise<Omit<AttemptResult, "latencyMs">>((resolve, reject) => {
      const request = (scheme === "http:" ? http : https).request(url, {
        method: "POST",
        agent: agents[scheme],
        lookup: lookups[scheme],
        signal: AbortSignal.timeout(options.timeoutMs),
        headers: {
          ...headers,
          "content-type": "application/json",
          "content-length": String(Buffer.byteLength(body)),
          "user-agent": options.userAgent,
        },
      });
      request.on("error", reject);
      request.on("response", (response) => {
        readBounded(response, options.responseBytesMax).then((text) => {
          const status = response.statusCode ?? 0;
          const retryAfter = response.headers["retry-after"];
          resolve({
            status,
            retryAfterMs: parseRetryAfter(retryAfter, new Date()),
            error: status >= 200 && status <= 299 ? null : responseError(status, response.headers.location, text),
          });
        }, reject);
      });
      request.end(body);
    });
  }

  return {
    post,
    close() {
      agents["http:"].destroy();
      agents["https:"].destroy();
    },
  };
}

/** Reads at most `max` bytes of the body; past that the socket is dropped instead of drained. */
function readBounded(response: http.IncomingMessage, max: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    response.on("data", (chunk: Buffer) => {
      if (size >= max) {
        return;
      }
      chunks.push(chunk);
      size += chunk.length;
      if (size >= max) {
        response.destroy();
        resolve(Buffer.concat(chunks).subarray(0, max).toString("utf8"));
      }
    });
    response.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
    response.on("error", reject);
    response.on("aborted", () => reject(new Error("response aborted")));
  });
}

function responseError(status: number, location: string | undefined, text: string): string {
  const snippet = text.replace(/\s+/g, " ").trim();
  const what = status >= 300 && status <= 399
    ? `redirect ${status} not followed${location ? ` (to ${location})` : ""}`
    : `HTTP ${status}${snippet ? `: ${snippet}` : ""}`;
  return what.slice(0, ERROR_LENGTH_MAX);
}

/** A short, secret-free description of a failed attempt. */
function describe(err: unknown, timeoutMs: number): string {
  const e = err as { name?: string; code?: string; message?: string; cause?: unknown };
  if (e.name === "AbortError" || e.name === "TimeoutError" || e.code === "ABORT_ERR") {
    return `timeout after ${timeoutMs} ms`;
  }
  if (e.name === "BlockedAddressError" || (e.cause as { name?: string } | undefined)?.name === "BlockedAddressError") {
    return `blocked: ${e.message ?? ""}`.slice(0, ERROR_LENGTH_MAX);
  }
  const code = typeof e.code === "string" ? ` (${e.code})` : "";
  return `${e.message ?? String(err)}${code}`.slice(0, ERROR_LENGTH_MAX);
}

/**
 * A `lookup` for http.request that resolves as Node would and then refuses the connection when
 * any address is one the policy forbids (all must pass: Node may try each of them).
 */
function guardedLookup(policy: UrlPolicy, forHttp: boolean): LookupFunction {
  return (hostname, lookupOptions, callback) => {
    const reply = callback as (err: Error | null, address?: string | LookupAddress[], family?: number) => void;
    dnsLookup(hostname, { ...lookupOptions, all: true }, (err, addresses) => {
      if (err) {
        reply(err);
        return;
      }
      for (const { address } of addresses) {
        const problem = policy.addressProblem(address, forHttp);
        if (problem !== null) {
          reply(new BlockedAddressError(problem));
          return;
        }
      }
      if (lookupOptions.all === true) {
        reply(null, addresses);
        return;
      }
      const first = addresses[0];
      if (first === undefined) {
        reply(new Error(`${hostname} resolved to no address`));
        return;
      }
      reply(null, first.address, first.family);
    });
  };
}
