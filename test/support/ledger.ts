import { randomUUID } from "node:crypto";
import type pg from "pg";
import pino from "pino";
import { createManualClock, uuidV7 } from "@holdfast/common/ids";
import { createPool } from "@holdfast/common/pg";
import { createLedger, type Caller } from "@holdfast/ledger/domain";
import { createTestDatabase } from "./db.js";

/** A silent logger for tests. */
export const quietLogger = pino({ level: "silent" });

/**
 * A ledger core on a fresh database with a manual clock and one tenant, for tests that drive
 * the domain directly (no RPC).
 */
export async function createTestLedger(options: { poolMax?: number; groupCommit?: boolean } = {}) {
  const db = await createTestDatabase();
  const pool = createPool(
    { databaseUrl: db.url, pgPoolMax: options.poolMax ?? 20, pgConnectTimeoutMs: 5000, pgStatementTimeoutMs: 30_000 },
    quietLogger,
  );
  const clock = createManualClock(new Date("2026-01-01T00:00:00Z"));
  const ledger = createLedger({
    pool,
    clock,
    newId: uuidV7,
    groupCommit: options.groupCommit ? { batchMax: 64, queueMax: 10_000 } : null,
  });
  const tenant = await createTenantRow(pool);
  return {
    db,
    pool,
    clock,
    ledger,
    caller: { tenantId: tenant, scopeWalletId: null } as Caller,
    newTenant: async (): Promise<Caller> => ({ tenantId: await createTenantRow(pool), scopeWalletId: null }),
    async close() {
      await pool.end();
      await db.drop();
    },
  };
}

async function createTenantRow(pool: pg.Pool): Promise<string> {
  const id = randomUUID();
  await pool.query("insert into tenants (id, name) values ($1, $2)", [id, `tenant-${id}`]);
  return id;
}

/** A unique idempotency key. */
export const key = (prefix = "k") => `${prefix}-${randomUUID()}`;
