/**
 * Which calls the server admits, and for how long streams may run.
 *
 * Commands share one in-flight budget. Health checks stay outside it: they need no key, so if
 * they counted, anyone could spend the budget that paying callers need (issue: 1,030 open
 * health Watch streams starved GetWallet). Health Watch streams have their own caps instead,
 * per connection and overall, and every server stream ends after a maximum lifetime so that no
 * stream, health or not, holds its slot forever.
 *
 * @module
 */
import { Code, ConnectError, createContextKey, type Interceptor } from "@connectrpc/connect";
import type { StreamRequest, StreamResponse, UnaryRequest, UnaryResponse } from "@connectrpc/connect";

import { ledgerError } from "./errors.js";
import { HEALTH_SERVICE_NAME } from "./health.js";
import type { ServerLimits } from "./server-limits.js";
import { untilAborted } from "./abort.js";

/** What the server tracks per connection (a TCP or TLS socket, or an HTTP/2 session). */
export interface ConnectionState {
  healthWatchers: number;
  /** Request-body bytes received by the calls in progress on this connection. */
  bodyBytes: number;
}

/** The connection a call arrived on; set by the server's request adapter. */
export const CONNECTION_KEY = createContextKey<ConnectionState | undefined>(undefined, {
  description: "holdfast connection",
});

/** Counters shared by the admission interceptor and `drain()`. */
export interface AdmissionState {
  draining: boolean;
  unaryInFlight: number;
  streamsInFlight: number;
  healthWatchers: number;
}

/** Each stream lives between this share of the maximum lifetime and all of it. */
const STREAM_LIFETIME_SHARE_MIN = 0.9;

/** The reason a stream's signal aborts at its maximum lifetime. */
const LIFETIME_REASON = new ConnectError("stream reached its maximum lifetime; reconnect", Code.Unavailable);

/**
 * Refuses calls while draining (UNAVAILABLE, DRAINING) and command calls beyond the in-flight
 * bound (RESOURCE_EXHAUSTED, OVERLOADED), and counts the calls it admits. A unary call counts
 * until it settles; a stream until its handler signal aborts, which Connect does when the call
 * ends for any reason. Health calls are counted apart (see the module comment).
 */
export function admissionInterceptor(maxInFlight: number, limits: ServerLimits, state: AdmissionState): Interceptor {
  return (next) => async (req) => {
    if (state.draining) {
      throw ledgerError(Code.Unavailable, "DRAINING", "server is shutting down; retry");
    }
    if (req.service.typeName === HEALTH_SERVICE_NAME) {
      if (!req.stream) {
        return next(req);
      }
      admitHealthWatch(req, limits, state);
      return withLifetime(next, req, limits.streamLifetimeMsMax);
    }
    if (state.unaryInFlight + state.streamsInFlight >= maxInFlight) {
      throw ledgerError(Code.ResourceExhausted, "OVERLOADED", "too many concurrent requests; retry with backoff", {
        metadata: { max_in_flight: String(maxInFlight) },
      });
    }
    if (req.stream) {
      state.streamsInFlight += 1;
      onAbort(req.signal, () => {
        state.streamsInFlight -= 1;
      });
      return withLifetime(next, req, limits.streamLifetimeMsMax);
    }
    state.unaryInFlight += 1;
    try {
      return await next(req);
    } finally {
      state.unaryInFlight -= 1;
    }
  };
}

/** Counts a health Watch stream against both caps, or refuses it with RESOURCE_EXHAUSTED. */
function admitHealthWatch(req: StreamRequest, limits: ServerLimits, state: AdmissionState): void {
  const connection = req.contextValues.get(CONNECTION_KEY);
  const connectionFull = connection !== undefined && connection.healthWatchers >= limits.healthWatchersPerConnectionMax;
  if (connectionFull || state.healthWatchers >= limits.healthWatchersMax) {
    throw ledgerError(Code.ResourceExhausted, "OVERLOADED", "too many health Watch streams; close some or use Check", {
      metadata: {
        health_watchers_max: String(limits.healthWatchersMax),
        health_watchers_per_connection_max: String(limits.healthWatchersPerConnectionMax),
      },
    });
  }
  state.healthWatchers += 1;
  if (connection !== undefined) {
    connection.healthWatchers += 1;
  }
  onAbort(req.signal, () => {
    state.healthWatchers -= 1;
    if (connection !== undefined) {
      connection.healthWatchers -= 1;
    }
  });
}

/**
 * Runs a stream with a lifetime: when it passes, the handler's signal aborts and the response
 * ends cleanly (status OK) even if the handler has not noticed yet.
 */
async function withLifetime(
  next: (req: UnaryRequest | StreamRequest) => Promise<UnaryResponse | StreamResponse>,
  req: StreamRequest,
  lifetimeMsMax: number,
): Promise<UnaryResponse | StreamResponse> {
  const lifetime = new AbortController();
  const share = STREAM_LIFETIME_SHARE_MIN + (1 - STREAM_LIFETIME_SHARE_MIN) * Math.random();
  const timer = setTimeout(() => lifetime.abort(LIFETIME_REASON), Math.round(lifetimeMsMax * share));
  onAbort(req.signal, () => clearTimeout(timer));
  try {
    const res = await next({ ...req, signal: AbortSignal.any([req.signal, lifetime.signal]) });
    return res.stream ? { ...res, message: endAtLifetime(res.message, lifetime.signal) } : res;
  } catch (err) {
    clearTimeout(timer);
    throw err;
  }
}

/** Yields the messages until they end or the lifetime passes, whichever comes first. */
async function* endAtLifetime<T>(messages: AsyncIterable<T>, lifetime: AbortSignal): AsyncGenerator<T> {
  const it = messages[Symbol.asyncIterator]();
  let finished = false;
  try {
    for (;;) {
      const next = await untilAborted(it.next(), lifetime);
      if (next === undefined || next.done === true) {
        finished = next !== undefined;
        return;
      }
      yield next.value;
    }
  } catch (err) {
    // A handler that noticed its aborted signal throws the abort reason; the end is clean.
    if (lifetime.aborted) {
      return;
    }
    finished = true;
    throw err;
  } finally {
    if (!finished) {
      // A pending next() keeps the handler's generator busy; return() queues behind it and
      // the handler's aborted signal ends it.
      it.return?.().catch(() => undefined);
    }
  }
}

/** Calls the listener once the signal aborts, at once if it already has. */
export function onAbort(signal: AbortSignal, listener: () => void): void {
  if (signal.aborted) {
    listener();
  } else {
    signal.addEventListener("abort", listener, { once: true });
  }
}
