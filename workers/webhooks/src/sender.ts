/**
 * The sending half of the worker: claims due deliveries from PostgreSQL, posts them
 * concurrently, and records each outcome.
 *
 * Two bounds keep endpoints from holding each other back. `concurrency` caps the requests this
 * process has in flight; `endpointConcurrency` caps one endpoint's, across all replicas (the
 * claim enforces it, see deliveries.ts). So a hanging endpoint occupies at most
 * `endpointConcurrency` of the `concurrency` slots until its requests time out, and every other
 * endpoint's deliveries keep flowing through the rest: no head-of-line blocking.
 *
 * Successes are recorded in batches (one statement for all that finished meanwhile), and each
 * may pass its slot straight to its endpoint's next due delivery, so a busy endpoint keeps its
 * slots busy without a round through the claim loop.
 *
 * @module
 */
import { setTimeout as sleep } from "node:timers/promises";
import type pg from "pg";
import type { Logger } from "pino";
import { backoffDelayMs } from "@holdfast/common/backoff";
import { logRepeated } from "@holdfast/common/logger";
import type { IdGenerator } from "@holdfast/common/ids";
import { createWaker, type Waker } from "@holdfast/common/waker";
import type { AddedDelivery } from "@holdfast/webhooks-core/messages";
import { claimDeliveries, disableEndpoint, recordFailure, recordSuccesses, type Claim, type ClaimedDelivery, type Success } from "./deliveries.js";
import type { HttpPoster } from "./http-post.js";
import { verdictOf, type AttemptResult, type Verdict } from "./schedule.js";
import { signatureHeaders } from "./signing.js";

export interface SenderOptions {
  readonly pool: pg.Pool;
  readonly logger: Logger;
  readonly poster: HttpPoster;
  readonly newId: IdGenerator;
  /** Most requests in flight in this process. */
  readonly concurrency: number;
  /** Most requests in flight to one endpoint, all replicas together. */
  readonly endpointConcurrency: number;
  readonly retryScheduleMs: readonly number[];
  readonly disableAfterSeconds: number;
  /** How long a claim stays this worker's; longer than a whole attempt. */
  readonly leaseMs: number;
  /** Most endpoints one claim looks at. */
  readonly claimEndpointsMax: number;
  /**
   * Pause between claims when nothing is due and nobody woke the sender: the safety poll. New
   * deliveries (the intake), finished attempts and this process's retries falling due wake it;
   * what only the poll finds is a retry another replica scheduled, a RetryDelivery call, or a
   * lease that ran out.
   */
  readonly pollIdleMs: number;
  /** Longest pause after a failed claim (the database away), doubling up to it. */
  readonly retryDelayMsMax: number;
  readonly random?: () => number;
}

/** Counters since start, for the periodic log line and for tests. */
export interface SenderTotals {
  attempts: number;
  succeeded: number;
  retried: number;
  failed: number;
  disabled: number;
  inFlight: number;
  latencyMsMax: number;
  /** Claims run (each a transaction), and those of them that found nothing to send. */
  claims: number;
  claimsEmpty: number;
}

/** The pause after the first failed claim; it doubles per failure up to retryDelayMsMax. */
const CLAIM_RETRY_DELAY_MS_MIN = 50;
/** Most successes recorded by one statement. */
const SUCCESS_BATCH_MAX = 256;
/**
 * Most deliveries one slot passes along before it goes back to the claim loop. Without a bound,
 * the replica that first claimed a busy endpoint's slots would keep them for good; with it, every
 * replica's claims get a turn, and work follows the replicas with room.
 */
const CHAIN_LENGTH_MAX = 32;
/** How long after a retry's due time the sender wakes for it, so that the claim finds it due. */
const RETRY_WAKE_SLACK_MS = 10;

/** A success to record, and how many deliveries its slot has passed along so far. */
interface ChainedSuccess {
  readonly success: Success;
  readonly chained: number;
}

