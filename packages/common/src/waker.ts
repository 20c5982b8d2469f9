/**
 * An idle wait that can be cut short: `idle(ms)` waits up to `ms` (or until the signal aborts),
 * and `wake()` ends the current wait at once, or the next one if none is running, so work that
 * arrives while the loop is busy is not lost. Wakes that arrive together count once.
 *
 * The loops that wait for new work (the outbox relay, the webhook sender's claims, the
 * WatchWallet feed) use it so that new work starts them at once while an idle loop costs
 * nothing but its rare safety poll.
 *
 * @module
 */
export interface Waker {
  wake(): void;
  idle(ms: number, signal?: AbortSignal): Promise<void>;
}

export function createWaker(): Waker {
  let signalled = false;
  let waiter: (() => void) | null = null;
  return {
    wake(): void {
      signalled = true;
      waiter?.();
    },
    async idle(ms: number, signal?: AbortSignal): Promise<void> {
      if (!signalled && !signal?.aborted) {
        await new Promise<void>((resolve) => {
          const timer = setTimeout(done, ms);
          signal?.addEventListener("abort", done, { once: true });
          function done() {
            clearTimeout(timer);
            signal?.removeEventListener("abort", done);
            waiter = null;
            resolve();
          }
          waiter = done;
        });
      }
      signalled = false;
    },
  };
}
