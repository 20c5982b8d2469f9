import type pg from "pg";
import { setTimeout as sleep } from "node:timers/promises";
import { OverloadedError } from "@holdfast/common/errors";
import type { Balance } from "./domain/types.js";
import { parseBalance } from "./domain/rows.js";

/** One balance change of a watched wallet. */
export interface WalletChange {
  seq: bigint;
  type: string;
  balance: Balance;
}

export interface WalletFeedOptions {
  pool: pg.Pool;
  /** How often an idle watcher looks for new events. */
  pollIntervalMs: number;
  /** Concurrent watchers per process; more are refused as OVERLOADED. */
  watchersMax: number;
  /** Events read per query. */
  batchMax: number;
}

/**
 * The feed behind WatchWallet. It reads the wallet's events from the outbox by their
 * per-wallet sequence number, which is gapless, so a watcher can never skip a change whose
 * transaction committed late (the trap of reading "ids above the last one seen").
 *
 * Each watcher polls while idle, which bounds its cost at one indexed query per interval; the
 * number of watchers is bounded too.
 */
export function createWalletFeed({ pool, pollIntervalMs, watchersMax, batchMax }: WalletFeedOptions) {
  let watchers = 0;

  async function* follow(tenantId: string, walletId: string, afterSeq: bigint, signal: AbortSignal): AsyncGenerator<WalletChange> {
    if (watchers >= watchersMax) {
      throw new OverloadedError(`at most ${watchersMax} wallets can be watched at once`);
    }
    watchers++;
    try {
      let last = afterSeq;
      while (!signal.aborted) {
        const rows = await readAfter(tenantId, walletId, last);
        for (const row of rows) {
          last = row.seq;
          if (row.balance !== null) {
            yield { seq: row.seq, type: row.type, balance: parseBalance(row.balance) };
          }
        }
        if (rows.length < batchMax) {
          await sleep(pollIntervalMs, undefined, { signal }).catch(() => undefined);
        }
      }
    } finally {
      watchers--;
    }
  }

  async function readAfter(tenantId: string, walletId: string, afterSeq: bigint) {
    const result = await pool.query<{ seq: bigint; type: string; balance: Record<string, unknown> | null }>({
      name: "ledger_watch_events",
      text: `select seq, type, data->'balance' as balance from events
              where tenant_id = $1 and wallet_id = $2 and seq > $3 order by seq limit $4`,
      values: [tenantId, walletId, afterSeq, batchMax],
    });
    return result.rows;
  }

  return { follow, watching: () => watchers };
}

export type WalletFeed = ReturnType<typeof createWalletFeed>;
