/** Small helpers for work that an AbortSignal may cut short. */

/**
 * Settles with the promise, or with undefined as soon as the signal aborts. A server stream
 * waiting for its next item uses it so that a lifetime limit or a revoked key ends the wait
 * at once instead of after the next item.
 */
export function untilAborted<T>(promise: Promise<T>, signal: AbortSignal): Promise<T | undefined> {
  if (signal.aborted) {
    promise.catch(() => undefined);
    return Promise.resolve(undefined);
  }
  return new Promise<T | undefined>((resolve, reject) => {
    const abort = (): void => resolve(undefined);
    signal.addEventListener("abort", abort, { once: true });
    promise.then(resolve, reject).finally(() => signal.removeEventListener("abort", abort));
  });
}
