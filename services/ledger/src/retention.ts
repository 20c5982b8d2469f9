import type pg from "pg";
import type { Logger } from "pino";

/** Rows deleted per statement, so a sweep never holds a long transaction. */
const sweep_batch_rows_max = 5_000;
/** Statements per sweep, so one sweep has a bounded cost. */
const sweep_batches_max = 20;
const sweep_interval_ms = 10 * 60 * 1000;

/**
 * Deletes idempotency records older than the retention period (at least 24 hours,
 * docs/architecture.md, "Domain model"). A record younger than that is always honoured; an
 * older one may be honoured until the next sweep.
 */
export function startRetention({ pool, logger, retentionHours }: { pool: pg.Pool; logger: Logger; retentionHours: number }) {
  async function sweep(): Promise<number> {
    let deleted = 0;
    for (let i = 0; i < sweep_batches_max; i++) {
      const result = await pool.query({
        name: "ledger_retention_sweep",
        text: `delete from idempotency_keys where ctid in (
                 select ctid from idempotency_keys
                  where created_at < now() - make_interval(hours => $1) limit $2)`,
        values: [retentionHours, sweep_batch_rows_max],
      });
      deleted += result.rowCount ?? 0;
      if ((result.rowCount ?? 0) < sweep_batch_rows_max) {
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
  }, sweep_interval_ms);
  timer.unref();
  return { sweep, stop: () => clearInterval(timer) };
}