/** The sender of one worker; see the module comment for how its two bounds isolate endpoints. */
export function createSender(options: SenderOptions) {
  const { pool } = options;
  const totals: SenderTotals = { attempts: 0, succeeded: 0, retried: 0, failed: 0, disabled: 0, inFlight: 0, latencyMsMax: 0, claims: 0, claimsEmpty: 0 };
  /** Attempts holding one of the `concurrency` slots. */
  let slotsUsed = 0;
  /** This process's attempts in flight per endpoint (`tenant/endpoint`), chained ones included. */
  const inFlightByEndpoint = new Map<string, number>();
  const tasks = new Set<Promise<void>>();
  let stopping = false;
  let loop: Promise<void> | null = null;
  const waker = createWaker();
  const recordSuccess = createBatcher<ChainedSuccess, boolean>(SUCCESS_BATCH_MAX, recordAndChain);
  const retryWake = createRetryWake(waker);
  const attemptDeps: AttemptDeps = { options, totals, recordSuccess, stopping: () => stopping, retryIn: retryWake.retryIn };

  /**
   * Starts an attempt. `chained` counts the deliveries its slot has passed along so far; above
   * zero the slot is inherited from one that just succeeded, so no new slot is taken.
   */
  function launch(delivery: ClaimedDelivery, chained: number): void {
    if (chained === 0) slotsUsed++;
    totals.inFlight = slotsUsed;
    const endpoint = endpointKey(delivery.tenant_id, delivery.endpoint_id);
    inFlightByEndpoint.set(endpoint, (inFlightByEndpoint.get(endpoint) ?? 0) + 1);
    const task = attemptDelivery(attemptDeps, delivery, performance.now(), chained)
      .then((handedOver) => {
        const left = inFlightByEndpoint.get(endpoint)! - 1;
        if (left === 0) inFlightByEndpoint.delete(endpoint);
        else inFlightByEndpoint.set(endpoint, left);
        // A slot handed to the endpoint's next delivery is still taken: waking the claim loop
        // for it would only run a claim that finds no room (measured: one wasted claim
        // transaction per delivery cost a busy endpoint about a fifth of its throughput).
        if (!handedOver) {
          slotsUsed--;
          waker.wake();
        }
        totals.inFlight = slotsUsed;
      })
      .finally(() => tasks.delete(task));
    tasks.add(task);
  }

  /**
   * Records a batch of successes and leases, in the same transaction, the next due delivery of
   * each endpoint per success (see recordSuccesses): a busy endpoint's slots pass straight from
   * one delivery to the next without waiting for the claim loop. The new attempts start here and
   * take over the finished ones' slots, so `concurrency` still bounds the total.
   */
  async function recordAndChain(batch: ChainedSuccess[]): Promise<boolean[]> {
    const next = await recordSuccesses(pool, batch.map((item) => item.success), options.leaseMs);
    // Slots are interchangeable: the new attempts inherit from the chaining successes in order.
    const heirs = batch.filter((item) => item.success.chain);
    next.forEach((delivery, i) => launch(delivery, heirs[i]!.chained + 1));
    let handedOver = next.length;
    return batch.map((item) => item.success.chain && handedOver-- > 0);
  }

  return {
    start(): void {
      loop ??= runClaimLoop({ options, totals, waker, room: () => options.concurrency - slotsUsed, launch, stopping: () => stopping });
    },
    /**
     * New deliveries were stored: wake the claim loop, unless every one of them is for an
     * endpoint this process already sends to at its limit. Those go out without a claim: each
     * attempt at that endpoint, when it ends, either leases the endpoint's next due delivery
     * (recordSuccesses) or frees its slot and wakes the claim loop. A claim now could only find
     * the endpoint full (measured under a busy endpoint: one empty claim per stored batch, a
     * tenth of a core of PostgreSQL, docs/performance.md, "Retention").
     */
    deliveriesAdded(added: readonly AddedDelivery[]): void {
      const full = (d: AddedDelivery) => (inFlightByEndpoint.get(endpointKey(d.tenant_id, d.endpoint_id)) ?? 0) >= options.endpointConcurrency;
      if (!added.every(full)) waker.wake();
    },
    totals: (): SenderTotals => ({ ...totals }),
    /** Stops claiming and waits for the attempts in flight (each bounded by the request timeout). */
    async stop(): Promise<void> {
      stopping = true;
      retryWake.stop();
      waker.wake();
      await loop;
      while (tasks.size > 0) {
        await Promise.allSettled([...tasks]);
      }
    },
  };
}

