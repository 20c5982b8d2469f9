/**
 * Delivery of usage to one sink: batching within the engine's limit, bounded retries with
 * exponential backoff and jitter, Retry-After honoured, and permanent refusals isolated down
 * to the one record at fault.
 *
 * Every send is safe to repeat: each record carries its transfer id as the engine's
 * idempotency key, so the worst a retry of an accepted request can do is be deduplicated.
 *
 * - A transient failure (network, timeout, 429, 5xx) is retried up to `attempts_max` times,
 *   waiting `retry_delay_ms_min * 2^n` (capped at `retry_delay_ms_max`, half of it random), or
 *   exactly Retry-After when the engine sends one (up to `retry_after_ms_max`). After that, or
 *   past the caller's deadline, the records are returned as `failed` with the delay the
 *   engine asked for: the stream hands them back to JetStream, which redelivers them later.
 * - A refusal of the whole request for good (a 4xx that names no record) is split in halves
 *   until the one record at fault is found; the rest are delivered. Splitting costs
 *   O(log batch) extra requests and only when the input is bad.
 * - A record refused for good comes back `dead`, with the engine's answer.
 *
 * @module
 */
import { setTimeout as sleep } from "node:timers/promises";
import { backoffDelayMs } from "@holdfast/common/backoff";
import type { BillableUsage } from "./mapping.js";
import type { ItemResult, Sink } from "./sinks/index.js";

export type DeliveryOutcome =
  | { readonly status: "delivered"; readonly attempts: number }
  | { readonly status: "dead"; readonly httpStatus: number; readonly answer: string; readonly attempts: number }
  | { readonly status: "failed"; readonly answer: string; readonly retryAfterMs: number | null; readonly attempts: number };

export interface DeliveryOptions {
  readonly signal: AbortSignal;
  /** Epoch ms after which no retry starts; records still failing are returned `failed`. */
  readonly deadline: number;
  /** Called before each request (the stream tells JetStream it is still working). */
  readonly onAttempt?: () => void;
  /** Called when records are about to be retried after a transient failure. */
  readonly onRetry?: (count: number, answer: string, delayMs: number) => void;
  /** Source of randomness for jitter; tests may pin it. */
  readonly random?: () => number;
}

type Retry = Extract<ItemResult, { status: "retry" }>;

/** Delivers `usages` and returns one outcome per usage, in order. Never throws for an engine. */
export async function deliver(sink: Sink, usages: readonly BillableUsage[], options: DeliveryOptions): Promise<DeliveryOutcome[]> {
  const { config } = sink;
  const random = options.random ?? Math.random;
  const outcomes: DeliveryOutcome[] = new Array(usages.length);
  const attempts = new Array<number>(usages.length).fill(0);

  const fail = (indices: readonly number[], answer: string, retryAfterMs: number | null) => {
    for (const i of indices) outcomes[i] = { status: "failed", answer, retryAfterMs, attempts: attempts[i]! };
  };

  /** The wait before retry number `retry` (1-based), or null when it may not happen in process. */
  function delayFor(retry: number, result: Retry): number | null {
    if (result.retryAfterMs !== null) return result.retryAfterMs <= config.retryAfterMsMax ? result.retryAfterMs : null;
    const ceiling = backoffDelayMs(retry - 1, { delayMsMin: config.retryDelayMsMin, delayMsMax: config.retryDelayMsMax });
    return Math.round(ceiling / 2 + (random() * ceiling) / 2);
  }

  async function deliverChunk(chunk: readonly number[]): Promise<void> {
    let todo = chunk;
    let retries = 0;
    while (todo.length > 0) {
      if (options.signal.aborted) return fail(todo, "worker stopping", null);
      options.onAttempt?.();
      const results = await sink.send(
        todo.map((i) => usages[i]!),
        options.signal,
      );
      const again: number[] = [];
      const transient: number[] = [];
      let lastRetry: Retry | null = null;
      let wholeRefusal: Extract<ItemResult, { status: "batch_rejected" }> | null = null;
      for (const [k, result] of results.entries()) {
        const i = todo[k]!;
        attempts[i]! += 1;
        if (result.status === "accepted") outcomes[i] = { status: "delivered", attempts: attempts[i]! };
        else if (result.status === "rejected") outcomes[i] = { status: "dead", httpStatus: result.httpStatus, answer: result.answer, attempts: attempts[i]! };
        else if (result.status === "resend") again.push(i);
        else if (result.status === "retry") {
          transient.push(i);
          lastRetry = result;
        } else wholeRefusal = result;
      }
      if (wholeRefusal !== null) return splitRefused(todo, wholeRefusal);
      if (transient.length === 0 && again.length === todo.length) {
        // Nothing was settled; count it as a retry so a confused engine cannot loop us.
        if (++retries >= config.attemptsMax) return fail(todo, "the engine settled none of the batch", null);
      }
      if (lastRetry !== null) {
        const retry = lastRetry;
        retries += 1;
        const delay = delayFor(retries, retry);
        if (retries >= config.attemptsMax || delay === null || Date.now() + delay > options.deadline) {
          fail(transient, describe(retry), retry.retryAfterMs);
          todo = again;
          continue;
        }
        options.onRetry?.(transient.length, describe(retry), delay);
        await sleep(delay, undefined, { signal: options.signal }).catch(() => undefined);
        todo = [...again, ...transient];
        continue;
      }
      todo = again;
    }
  }

  async function splitRefused(todo: readonly number[], refusal: Extract<ItemResult, { status: "batch_rejected" }>): Promise<void> {
    if (todo.length === 1) {
      const i = todo[0]!;
      outcomes[i] = { status: "dead", httpStatus: refusal.httpStatus, answer: refusal.answer, attempts: attempts[i]! };
      return;
    }
    const middle = Math.ceil(todo.length / 2);
    await deliverChunk(todo.slice(0, middle));
    await deliverChunk(todo.slice(middle));
  }

  const indices = usages.map((_, i) => i);
  for (let start = 0; start < indices.length; start += config.batchSizeMax) {
    await deliverChunk(indices.slice(start, start + config.batchSizeMax));
  }
  return outcomes;
}

function describe(result: Retry): string {
  return result.httpStatus === null ? result.answer : `HTTP ${result.httpStatus}: ${result.answer}`;
}
