// What the one-process bench commands (bench:events, bench:webhooks, bench:billing-stream)
// share: a fresh migrated database with one tenant, the stream they publish to, a quiet logger,
// a bounded task runner and a percentile, so each command holds only what it measures.
import { randomUUID } from "node:crypto";
import type pg from "pg";
import pino, { type Logger } from "pino";
import { readLogConfig, STREAM_NAME_DEFAULT } from "@holdfast/common/config";
import type { StreamSettings } from "@holdfast/common/nats";
import { createPool } from "@holdfast/common/pg";
import { migrate } from "@holdfast/db/migrate";
import { recreateDatabase } from "./databases.js";

/** The stream of a bench command's private nats-server: one hour of events is plenty. */
export const BENCH_STREAM: Omit<StreamSettings, "subjects"> = {
  name: STREAM_NAME_DEFAULT,
  maxAgeMs: 3_600_000,
  duplicateWindowMs: 600_000,
  replicas: 1,
};
const CONNECT_TIMEOUT_MS = 5000;
/** Setup statements (funding thousands of wallets) may take longer than a service's 5 s. */
const STATEMENT_TIMEOUT_MS = 60_000;

/** A logger that says nothing unless LOG_LEVEL asks: the commands print their own results. */
export function benchLogger(): Logger {
  return pino({ level: readLogConfig(process.env, "silent").logLevel });
}

/** A bench command's database: recreated, migrated, with one tenant to act as. */
export interface BenchDatabase {
  readonly pool: pg.Pool;
  readonly tenantId: string;
  /** The tenant as the ledger's commands take it. */
  readonly caller: { tenantId: string; scopeWalletId: null };
}

/** Recreates the database `name`, migrates it and adds a tenant; the pool holds `poolMax` connections. */
export async function prepareBenchDatabase(name: string, poolMax: number, logger: Logger): Promise<BenchDatabase> {
  const url = await recreateDatabase(name);
  const pool = createPool(
    { databaseUrl: url, pgPoolMax: poolMax, pgConnectTimeoutMs: CONNECT_TIMEOUT_MS, pgStatementTimeoutMs: STATEMENT_TIMEOUT_MS },
    logger,
  );
  await migrate(pool);
  const tenantId = randomUUID();
  await pool.query("insert into tenants (id, name) values ($1, 'bench')", [tenantId]);
  return { pool, tenantId, caller: { tenantId, scopeWalletId: null } };
}

/** Runs `task(0)` to `task(count - 1)` with at most `concurrency` in flight. */
export async function runPool(count: number, concurrency: number, task: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(concurrency, count) }, async () => {
      while (next < count) {
        await task(next++);
      }
    }),
  );
}

/** The `p`th percentile of ascending `sorted` (0 when empty). */
export function percentile(sorted: readonly number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? 0;
}
