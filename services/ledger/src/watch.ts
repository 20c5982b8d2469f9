import type pg from "pg";
import { OverloadedError } from "@holdfast/common/errors";
import { createWaker } from "@holdfast/common/waker";
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
  /**
   * How often the feed looks for new events while anyone watches: what bounds how late a
   * watcher sees a change committed by another process (a replica, the hold-expiry worker).
   * Changes this process commits wake the feed at once (wake()).
   */
  pollIntervalMs: number;
  /** Shortest time between two reads, so that a stream of commits costs one read per gap. */
  wakeGapMs: number;
  /** Concurrent watchers per process; more are refused as OVERLOADED. */
  watchersMax: number;
  /** Events read per wallet per query, and changes a watcher may have waiting to be sent. */
  batchMax: number;
}

/** One WatchWallet stream: its cursor and the changes read for it but not yet sent. */
interface Watcher {
  readonly tenantId: string;
  readonly walletId: string;
  /** The last seq read for this watcher (sent or waiting). */
  last: bigint;
  waiting: WalletChange[];
  failure: unknown;
  /** Resolves the watcher's wait for changes. */
  notify: (() => void) | null;
}

interface EventRow {
  tenant_id: string;
  wallet_id: string;
  seq: bigint;
  type: string;
  balance: Record<string, unknown> | null;
}

/**
 * The feed behind WatchWallet. It reads the wallets' events from the outbox by their per-wallet
 * sequence number, which is gapless, so a watcher can never skip a change whose transaction
 * committed late (the trap of reading "ids above the last one seen").
 *
 * One reader serves every watcher of the process: one query per pollIntervalMs for all watched
 * wallets together (a lateral read of each wallet's next events), and one at once when wake()
 * says this process committed a change to a watched wallet (at most one per wakeGapMs while
 * commits continue). Nobody watching, no queries. Each watcher keeps its own cursor, so watchers
 * of one wallet that started at different points each get every change after theirs, in order.
 * A watcher whose client is slow holds at most batchMax changes: it is left out of the reads
 * until it has sent them, and reading for it resumes from its own cursor.
 */
export function createWalletFeed({ pool, pollIntervalMs, wakeGapMs, watchersMax, batchMax }: WalletFeedOptions) {
  const watchers = new Set<Watcher>();
  const watchedWallets = new Map<string, number>();
  const waker = createWaker();
  let reader: Promise<void> | null = null;

  async function* follow(tenantId: string, walletId: string, afterSeq: bigint, signal: AbortSignal): AsyncGenerator<WalletChange> {
    if (watchers.size >= watchersMax) {
      throw new OverloadedError(`at most ${watchersMax} wallets can be watched at once`);
    }
    const watcher: Watcher = { tenantId, walletId, last: afterSeq, waiting: [], failure: undefined, notify: null };
    watchers.add(watcher);
    watchedWallets.set(walletId, (watchedWallets.get(walletId) ?? 0) + 1);
    const onAbort = () => watcher.notify?.();
    signal.addEventListener("abort", onAbort);
    reader ??= runReader();
    waker.wake();
    try {
      while (!signal.aborted) {
        if (watcher.failure !== undefined) throw watcher.failure;
        const change = watcher.waiting.shift();
        if (change === undefined) {
          await new Promise<void>((resolve) => (watcher.notify = resolve));
          watcher.notify = null;
          continue;
        }
        // A watcher that was full is read for again once it has room.
        if (watcher.waiting.length === batchMax - 1) waker.wake();
        yield change;
      }
    } finally {
      signal.removeEventListener("abort", onAbort);
      watchers.delete(watcher);
      const left = (watchedWallets.get(walletId) ?? 1) - 1;
      if (left === 0) watchedWallets.delete(walletId);
      else watchedWallets.set(walletId, left);
      if (watchers.size === 0) waker.wake();
    }
  }

  /** Reads for every watcher with room, until nobody watches. */
  async function runReader(): Promise<void> {
    try {
      while (watchers.size > 0) {
        const startedAt = performance.now();
        let full = false;
        try {
          full = await readOnce();
        } catch (err) {
          // The database is away: every stream ends with the error, as a lone poll's would.
          for (const watcher of watchers) {
            watcher.failure = err;
            watcher.notify?.();
          }
          await waker.idle(pollIntervalMs);
          continue;
        }
        if (watchers.size === 0) break;
        const gap = wakeGapMs - (performance.now() - startedAt);
        if (gap > 0) await new Promise((resolve) => setTimeout(resolve, gap));
        if (!full) await waker.idle(pollIntervalMs);
      }
    } finally {
      reader = null;
    }
  }

  /** One query for every watcher with room; returns whether some wallet may have more at once. */
  async function readOnce(): Promise<boolean> {
    // Per wallet, the lowest cursor of its watchers with room: each takes what is past its own.
    const cursors = new Map<string, { tenantId: string; walletId: string; after: bigint }>();
    for (const watcher of watchers) {
      if (watcher.waiting.length >= batchMax || watcher.failure !== undefined) continue;
      const id = `${watcher.tenantId}/${watcher.walletId}`;
      const cursor = cursors.get(id);
      if (cursor === undefined || watcher.last < cursor.after) {
        cursors.set(id, { tenantId: watcher.tenantId, walletId: watcher.walletId, after: watcher.last });
      }
    }
    if (cursors.size === 0) return false;
    const list = [...cursors.values()];
    const { rows } = await pool.query<EventRow>({
      name: "ledger_watch_events_all",
      text: `select w.tenant_id, w.wallet_id, e.seq, e.type, e.data->'balance' as balance
               from unnest($1::uuid[], $2::text[], $3::bigint[]) as w(tenant_id, wallet_id, after_seq)
               cross join lateral (
                 select seq, type, data from events
                  where tenant_id = w.tenant_id and wallet_id = w.wallet_id and seq > w.after_seq
                  order by seq limit $4) e
              order by w.tenant_id, w.wallet_id, e.seq`,
      values: [list.map((c) => c.tenantId), list.map((c) => c.walletId), list.map((c) => c.after.toString()), batchMax],
    });
    const byWallet = new Map<string, EventRow[]>();
    for (const row of rows) {
      const id = `${row.tenant_id}/${row.wallet_id}`;
      const list = byWallet.get(id);
      if (list) list.push(row);
      else byWallet.set(id, [row]);
    }
    let full = false;
    for (const watcher of watchers) {
      const found = byWallet.get(`${watcher.tenantId}/${watcher.walletId}`);
      if (found === undefined || watcher.waiting.length >= batchMax || watcher.failure !== undefined) continue;
      if (found.length >= batchMax) full = true;
      for (const row of found) {
        // Rows are in seq order from the wallet's lowest cursor; each watcher takes what follows its own.
        if (row.seq <= watcher.last || watcher.waiting.length >= batchMax) continue;
        watcher.last = row.seq;
        if (row.balance !== null) {
          watcher.waiting.push({ seq: row.seq, type: row.type, balance: parseBalance(row.balance) });
        }
      }
      if (watcher.waiting.length > 0) watcher.notify?.();
    }
    return full;
  }

  return {
    follow,
    watching: () => watchers.size,
    /**
     * Tells the feed that this process committed changes to these wallets (null: to any): when
     * one of them is watched, the feed reads at once instead of at its next poll.
     */
    wake(wallets: readonly string[] | null): void {
      if (watchers.size === 0) return;
      if (wallets === null || wallets.some((w) => watchedWallets.has(w))) waker.wake();
    },
  };
}

export type WalletFeed = ReturnType<typeof createWalletFeed>;