function endpointKey(tenantId: string, endpointId: string): string {
  return `${tenantId}/${endpointId}`;
}

/** What the claim loop needs from its sender. */
interface ClaimLoopDeps {
  readonly options: SenderOptions;
  readonly totals: SenderTotals;
  readonly waker: Waker;
  /** Slots free now. */
  readonly room: () => number;
  readonly launch: (delivery: ClaimedDelivery, chained: number) => void;
  readonly stopping: () => boolean;
}

/**
 * Claims due deliveries while there is room and launches each, until the sender stops. With
 * nothing due it waits for new work (the intake and finishing attempts wake it) or the poll
 * interval; after a failed claim (the database away) it backs off.
 */
async function runClaimLoop(deps: ClaimLoopDeps): Promise<void> {
  const { options, waker } = deps;
  let failures = 0;
  while (!deps.stopping()) {
    const room = deps.room();
    if (room <= 0) {
      await waker.idle(options.pollIdleMs);
      continue;
    }
    let claim: Claim;
    try {
      deps.totals.claims++;
      claim = await claimDeliveries(options.pool, {
        endpointsMax: options.claimEndpointsMax,
        deliveriesMax: room,
        perEndpointMax: options.endpointConcurrency,
        leaseMs: options.leaseMs,
      });
      failures = 0;
    } catch (err) {
      failures++;
      const delay = backoffDelayMs(failures, { delayMsMin: CLAIM_RETRY_DELAY_MS_MIN, delayMsMax: options.retryDelayMsMax });
      logRepeated(options.logger, "warn", { err, retryInMs: delay }, "webhooks: claiming deliveries failed; retrying");
      await sleep(delay);
      continue;
    }
    for (const delivery of claim.deliveries) deps.launch(delivery, 0);
    if (claim.deliveries.length === 0) deps.totals.claimsEmpty++;
    // Look again at once only if this claim may have left work behind: it filled all the room
    // it had, or it looked at as many endpoints as one claim may. Otherwise every endpoint with
    // a due delivery and a free slot got its share, and a claim now could only find them full
    // (measured: an empty claim after each productive one). Whatever arrives or frees a slot
    // meanwhile wakes the loop, and a wake during the claim ends the next wait at once.
    const more = claim.deliveries.length >= room || claim.endpointsLooked >= options.claimEndpointsMax;
    if (!more) {
      await waker.idle(options.pollIdleMs);
    }
  }
}

/** What one attempt needs from its sender. */
interface AttemptDeps {
  readonly options: SenderOptions;
  readonly totals: SenderTotals;
  readonly recordSuccess: (item: ChainedSuccess) => Promise<boolean>;
  readonly stopping: () => boolean;
  /** A retry of this process falls due in `ms`: wake the claim loop then. */
  readonly retryIn: (ms: number) => void;
}

/**
 * One attempt: sign, post, record. Resolves whether its slot was handed to a next delivery.
 * Never rejects; a failure to record is logged and the lease left to expire.
 */
async function attemptDelivery(deps: AttemptDeps, d: ClaimedDelivery, claimedAtMs: number, chained: number): Promise<boolean> {
  const { options, totals } = deps;
  const log = options.logger.child({ deliveryId: d.delivery_id, endpointId: d.endpoint_id, eventId: d.event_id, attempt: d.attempts });
  try {
    const secrets = d.previous_secret === null ? [d.secret] : [d.secret, d.previous_secret];
    const headers = signatureHeaders(d.event_id, d.body, secrets, new Date());
    const result = await options.poster.post(d.url, headers, d.body);
    totals.attempts++;
    totals.latencyMsMax = Math.max(totals.latencyMsMax, result.latencyMs);
    const verdict = verdictOf(result, d.attempts, options.retryScheduleMs, options.random);
    if (verdict.kind === "succeeded") {
      // Chain only while the lease is young: a slot whose lease ran out may already be counted
      // free by a claim, and handing it on could put the endpoint over its limit.
      const young = performance.now() - claimedAtMs < options.leaseMs / 2;
      const chain = !deps.stopping() && young && chained < CHAIN_LENGTH_MAX;
      const success = { delivery: d, status: result.status!, latencyMs: result.latencyMs, chain };
      const handedOver = await deps.recordSuccess({ success, chained });
      totals.succeeded++;
      return handedOver;
    }
    await recordFailedAttempt(options, totals, log, d, result, verdict);
    if (verdict.kind === "retry") deps.retryIn(verdict.delayMs);
  } catch (err) {
    log.error({ err }, "webhooks: could not record an attempt; the delivery is retried when its lease expires");
  }
  return false;
}

