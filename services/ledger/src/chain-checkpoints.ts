import type pg from "pg";
import type { Logger } from "pino";

/** How often the ledger looks for chain heads to publish. */
export const CHAIN_CHECKPOINT_POLL_MS = 60 * 1000;
/** Least time between two checkpoints of one tenant; a head that did not move gets none. */
export const CHAIN_CHECKPOINT_INTERVAL_SECONDS = 5 * 60;
/** Tenants checkpointed per statement, so one pass has a bounded cost. */
const CHAIN_CHECKPOINT_TENANTS_MAX = 1000;

export interface ChainCheckpointsOptions {
  pool: pg.Pool;
  logger: Logger;
  pollMs?: number;
  intervalSeconds?: number;
}

/** A published chain head. */
export interface ChainCheckpoint {
  tenantId: string;
  chainSeq: bigint;
  headHash: string;
}

/**
 * Publishes the journal's chain heads (migration 0011): every few minutes, for each tenant
 * whose head moved, a row in the append-only journal_chain_checkpoints table and a log line
 * "journal chain head" with the sequence number and hash. The log line is the copy outside the
 * database: whoever rewrites journal rows and recomputes every hash after them still disagrees
 * with the heads logged before. `holdfast verify` checks every checkpoint row. Several replicas
 * may run this: the SQL records a head once.
 */
export function startChainCheckpoints(options: ChainCheckpointsOptions) {
  const { pool, logger } = options;
  const intervalSeconds = options.intervalSeconds ?? CHAIN_CHECKPOINT_INTERVAL_SECONDS;

  async function checkpoint(): Promise<ChainCheckpoint[]> {
    const { rows } = await pool.query<{ tenant_id: string; chain_seq: string; head_hash: Buffer }>({
      name: "ledger_chain_checkpoint",
      text: "select tenant_id, chain_seq::text, head_hash from ledger_chain_checkpoint(now(), $1, $2)",
      values: [intervalSeconds, CHAIN_CHECKPOINT_TENANTS_MAX],
    });
    const published = rows.map((r) => ({ tenantId: r.tenant_id, chainSeq: BigInt(r.chain_seq), headHash: r.head_hash.toString("hex") }));
    for (const head of published) {
      logger.info({ tenantId: head.tenantId, chainSeq: head.chainSeq.toString(), headHash: head.headHash }, "journal chain head");
    }
    return published;
  }

  const timer = setInterval(() => {
    checkpoint().catch((err: unknown) => logger.warn({ err }, "journal chain checkpoint failed; will retry"));
  }, options.pollMs ?? CHAIN_CHECKPOINT_POLL_MS);
  timer.unref();
  return { checkpoint, stop: () => clearInterval(timer) };
}
