/**
 * What keeps a server stream honest after the checks at its start: its key is checked again
 * while it runs, so a key revoked (or expired) after the stream opened ends it with
 * UNAUTHENTICATED instead of leaving it open until its maximum lifetime.
 *
 * @module
 */
import { UnauthenticatedError } from "@holdfast/common/errors";
import { untilAborted } from "@holdfast/common/abort";

/** The shortest interval between two checks of a stream's key, whatever the key cache time. */
export const KEY_RECHECK_INTERVAL_MS_MIN = 1000;

/** What a guarded stream needs: the check, how often to run it, and the call's own signal. */
export interface KeyGuardOptions {
  /** Resolves true while the key is valid; a rejection (database away) is not an answer. */
  readonly check: () => Promise<boolean>;
  readonly intervalMs: number;
  readonly callSignal: AbortSignal;
}

/**
 * Checks the key every `intervalMs` until the call ends, and returns a signal that aborts,
 * with an UnauthenticatedError as its reason, the first time the check answers false.
 */
export function guardKey({ check, intervalMs, callSignal }: KeyGuardOptions): AbortSignal {
  const revoked = new AbortController();
  let checking = false;
  const timer = setInterval(() => {
    if (checking) return;
    checking = true;
    check()
      .then((valid) => {
        if (!valid) revoked.abort(new UnauthenticatedError("API key revoked or expired while the stream was open"));
      })
      .catch(() => undefined)
      .finally(() => {
        checking = false;
      });
  }, intervalMs);
  timer.unref();
  const stop = (): void => clearInterval(timer);
  if (callSignal.aborted) stop();
  callSignal.addEventListener("abort", stop, { once: true });
  revoked.signal.addEventListener("abort", stop, { once: true });
  return revoked.signal;
}

/**
 * Yields the messages until they end, or throws the guard's reason as soon as it aborts, even
 * while the handler waits for its next message. The handler sees the guard through its own
 * signal (the interceptor joins the two) and stops.
 */
export async function* endWhenRevoked<T>(messages: AsyncIterable<T>, guard: AbortSignal): AsyncGenerator<T> {
  const it = messages[Symbol.asyncIterator]();
  // Whether the handler's iterator has ended by itself; if not, it is told to return.
  let ended = false;
  try {
    for (;;) {
      const next = await untilAborted(it.next(), guard);
      if (next === undefined) {
        throw guard.reason;
      }
      if (next.done === true) {
        ended = true;
        if (guard.aborted) throw guard.reason;
        return;
      }
      yield next.value;
    }
  } catch (err) {
    ended ||= !guard.aborted;
    // A handler that noticed its aborted signal throws an abort error; the revocation is the answer.
    throw guard.aborted ? guard.reason : err;
  } finally {
    if (!ended) {
      // A pending next() keeps the handler's generator busy; return() queues behind it and runs
      // the handler's cleanup (its aborted signal ends the wait).
      it.return?.().catch(() => undefined);
    }
  }
}