/** Records a failed attempt, and disables the endpoint when it is gone or has failed too long. */
async function recordFailedAttempt(
  options: SenderOptions,
  totals: SenderTotals,
  log: Logger,
  d: ClaimedDelivery,
  result: AttemptResult,
  verdict: Exclude<Verdict, { kind: "succeeded" }>,
): Promise<void> {
  const { pool } = options;
  const final = verdict.kind === "failed";
  const outcome = { status: result.status, error: result.error, latencyMs: result.latencyMs };
  const delayMs = verdict.kind === "retry" ? verdict.delayMs : 0;
  const recorded = await recordFailure(pool, d, outcome, { final, delayMs }, options.disableAfterSeconds);
  totals[final ? "failed" : "retried"]++;
  log[final ? "warn" : "debug"]({ status: result.status, error: result.error, final }, "webhooks: attempt failed");
  const gone = verdict.gone;
  if (recorded !== null && (gone || recorded.failingTooLong)) {
    const reason = gone ? "gone" : "failing";
    const lastError = result.error ?? "";
    if (await disableEndpoint(pool, options.newId, { tenantId: d.tenant_id, endpointId: d.endpoint_id, reason, lastError })) {
      totals.disabled++;
      log.warn({ reason }, "webhooks: endpoint disabled");
    }
  }
}

/**
 * Wakes the claim loop when the earliest retry this process scheduled falls due, so a retry is
 * not late by up to the safety poll. One timer, for the earliest; a later one left when it fires
 * is found by the claim it triggers if due by then, or by the safety poll.
 */
function createRetryWake(waker: Waker) {
  let timer: NodeJS.Timeout | null = null;
  let dueAt = Number.POSITIVE_INFINITY;
  return {
    retryIn(ms: number): void {
      const at = Date.now() + ms + RETRY_WAKE_SLACK_MS;
      if (at >= dueAt) return;
      if (timer !== null) clearTimeout(timer);
      dueAt = at;
      timer = setTimeout(() => {
        timer = null;
        dueAt = Number.POSITIVE_INFINITY;
        waker.wake();
      }, at - Date.now());
      timer.unref();
    },
    stop(): void {
      if (timer !== null) clearTimeout(timer);
      timer = null;
    },
  };
}

export type Sender = ReturnType<typeof createSender>;

/**
 * Group commit for outcomes: items queued while a flush runs go out together in the next one,
 * so a busy sender writes one statement per batch rather than one per delivery, and a quiet one
 * writes each at once. Each caller's promise settles with its own result from its batch.
 */
function createBatcher<T, R>(batchMax: number, flush: (batch: T[]) => Promise<R[]>): (item: T) => Promise<R> {
  let queue: { item: T; resolve: (result: R) => void; reject: (err: unknown) => void }[] = [];
  let running = false;

  async function drain(): Promise<void> {
    running = true;
    while (queue.length > 0) {
      const batch = queue.slice(0, batchMax);
      queue = queue.slice(batchMax);
      try {
        const results = await flush(batch.map((entry) => entry.item));
        batch.forEach((entry, i) => entry.resolve(results[i]!));
      } catch (err) {
        for (const entry of batch) entry.reject(err);
      }
    }
    running = false;
  }

  return (item) =>
    new Promise<R>((resolve, reject) => {
      queue.push({ item, resolve, reject });
      if (!running) void drain();
    });
}
