/**
 * Waking the outbox relay from another process. The relay LISTENs on {@link OUTBOX_CHANNEL}
 * (services/ledger/src/relay/outbox-relay.ts); a process that commits events the relay of its
 * own process does not see (a ledger replica whose relay is on standby, the hold-expiry worker)
 * sends a NOTIFY on it after its commit, so the events go out at once instead of at the relay's
 * next safety poll.
 *
 * The NOTIFY is a statement of its own, after the writer's commit, never inside the command's
 * transaction or in a trigger on events: PostgreSQL takes one database-wide lock at the commit of
 * every transaction that notified (PreCommit_Notify), so notifying inside commands would
 * serialise all their commits. A lone NOTIFY transaction takes that lock only for itself, and
 * the notifier coalesces: while commits continue it sends at most one NOTIFY per `gapMs`. A
 * NOTIFY that fails is only logged: the relay's safety poll picks the events up anyway.
 *
 * @module
 */
import type pg from "pg";
import type { Logger } from "pino";

/** The channel the active outbox relay listens on. */
export const OUTBOX_CHANNEL = "holdfast_outbox";

export interface OutboxNotifierOptions {
  /** Shortest time between two NOTIFYs of this process. */
  gapMs: number;
  logger: Logger;
}

export interface OutboxNotifier {
  /** Call after a commit that wrote events: a NOTIFY follows within `gapMs`. */
  notify(): void;
  /** Cancels a NOTIFY not yet sent. */
  close(): void;
}

export function createOutboxNotifier(pool: pg.Pool, { gapMs, logger }: OutboxNotifierOptions): OutboxNotifier {
  let timer: NodeJS.Timeout | null = null;
  let lastSentAt = Number.NEGATIVE_INFINITY;
  let closed = false;

  function send(): void {
    timer = null;
    lastSentAt = performance.now();
    // Commits that finish from here on are covered by the next NOTIFY; those before by this one,
    // which the relay receives only after they are visible.
    pool.query(`notify ${OUTBOX_CHANNEL}`).catch((err: unknown) => {
      logger.debug({ err }, "outbox wake not sent; the relay's safety poll will find the events");
    });
  }

  return {
    notify(): void {
      if (timer !== null || closed) return;
      timer = setTimeout(send, Math.max(0, lastSentAt + gapMs - performance.now()));
    },
    close(): void {
      closed = true;
      if (timer !== null) clearTimeout(timer);
      timer = null;
    },
  };
}
