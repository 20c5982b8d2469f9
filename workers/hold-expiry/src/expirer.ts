import { setTimeout as sleep } from "node:timers/promises";
import type pg from "pg";
import type { Logger } from "pino";
import { backoffDelayMs } from "@holdfast/common/backoff";
import { logRepeated } from "@holdfast/common/logger";
import type { Clock } from "@holdfast/common/ids";

export interface ExpirerOptions {
  pool: pg.Pool;
  clock: Clock;
  logger: Logger;
  /** Wallets whose due holds one pass voids, in one transaction. */
  walletsPerPassMax: number;
  /** Pause after a pass that found nothing more to do. */
  idleMs: number;
  /** Longest pause after a failed pass (database down). */
  retryDelayMsMax: number;
}

/** The pause after the first failed pass; it doubles per failure up to retryDelayMsMax. */
const RETRY_DELAY_MS_MIN = 100;

export interface PassResult {
  /** Holds voided by this pass. */
  expired: number;
  /** How long after its expiry the most overdue hold of this pass was voided; null if none. */
  lagMs: number | null;
}

/**
 * The hold-expiry worker's loop. Each pass calls ledger_expire_batch, which voids the due holds
 * of up to walletsPerPassMax wallets through the same SQL path as Release (journal row, balance,
 * hold status and hold.expired event, exactly once), skipping wallets whose lock is taken, so
 * that several replicas share the work and never wait for each other or for a command.
 *
 * Expiry here is housekeeping, not correctness: a hold past its expiry already stops blocking
 * funds and can no longer be captured, because every command voids its wallet's due holds first.
 */
export function createHoldExpirer(options: ExpirerOptions) {
  const { pool, clock, logger } = options;
  const stopping = new AbortController();
  const totals = { expired: 0, passes: 0, lagMsMax: 0 };

  async function pass(): Promise<PassResult> {
    const now = clock();
    const { rows } = await pool.query<{ expired: number; oldest_due: Date | null }>({
      name: "expiry_pass",
      text: "select expired, oldest_due from ledger_expire_batch($1, $2)",
      values: [now, options.walletsPerPassMax],
    });
    const row = rows[0];
    const expired = row?.expired ?? 0;
    const lagMs = row?.oldest_due ? now.getTime() - row.oldest_due.getTime() : null;
    totals.passes++;
    totals.expired += expired;
    if (lagMs !== null) {
      totals.lagMsMax = Math.max(totals.lagMsMax, lagMs);
    }
    if (expired > 0) {
      logger.info({ expired, lagMs }, "holds expired");
    }
    return { expired, lagMs };
  }

  async function run(): Promise<void> {
    let failures = 0;
    while (!stopping.signal.aborted) {
      try {
        const { expired } = await pass();
        failures = 0;
        if (expired === 0) {
          await pause(options.idleMs);
        }
      } catch (err) {
        failures++;
        const delay = backoffDelayMs(failures, { delayMsMin: RETRY_DELAY_MS_MIN, delayMsMax: options.retryDelayMsMax });
        logRepeated(logger, "warn", { err, failures, retryInMs: delay }, "hold expiry pass failed; retrying");
        await pause(delay);
      }
    }
  }

  async function pause(ms: number): Promise<void> {
    await sleep(ms, undefined, { signal: stopping.signal }).catch(() => undefined);
  }

  let loop: Promise<void> | null = null;
  return {
    pass,
    start() {
      loop ??= run();
    },
    totals: () => ({ ...totals }),
    async stop() {
      stopping.abort();
      await loop;
    },
  };
}

export type HoldExpirer = ReturnType<typeof createHoldExpirer>;
