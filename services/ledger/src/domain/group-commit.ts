import type pg from "pg";
import { OverloadedError } from "@holdfast/common/errors";
import { runCommand, runCommandBatch, type QueuedCommand } from "./commands.js";
import type { Json } from "./types.js";

export interface GroupCommitOptions {
  pool: pg.Pool;
  /** Most commands in one batch (one transaction). */
  batchMax: number;
  /** Most commands waiting for one wallet; more are refused as OVERLOADED. */
  queueMax: number;
}

interface Pending {
  command: QueuedCommand;
  resolve: (result: Json) => void;
  reject: (err: unknown) => void;
}

interface WalletQueue {
  waiting: Pending[];
  /** Batches of this wallet in flight: at most BATCHES_IN_FLIGHT_MAX. */
  flushing: number;
}

/**
 * Batches of one wallet in flight at once. With two, the next batch is already waiting on the
 * wallet's row lock while the previous one commits, so the commit flush and the service's work
 * on the results overlap with the next batch instead of leaving the wallet idle. More than two
 * would only queue on the same lock.
 */
const BATCHES_IN_FLIGHT_MAX = 2;

/**
 * Group commit: a single writer per wallet. The first command for an idle wallet goes out at
 * once as a batch of one; commands that arrive while batches of that wallet are in flight wait
 * and go out together as the next batch, in one transaction, so a hot wallet pays one commit
 * flush per batch instead of one per command. Batches shrink back to one when traffic stops.
 *
 * This module only queues: running a batch is the command layer's job (commands.ts).
 * Correctness never depends on it: the wallet's row lock still serializes every writer, so
 * two replicas batching the same wallet are only slower, not wrong. Routing a wallet's traffic
 * to one replica (consistent hashing on the wallet id at the load balancer) is what makes its
 * batches large.
 */
export function createGroupCommit({ pool, batchMax, queueMax }: GroupCommitOptions) {
  const queues = new Map<string, WalletQueue>();
  const stats = { batches: 0, commands: 0, batchSizeMax: 0, fallbacks: 0 };

  function submit(walletKey: string, command: QueuedCommand): Promise<Json> {
    let queue = queues.get(walletKey);
    if (!queue) {
      queue = { waiting: [], flushing: 0 };
      queues.set(walletKey, queue);
    }
    if (queue.waiting.length >= queueMax) {
      return Promise.reject(new OverloadedError("too many commands queued for this wallet"));
    }
    const result = new Promise<Json>((resolve, reject) => queue.waiting.push({ command, resolve, reject }));
    if (queue.flushing < BATCHES_IN_FLIGHT_MAX) {
      void flush(walletKey, queue);
    }
    return result;
  }

  async function flush(walletKey: string, queue: WalletQueue): Promise<void> {
    queue.flushing++;
    while (queue.waiting.length > 0) {
      const batch = queue.waiting.splice(0, batchMax);
      stats.batches++;
      stats.commands += batch.length;
      stats.batchSizeMax = Math.max(stats.batchSizeMax, batch.length);
      await runBatch(batch);
    }
    queue.flushing--;
    if (queue.flushing === 0 && queue.waiting.length === 0) {
      queues.delete(walletKey);
    }
  }

  /** Settles every command of the batch; never throws. */
  async function runBatch(batch: Pending[]): Promise<void> {
    if (batch.length === 1) {
      const [only] = batch as [Pending];
      await runCommand(pool, only.command).then(only.resolve, only.reject);
      return;
    }
    let results: Json[];
    try {
      results = await runCommandBatch(pool, batch.map((p) => p.command));
    } catch {
      stats.fallbacks++;
      // The batch rolled back as a whole; run each command alone so that only the one at
      // fault sees its error, with the single path's retries and error mapping.
      await Promise.all(batch.map((p) => runCommand(pool, p.command).then(p.resolve, p.reject)));
      return;
    }
    batch.forEach((p, i) => p.resolve(results[i]!));
  }

  return { submit, queuedWallets: () => queues.size, stats: () => ({ ...stats }) };
}

export type GroupCommit = ReturnType<typeof createGroupCommit>;
