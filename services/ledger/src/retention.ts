import type pg from "pg";
import type { Logger } from "pino";
import { setTimeout as sleep } from "node:timers/promises";
import { backoffDelayMs } from "@holdfast/common/backoff";
import { systemClock, type Clock } from "@holdfast/common/ids";

/** Rows deleted per statement, so retention never holds a long transaction or many locks. */
export const RETENTION_BATCH_ROWS_DEFAULT = 5_000;
/** Pause once every table is caught up; while one is behind, the batches follow each other. */
export const RETENTION_IDLE_MS_DEFAULT = 5_000;
/** Pause after a failed statement (the database away, a statement timeout), doubled up to the maximum. */
const RETRY_DELAY_MS_MIN = 1_000;
const RETRY_DELAY_MS_MAX = 60_000;
/** How often the rows deleted since the last line are logged (when there were any). */
const LOG_INTERVAL_MS = 60_000;

export interface RetentionOptions {
  pool: pg.Pool;
  logger: Logger;
  /** Idempotency records older than this are deleted (HOLDFAST_IDEMPOTENCY_RETENTION_HOURS). */
  idempotencyRetentionMs: number;
  /** Events published longer ago than this are deleted; null keeps them (HOLDFAST_EVENT_RETENTION_HOURS=0). */
  eventRetentionMs: number | null;
  /**
   * The ledger's clock, which stamps idempotency records (created_at), so their age is measured
   * on it; events' published_at is the database's time, so theirs is measured on now().
   */
  clock?: Clock;
  batchRows?: number;
  idleMs?: number;
  /** False: no passes of its own, only `sweep()` when called (tests). */
  background?: boolean;
}

/** What one pass deleted, per table. */
export interface RetentionPass {
  idempotencyRecords: number;
  events: number;
}

/**
 * Retention of the ledger's two growing tables that are not the journal, as batched deletes
 * that run continuously while behind and pause when caught up (docs/performance.md,
 * "Retention", says why not time partitions):
 *
 * - idempotency records older than the retention period (at least 24 hours, docs/architecture.md,
 *   "Domain model"): a record younger than that is always honoured; an older one may be
 *   honoured until a batch reaches it;
 * - events published longer ago than the event retention (ledger_prune_events, migration 0018):
 *   never an unpublished one, and per wallet only its oldest events, whose journal rows the
 *   invariant checker then accounts for from event_retention.
 *
 * Each statement deletes at most `batchRows` rows by an index on age, so it is short, and a
 * pass loops until a statement deletes fewer than that. Several ledger replicas may run it at
 * once: they share the work (a row deleted by one is skipped by the other).
 */
export function startRetention(options: RetentionOptions) {
  const { pool, logger, idempotencyRetentionMs, eventRetentionMs } = options;
  const batchRows = options.batchRows ?? RETENTION_BATCH_ROWS_DEFAULT;
  const idleMs = options.idleMs ?? RETENTION_IDLE_MS_DEFAULT;
  const clock = options.clock ?? systemClock;
  const stopping = new AbortController();

  async function deleteIdempotencyBatch(): Promise<number> {
    // ctid = any(array(...)) is a TID scan: `ctid in (select ...)` may be planned as a join that
    // reads the whole table.
    const result = await pool.query({
      name: "ledger_retention_idempotency",
      text: `delete from idempotency_keys where ctid = any (array(
               select ctid from idempotency_keys
                where created_at < $1 limit $2))`,
      values: [new Date(clock().getTime() - idempotencyRetentionMs), batchRows],
    });
    return result.rowCount ?? 0;
  }

  async function deleteEventsBatch(retentionMs: number): Promise<number> {
    const result = await pool.query<{ n: number }>({
      name: "ledger_retention_events",
      text: `select ledger_prune_events(now() - $1 * interval '1 millisecond', $2) as n`,
      values: [retentionMs, batchRows],
    });
    return result.rows[0]?.n ?? 0;
  }

  /** Deletes until every table is caught up (or the sweeper stops); returns what it deleted. */
  async function sweep(): Promise<RetentionPass> {
    const pass: RetentionPass = { idempotencyRecords: 0, events: 0 };
    let idempotencyBehind = true;
    let eventsBehind = eventRetentionMs !== null;
    // Alternating, so a large backlog in one table does not hold the other back.
    while ((idempotencyBehind || eventsBehind) && !stopping.signal.aborted) {
      if (idempotencyBehind) {
        const n = await deleteIdempotencyBatch();
        pass.idempotencyRecords += n;
        idempotencyBehind = n >= batchRows;
      }
      if (eventsBehind && eventRetentionMs !== null && !stopping.signal.aborted) {
        const n = await deleteEventsBatch(eventRetentionMs);
        pass.events += n;
        eventsBehind = n >= batchRows;
      }
    }
    return pass;
  }

  const done = (async () => {
    if (options.background === false) return;
    let failures = 0;
    let unlogged: RetentionPass = { idempotencyRecords: 0, events: 0 };
    let loggedAt = Date.now();
    while (!stopping.signal.aborted) {
      let pauseMs = idleMs;
      try {
        const pass = await sweep();
        unlogged = { idempotencyRecords: unlogged.idempotencyRecords + pass.idempotencyRecords, events: unlogged.events + pass.events };
        failures = 0;
      } catch (err) {
        if (stopping.signal.aborted) break;
        logger.warn({ err }, "retention: deleting expired rows failed; will retry");
        pauseMs = backoffDelayMs(failures++, { delayMsMin: RETRY_DELAY_MS_MIN, delayMsMax: RETRY_DELAY_MS_MAX });
      }
      if (Date.now() - loggedAt >= LOG_INTERVAL_MS) {
        if (unlogged.idempotencyRecords + unlogged.events > 0) {
          logger.info({ idempotencyRecords: unlogged.idempotencyRecords, events: unlogged.events }, "retention: expired rows deleted");
        }
        unlogged = { idempotencyRecords: 0, events: 0 };
        loggedAt = Date.now();
      }
      await sleep(pauseMs, undefined, { signal: stopping.signal, ref: false }).catch(() => undefined);
    }
  })();

  return {
    sweep,
    /** Stops after the statement in progress; resolves once it has finished. */
    async stop(): Promise<void> {
      stopping.abort();
      await done;
    },
  };
}
