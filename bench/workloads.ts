// The command mixes of the benchmark. Pure: they only build requests; the load generator sends
// them. Every amount is small against the funding in databases.ts, so commands succeed unless
// the ledger is wrong (a refusal is still counted, as a valid answer, not as an error).
import { randomUUID } from "node:crypto";
import type { Method } from "./rpc-client.js";

export const WORKLOAD_NAMES = ["uniform", "hot", "retries", "pairs", "metered", "transfers"] as const;
export type Workload = (typeof WORKLOAD_NAMES)[number] | "raw";

/** The one wallet of the hot workload. */
export const HOT_WALLET_ID = "hot";
export const ASSET = "USD";
/** The metered workload's rate card and model, written at setup (databases.ts). */
export const RATE_CARD_ID = "bench";
export const MODEL = "bench";
/** Its prices, in billionths of a cent per million tokens: $3 input, $15 output. */
export const MODEL_PRICES = { input: 300_000_000_000n, output: 1_500_000_000_000n };
/**
 * A ReserveUsage estimate and its CaptureUsage, priced like RESERVE_AMOUNT and CAPTURE_AMOUNT:
 * 20,000 + 5,000 tokens hold 14 (13.5 rounded up), 16,000 + 4,000 capture 10 (10.8, the rest
 * carried).
 */
const USAGE_ESTIMATE = { inputTokens: 20_000n, outputTokens: 5_000n };
const USAGE_ACTUAL = { inputTokens: 16_000n, outputTokens: 4_000n };
/** A reserve holds this much; its capture takes CAPTURE_AMOUNT and the rest goes back. */
const RESERVE_AMOUNT = 10n;
const CAPTURE_AMOUNT = 7n;
const SPEND_AMOUNT = 5n;
/**
 * The transfers workload: one Transfer between two of the first TRANSFER_WALLETS uniform wallets,
 * a random pair (never the same twice), of TRANSFER_AMOUNT; the money only moves around, so
 * their funds never run out.
 */
export const TRANSFER_WALLETS = 10;
const TRANSFER_AMOUNT = 1n;
/** The amount a retry with the same key but another body sends instead. */
const CONFLICTING_AMOUNT = 1n;
const HOLD_TTL_SECONDS = 120;
/** Half of the iterations are Reserve → Capture pairs, half direct Spends. */
const RESERVE_SHARE = 0.5;

/** The retries workload's shares of the commands re-sent after their first answer. */
const REPLAY_NOW_SHARE = 0.05;
const REPLAY_LATER_SHARE = 0.05;
const CONFLICT_SHARE = 0.01;
/** How long a "later" replay waits: long enough to miss any in-process cache of the answer. */
const REPLAY_DELAY_MS = 1000;
/** Replays waiting for their time; the oldest is dropped when full (and counted). */
const LATER_QUEUE_MAX = 100_000;

export type StepKind = "fresh" | "replay" | "conflict";

export interface Step {
  method: Method;
  request: Record<string, unknown>;
  kind: StepKind;
}

export function walletName(index: number): string {
  return `w${index}`;
}

/**
 * One iteration of a workload, on one wallet: a Reserve → Capture pair or a Spend (uniform, hot,
 * retries), always a Reserve → Capture pair (pairs), or a ReserveUsage → CaptureUsage pair on
 * the rate card RATE_CARD_ID (metered); pairs and metered on the uniform wallets; one Transfer
 * between two of the first TRANSFER_WALLETS uniform wallets (transfers).
 */
export function freshSteps(workload: Workload, walletsTotal: number): Step[] {
  if (workload === "raw") return [{ method: "spend", request: { amount: 1n }, kind: "fresh" }];
  if (workload === "transfers") {
    const from = Math.floor(Math.random() * TRANSFER_WALLETS);
    const to = (from + 1 + Math.floor(Math.random() * (TRANSFER_WALLETS - 1))) % TRANSFER_WALLETS;
    const request = { fromWalletId: walletName(from), toWalletId: walletName(to), asset: ASSET, amount: TRANSFER_AMOUNT, idempotencyKey: randomUUID() };
    return [fresh("transfer", request)];
  }
  const walletId = workload === "hot" ? HOT_WALLET_ID : walletName(Math.floor(Math.random() * walletsTotal));
  if (workload === "metered") {
    const holdId = `h_${randomUUID()}`;
    const card = { rateCardId: RATE_CARD_ID, model: MODEL };
    return [
      fresh("reserveUsage", { walletId, ...card, estimate: USAGE_ESTIMATE, holdId, ttlSeconds: HOLD_TTL_SECONDS, idempotencyKey: randomUUID() }),
      fresh("captureUsage", { holdId, usage: USAGE_ACTUAL, idempotencyKey: randomUUID() }),
    ];
  }
  if (workload !== "pairs" && Math.random() >= RESERVE_SHARE) {
    return [fresh("spend", { walletId, asset: ASSET, amount: SPEND_AMOUNT, idempotencyKey: randomUUID() })];
  }
  const holdId = `h_${randomUUID()}`;
  return [
    fresh("reserve", { walletId, asset: ASSET, amount: RESERVE_AMOUNT, holdId, ttlSeconds: HOLD_TTL_SECONDS, idempotencyKey: randomUUID() }),
    fresh("capture", { holdId, amount: CAPTURE_AMOUNT, idempotencyKey: randomUUID() }),
  ];
}

function fresh(method: Method, request: Record<string, unknown>): Step {
  return { method, request, kind: "fresh" };
}

/**
 * The retries workload's re-sends: after a fresh command has its answer, 5% are sent again at
 * once with the same key (a client retrying a timeout), 5% again REPLAY_DELAY_MS later, and 1%
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
      if (dice < REPLAY_NOW_SHARE) return [{ ...step, kind: "replay" }];
      if (dice < REPLAY_NOW_SHARE + REPLAY_LATER_SHARE) {
        later.push({ dueMs: nowMs + REPLAY_DELAY_MS, step: { ...step, kind: "replay" } });
        if (later.length > LATER_QUEUE_MAX) {
          later.shift();
          dropped++;
        }
        return [];
      }
      if (dice < REPLAY_NOW_SHARE + REPLAY_LATER_SHARE + CONFLICT_SHARE) {
        return [{ ...step, request: { ...step.request, amount: CONFLICTING_AMOUNT }, kind: "conflict" }];
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
