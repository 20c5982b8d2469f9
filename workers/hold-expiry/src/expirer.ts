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
  /**
   * Wallets whose due holds one pass voids, in one transaction; the grant-expiry step beside it
   * takes as many accounts with expired grants, in a transaction of its own.
   */
  walletsPerPassMax: number;
  /**
   * Longest pause after a pass that found nothing more to do. The worker sleeps until the next
   * hold or grant falls due, but never longer than this, so a hold created meanwhile that falls
   * due sooner is expired at most this late (commands void due holds of their wallet anyway).
   */
  idleMs: number;
  /**
   * Shortest pause after such a pass: when something is already due but the pass could not
   * take it (its wallet was busy), this is how soon it looks again. Default: 50 ms, or idleMs
   * if that is shorter.
   */
  idleMsMin?: number;
  /** Called after a pass that expired something: its events wait in the outbox. */
  onExpired?: () => void;
  /** Longest pause after a failed pass (database down). */
  retryDelayMsMax: number;
}

const IDLE_MS_MIN_DEFAULT = 50;
/** The pause after the first failed pass; it doubles per failure up to retryDelayMsMax. */
const RETRY_DELAY_MS_MIN = 100;

export interface PassResult {
  /** Holds voided by this pass. */
  expired: number;
  /** How long after its expiry the most overdue hold of this pass was voided; null if none. */
  lagMs: number | null;
  /** Expired grants whose unheld remainder this pass posted to @breakage. */
  grantsExpired: number;
  /** How long after its expiry the most overdue grant of this pass was broken; null if none. */
  grantLagMs: number | null;
}

/** One step of a pass: how many it expired, and how overdue the oldest was (ms); null if none. */
interface StepResult {
  expired: number;
  lagMs: number | null;
}

/**
 * The hold-expiry worker's loop. Each pass calls ledger_expire_batch, which voids the due holds
 * of up to walletsPerPassMax wallets through the same SQL path as Release (journal row, balance,
 * hold status and hold.expired event, exactly once), skipping wallets whose lock is taken, so
 * that several replicas share the work and never wait for each other or for a command. Beside
 * it, ledger_expire_grants_batch posts what is left unheld in expired grants to @breakage (one
 * breakage row and grant.expired event per grant, exactly once; docs/grants.md), with the same
 * bound and the same skipping of busy wallets.
 *
 * Between passes it sleeps until the next hold or grant falls due (one indexed look at the
 * earliest of each), between idleMsMin and idleMs, so an idle worker costs one short query per
 * idleMs, not one pass every few hundred milliseconds. A hold created while it sleeps that falls
 * due before it wakes is expired up to idleMs late.
 *
 * Expiry here is housekeeping, not correctness: a hold past its expiry already stops blocking
 * funds and can no longer be captured, and an expired grant is no longer spendable, because
 * every command voids its wallet's due holds and breaks its expired grants first.
 */
export function createHoldExpirer(options: ExpirerOptions) {
  const { pool, clock, logger } = options;
  const stopping = new AbortController();
  const totals = { expired: 0, passes: 0, lagMsMax: 0, grantsExpired: 0, grantLagMsMax: 0 };

  /** Runs one of the two SQL passes at `now`. */
  async function step(name: string, fn: string, now: Date): Promise<StepResult> {
    const { rows } = await pool.query<{ expired: number; oldest_due: Date | null }>({
      name,
      text: `select expired, oldest_due from ${fn}($1, $2)`,
      values: [now, options.walletsPerPassMax],
    });
    const row = rows[0];
    return { expired: row?.expired ?? 0, lagMs: row?.oldest_due ? now.getTime() - row.oldest_due.getTime() : null };
  }

  async function pass(): Promise<PassResult> {
    const now = clock();
    // Holds first: what an expiring hold gives back to an expired grant is broken with it.
    const holds = await step("expiry_pass", "ledger_expire_batch", now);
    const grants = await step("grant_expiry_pass", "ledger_expire_grants_batch", now);
    totals.passes++;
    totals.expired += holds.expired;
    totals.grantsExpired += grants.expired;
    totals.lagMsMax = Math.max(totals.lagMsMax, holds.lagMs ?? 0);
    totals.grantLagMsMax = Math.max(totals.grantLagMsMax, grants.lagMs ?? 0);
    if (holds.expired > 0) {
      logger.info({ expired: holds.expired, lagMs: holds.lagMs }, "holds expired");
    }
    if (grants.expired > 0) {
      logger.info({ grantsExpired: grants.expired, lagMs: grants.lagMs }, "expired grants broken");
    }
    return { expired: holds.expired, lagMs: holds.lagMs, grantsExpired: grants.expired, grantLagMs: grants.lagMs };
  }

  /** How long to sleep after an idle pass: until the next hold or grant falls due, within bounds. */
  async function idleDelayMs(): Promise<number> {
    const { rows } = await pool.query<{ due: Date | null }>({
      name: "expiry_next_due",
      text: `select least((select min(expires_at) from holds where status = 'pending'),
                          (select min(expires_key) from grants where live and remaining > 0)) as due`,
    });
    const due = rows[0]?.due;
    const untilDue = due ? due.getTime() - clock().getTime() : Number.POSITIVE_INFINITY;
    return Math.min(options.idleMs, Math.max(options.idleMsMin ?? IDLE_MS_MIN_DEFAULT, untilDue));
  }

  async function run(): Promise<void> {
    let failures = 0;
    while (!stopping.signal.aborted) {
      try {
        const { expired, grantsExpired } = await pass();
        failures = 0;
        if (expired > 0 || grantsExpired > 0) {
          options.onExpired?.();
        } else {
          await pause(await idleDelayMs());
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
