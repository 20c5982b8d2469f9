// The command mixes of the benchmark. Pure: they only build requests; the load generator sends
// them. Every amount is small against the funding in databases.ts, so commands succeed unless
// the ledger is wrong (a refusal is still counted, as a valid answer, not as an error).
import { randomUUID } from "node:crypto";
import type { Method } from "./rpc-client.js";

export const workload_names = ["uniform", "hot", "retries"] as const;
export type Workload = (typeof workload_names)[number] | "raw";

/** The one wallet of the hot workload. */
export const hot_wallet_id = "hot";
export const asset = "USD";
/** A reserve holds this much; its capture takes capture_amount and the rest goes back. */
const reserve_amount = 10n;
const capture_amount = 7n;
const spend_amount = 5n;
/** The amount a retry with the same key but another body sends instead. */
const conflicting_amount = 1n;
const hold_ttl_seconds = 120;
/** Half of the iterations are Reserve → Capture pairs, half direct Spends. */
const reserve_share = 0.5;

/** The retries workload's shares of the commands re-sent after their first answer. */
const replay_now_share = 0.05;
const replay_later_share = 0.05;
const conflict_share = 0.01;
/** How long a "later" replay waits: long enough to miss any in-process cache of the answer. */
const replay_delay_ms = 1000;
/** Replays waiting for their time; the oldest is dropped when full (and counted). */
const later_queue_max = 100_000;

export type StepKind = "fresh" | "replay" | "conflict";

export interface Step {
  method: Method;
  request: Record<string, unknown>;
  kind: StepKind;
}

export function walletName(index: number): string {
  return `w${index}`;
}

/** One iteration of a workload: a Reserve → Capture pair or a Spend, on one wallet. */
export function freshSteps(workload: Workload, walletsTotal: number): Step[] {
  if (workload === "raw") return [{ method: "spend", request: { amount: 1n }, kind: "fresh" }];
  const walletId = workload === "hot" ? hot_wallet_id : walletName(Math.floor(Math.random() * walletsTotal));
  if (Math.random() >= reserve_share) {
    return [fresh("spend", { walletId, asset, amount: spend_amount, idempotencyKey: randomUUID() })];
  }
  const holdId = `h_${randomUUID()}`;
  return [
    fresh("reserve", { walletId, asset, amount: reserve_amount, holdId, ttlSeconds: hold_ttl_seconds, idempotencyKey: randomUUID() }),
    fresh("capture", { holdId, amount: capture_amount, idempotencyKey: randomUUID() }),
  ];
}

function fresh(method: Method, request: Record<string, unknown>): Step {
  return { method, request, kind: "fresh" };
}

/**
 * The retries workload's re-sends: after a fresh command has its answer, 5% are sent again at
 * once with the same key (a client retrying a timeout), 5% again replay_delay_ms later, and 1%
 * again at once with the same key and another amount (a client bug: IDEMPOTENCY_KEY_REUSED).
 */
export function createRetryPolicy() {
  const later: { dueMs: number; step: Step }[] = [];
  let dropped = 0;
  return {
    /** Steps to send right after `step`'s answer. */
    followUps(step: Step, nowMs: number): Step[] {
      if (step.kind !== "fresh") return [];
      const dice = Math.random();
      if (dice < replay_now_share) return [{ ...step, kind: "replay" }];
      if (dice < replay_now_share + replay_later_share) {
        later.push({ dueMs: nowMs + replay_delay_ms, step: { ...step, kind: "replay" } });
        if (later.length > later_queue_max) {
          later.shift();
          dropped++;
        }
        return [];
      }
      if (dice < replay_now_share + replay_later_share + conflict_share) {
        return [{ ...step, request: { ...step.request, amount: conflicting_amount }, kind: "conflict" }];
      }
      return [];
    },
    /** A later replay whose time has come, if any. Delays are equal, so the queue is in due order. */
    due(nowMs: number): Step | undefined {
      return later.length > 0 && later[0]!.dueMs <= nowMs ? later.shift()!.step : undefined;
    },
    dropped: () => dropped,
  };
}

export type RetryPolicy = ReturnType<typeof createRetryPolicy>;
