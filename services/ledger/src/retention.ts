import type pg from "pg";
import type { Logger } from "pino";

/** Rows deleted per statement, so a sweep never holds a long transaction. */
const SWEEP_BATCH_ROWS_MAX = 5_000;
/** Statements per sweep, so one sweep has a bounded cost. */
const SWEEP_BATCHES_MAX = 20;
const SWEEP_INTERVAL_MS = 10 * 60 * 1000;

/**
 * Deletes idempotency records older than the retention period (at least 24 hours,
 * docs/architecture.md, "Domain model"). A record younger than that is always honoured; an
 * older one may be honoured until the next sweep.
 */
export function startRetention({ pool, logger, retentionHours }: { pool: pg.Pool; logger: Logger; retentionHours: number }) {
  async function sweep(): Promise<number> {
    let deleted = 0;
    for (let i = 0; i < SWEEP_BATCHES_MAX; i++) {
      const result = await pool.query({
        name: "ledger_retention_sweep",
        text: `delete from idempotency_keys where ctid in (
                 select ctid from idempotency_keys
                  where created_at < now() - make_interval(hours => $1) limit $2)`,
        values: [retentionHours, SWEEP_BATCH_ROWS_MAX],
      });
      deleted += result.rowCount ?? 0;
      if ((result.rowCount ?? 0) < SWEEP_BATCH_ROWS_MAX) {
        break;
      }
    }
    return deleted;
  }

  const timer = setInterval(() => {
    sweep().then(
      (deleted) => deleted > 0 && logger.info({ deleted }, "expired idempotency records deleted"),
      (err: unknown) => logger.warn({ err }, "idempotency retention sweep failed; will retry"),
    );
  }, SWEEP_INTERVAL_MS);
  timer.unref();
  return { sweep, stop: () => clearInterval(timer) };
}
