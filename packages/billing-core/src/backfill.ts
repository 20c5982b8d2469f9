/**
 * Backfill: re-send a period of usage from the journal to one sink, through the same mapping
 * and delivery as the stream. Every record carries its transfer id as the engine's idempotency
 * key, so a period that was already sent, in part or in full, is deduplicated by the engine:
 * overlapping what the stream sent is safe, and so is running a backfill twice.
 *
 * Use it after an outage longer than the stream's retention, after fixing what dead-lettered
 * records (a wallet's missing customer id; their dead letters are marked resolved), or to
 * give a new sink its history.
 *
 * @module
 */
import type pg from "pg";
import type { Logger } from "pino";
import type { BillingConfig, SinkConfig } from "./config.js";
import { newSinkMetrics, type SinkMetrics } from "./metrics.js";
import { processRecords } from "./process.js";
import { createResolver } from "./resolver.js";
import { createSink } from "./sinks/index.js";
import { flushBudgetMs } from "./stream.js";
import { usageFromTransferRow, type TransferRow } from "./usage.js";

const NIL_UUID = "00000000-0000-0000-0000-000000000000";
const RESOLVER_CACHE_ENTRIES_MAX = 10_000;

export interface BackfillOptions {
  readonly pool: pg.Pool;
  readonly config: BillingConfig;
  readonly sinkName: string;
  /** Usage created at or after this instant... */
  readonly since: Date;
  /** ...and before this one (now by default). */
  readonly until?: Date;
  /** Only this tenant (within the sink's own tenants). */
  readonly tenantId?: string;
  readonly logger: Logger;
  readonly signal?: AbortSignal;
  /** Called once with the total, then after every page. */
  readonly onProgress?: (done: number, total: number) => void;
}

export interface BackfillResult {
  readonly total: number;
  readonly metrics: SinkMetrics;
}

/** Thrown for an unknown sink; the message lists the configured ones. */
export class BackfillError extends Error {
  override readonly name = "BackfillError";
}

/** Re-sends the period's usage to the sink. Records that still fail are counted in `metrics.failed`. */
export async function backfill(options: BackfillOptions): Promise<BackfillResult> {
  const sinkConfig = findSink(options.config, options.sinkName);
  const until = options.until ?? new Date();
  const filter = {
    kinds: [...sinkConfig.kinds],
    tenants: sinkConfig.tenants === null ? null : [...sinkConfig.tenants],
    tenantId: options.tenantId ?? null,
  };
  const total = await countUsage(options.pool, filter, options.since, until);
  options.onProgress?.(0, total);
  const metrics = newSinkMetrics();
  const ctx = {
    sink: createSink(sinkConfig),
    pool: options.pool,
    resolver: createResolver({ pool: options.pool, walletCacheTtlMs: options.config.walletCacheTtlMs, cacheEntriesMax: RESOLVER_CACHE_ENTRIES_MAX }),
    metrics,
    logger: options.logger,
    resolveDeadLetters: true,
  };
  const signal = options.signal ?? new AbortController().signal;
  let cursor = { tenantId: NIL_UUID, transferId: NIL_UUID };
  let done = 0;
  while (!signal.aborted) {
    const rows = await readPage(options.pool, filter, options.since, until, cursor, sinkConfig.batchSizeMax);
    if (rows.length === 0) break;
    const last = rows[rows.length - 1]!;
    cursor = { tenantId: last.tenant_id, transferId: last.transfer_id };
    await processRecords(ctx, rows.map(usageFromTransferRow), { signal, deadline: Date.now() + flushBudgetMs(sinkConfig) });
    done += rows.length;
    options.onProgress?.(done, Math.max(total, done));
  }
  return { total, metrics };
}

function findSink(config: BillingConfig, name: string): SinkConfig {
  const sink = config.sinks.find((s) => s.name === name);
  if (sink === undefined) {
    throw new BackfillError(`no sink named "${name}" in the billing configuration (sinks: ${config.sinks.map((s) => s.name).join(", ")})`);
  }
  return sink;
}

interface UsageFilter {
  kinds: string[];
  tenants: string[] | null;
  tenantId: string | null;
}

// The journal has no index on created_at (adding one would cost every ledger command a write),
// so the backfill walks the primary key in (tenant_id, transfer_id) order and filters: the
// whole walk reads the table once, however many pages it takes.
const USAGE_WHERE = `kind = any($1::text[]) and created_at >= $2 and created_at < $3
                 and ($4::uuid[] is null or tenant_id = any($4::uuid[]))
                 and ($5::uuid is null or tenant_id = $5)`;

async function countUsage(pool: pg.Pool, f: UsageFilter, since: Date, until: Date): Promise<number> {
  const { rows } = await pool.query<{ n: string }>({
    text: `select count(*)::text as n from transfers where ${USAGE_WHERE}`,
    values: [f.kinds, since, until, f.tenants, f.tenantId],
  });
  return Number(rows[0]?.n ?? 0);
}

async function readPage(
  pool: pg.Pool,
  f: UsageFilter,
  since: Date,
  until: Date,
  cursor: { tenantId: string; transferId: string },
  limit: number,
): Promise<TransferRow[]> {
  const { rows } = await pool.query<TransferRow>({
    name: "billing_backfill_page",
    // A usage command's token legs share its money row's usage_id (migration 0013), so the
    // record carries the same token counts the stream's event did.
    text: `select t.tenant_id, t.transfer_id, t.kind, t.debit_wallet_id, t.credit_wallet_id, t.asset, t.amount,
                  t.refund_of, t.metadata, t.created_at, t.model as usage_model,
                  case when t.usage_id is null then null else
                    (select coalesce(jsonb_agg(jsonb_build_object('token_class', l.token_class, 'amount', l.amount::text)), '[]'::jsonb)
                       from transfers l
                      where l.tenant_id = t.tenant_id and l.usage_id = t.usage_id and l.kind = 'usage') end as usage_legs
             from transfers t
            where ${USAGE_WHERE} and (t.tenant_id, t.transfer_id) > ($6::uuid, $7::uuid)
            order by t.tenant_id, t.transfer_id
            limit $8`,
    values: [f.kinds, since, until, f.tenants, f.tenantId, cursor.tenantId, cursor.transferId, limit],
  });
  return rows.map((row) => ({ ...row, amount: BigInt(row.amount) }));
}
