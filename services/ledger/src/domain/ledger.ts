import type pg from "pg";
import type { Clock, IdGenerator } from "@holdfast/common/ids";
import { createBatches } from "./batches.js";
import { createCommands } from "./commands.js";
import { createGroupCommit } from "./group-commit.js";
import { createQueries } from "./queries.js";
import { createStatements } from "./statements.js";

export interface LedgerOptions {
  pool: pg.Pool;
  clock: Clock;
  newId: IdGenerator;
  /** Group commit per wallet (see group-commit.ts); null runs every command alone. */
  groupCommit?: { batchMax: number; queueMax: number } | null;
}

/**
 * The ledger core: the commands (commands.ts), optionally batched per wallet (group-commit.ts),
 * atomic batches of commands (batches.ts), and the reads (queries.ts), over one pool. The
 * clock and the id generator are arguments so that tests can drive time.
 */
export function createLedger({ pool, clock, newId, groupCommit = null }: LedgerOptions) {
  const batches = groupCommit === null ? null : createGroupCommit({ pool, ...groupCommit });
  return {
    ...createCommands({ pool, clock, newId, queue: batches }),
    ...createQueries({ pool, clock }),
    ...createStatements({ pool, clock, newId }),
    ...createBatches({ pool, clock, newId }),
    /** Group commit counters (batches, commands, largest batch, fallbacks); null when off. */
    groupCommitStats: () => batches?.stats() ?? null,
  };
}

export type Ledger = ReturnType<typeof createLedger>;
