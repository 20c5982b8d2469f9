import { Code } from "@connectrpc/connect";
import type pg from "pg";
import { ledgerError } from "@holdfast/common/errors";

type Json = Record<string, unknown>;

/** One command, ready for ledger_command (see migrations/0003_commands.sql). */
export interface QueuedCommand {
  tenantId: string;
  command: string;
  key: string;
  fingerprint: Buffer;
  now: Date;
  args: Json;
}

export interface GroupCommitOptions {
  pool: pg.Pool;
  /** Most commands in one batch (one transaction). */
  batchMax: number;
  /** Most commands waiting for one wallet; more get RESOURCE_EXHAUSTED. */
  queueMax: number;
  /** Runs one command alone: the fallback when a batch fails as a whole. */
  runSingle: (command: QueuedCommand) => Promise<Json>;
}

interface Pending {
  command: QueuedCommand;
  resolve: (result: Json) => void;
  reject: (err: unknown) => void;
}

interface WalletQueue {
  waiting: Pending[];
  /** Batches of this wallet in flight: at most batches_in_flight_max. */
  flushing: number;
}

/**
 * Batches of one wallet in flight at once. With two, the next batch is already waiting on the
 * wallet's row lock while the previous one commits, so the commit flush and the service's work
 * on the results overlap with the next batch instead of leaving the wallet idle. More than two
 * would only queue on the same lock.
 */
const batches_in_flight_max = 2;

/**
 * Group commit: a single writer per wallet. The first command for an idle wallet goes out at
 * once as a batch of one; commands that arrive while batches of that wallet are in flight wait
 * and go out together as the next batch, in one transaction, so a hot wallet pays one commit
 * flush per batch instead of one per command. Batches shrink back to one when traffic stops.
 *
 * Correctness never depends on this: the wallet's row lock still serializes every writer, so
 * two replicas batching the same wallet are only slower, not wrong. Routing a wallet's traffic
 * to one replica (consistent hashing on the wallet id at the load balancer) is what makes its
 * batches large.
 */
export function createGroupCommit({ pool, batchMax, queueMax, runSingle }: GroupCommitOptions) {
  const queues = new Map<string, WalletQueue>();
  const stats = { batches: 0, commands: 0, batchSizeMax: 0, fallbacks: 0 };

  function submit(walletKey: string, command: QueuedCommand): Promise<Json> {
    let queue = queues.get(walletKey);
    if (!queue) {
      queue = { waiting: [], flushing: 0 };
      queues.set(walletKey, queue);
    }
    if (queue.waiting.length >= queueMax) {
      return Promise.reject(ledgerError(Code.ResourceExhausted, "OVERLOADED", "too many commands queued for this wallet"));
    }
    const result = new Promise<Json>((resolve, reject) => queue.waiting.push({ command, resolve, reject }));
    if (queue.flushing < batches_in_flight_max) {
      void flush(walletKey, queue);
    }
    return result;
  }

  async function flush(walletKey: string, queue: WalletQueue): Promise<void> {
    queue.flushing++;
    while (queue.waiting.length > 0) {
      const batch = queue.waiting.splice(0, batchMax);
      await runBatch(batch);
    }
    queue.flushing--;
    if (queue.flushing === 0 && queue.waiting.length === 0) {
      queues.delete(walletKey);
    }
  }

  async function runBatch(batch: Pending[]): Promise<void> {
    stats.batches++;
    stats.commands += batch.length;
    stats.batchSizeMax = Math.max(stats.batchSizeMax, batch.length);
    if (batch.length === 1) {
      const [only] = batch as [Pending];
      await runSingle(only.command).then(only.resolve, only.reject);
      return;
    }
    let results: Json[];
    try {
      const payload = batch.map(({ command: c }) => ({
        tenant_id: c.tenantId,
        command: c.command,
        key: c.key,
        fingerprint: c.fingerprint.toString("hex"),
        now: c.now.toISOString(),
        args: c.args,
      }));
      const { rows } = await pool.query<{ r: Json[] }>({
        name: "ledger_command_batch",
        text: "select ledger_command_batch($1) as r",
        values: [JSON.stringify(payload)],
      });
      results = rows[0]!.r;
    } catch {
      stats.fallbacks++;
      // The batch rolled back as a whole; run each command alone so that only the one at
      // fault sees its error, with the single path's retries and error mapping.
      await Promise.all(batch.map((p) => runSingle(p.command).then(p.resolve, p.reject)));
      return;
    }
    batch.forEach((p, i) => p.resolve(results[i]!));
  }

  return { submit, queuedWallets: () => queues.size, stats: () => ({ ...stats }) };
}

export type GroupCommit = ReturnType<typeof createGroupCommit>;

/** A bounded map from hold id to wallet, so that captures and releases join their wallet's batches. */
export function createHoldRoutes(entriesMax: number) {
  const routes = new Map<string, string>();
  return {
    remember(tenantId: string, holdId: string, walletId: string): void {
      routes.delete(`${tenantId}/${holdId}`);
      routes.set(`${tenantId}/${holdId}`, walletId);
      if (routes.size > entriesMax) {
        routes.delete(routes.keys().next().value!);
      }
    },
    walletOf: (tenantId: string, holdId: string): string | undefined => routes.get(`${tenantId}/${holdId}`),
  };
}
