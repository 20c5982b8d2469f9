/**
 * The battery's clients: each sends one command at a time over gRPC (deposits, reserves,
 * captures, releases, spends and transfers over a shared set of wallets), paced to its share of
 * the rate, and does what a careful client of Holdfast does when the transport fails: it sends
 * the SAME request with the SAME idempotency key again, with backoff, within a bounded number of
 * attempts and a bounded time. Every command is recorded with what the client finally learned,
 * so the checker can compare it with what the ledger stored.
 *
 * Every command carries its key in its metadata (`fault_key`), so each journal row names the
 * command that made it: a key applied twice shows up as two rows.
 *
 * @module
 */
import { randomUUID } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";

import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { backoffDelayMs } from "@holdfast/common/backoff";
import { ErrorDetailSchema } from "@holdfast/gen/holdfast/v1/errors_pb";
import { LedgerService } from "@holdfast/gen/holdfast/v1/ledger_pb";

/** The commands the clients send. */
export type CommandKind = "deposit" | "spend" | "transfer" | "reserve" | "capture" | "release";

/**
 * What the client finally learned: `applied` (a success, first time or replayed), `refused` (a
 * business refusal such as INSUFFICIENT_FUNDS), `unknown` (the retries ran out: the command may
 * or may not have been applied, but never twice), or `error` (an answer no correct run gives).
 */
export type Outcome = "applied" | "refused" | "unknown" | "error";

/** One command as the client saw it. */
export interface CommandRecord {
  readonly key: string;
  readonly kind: CommandKind;
  readonly walletId: string;
  readonly toWalletId: string | null;
  readonly holdId: string | null;
  readonly amount: bigint;
  outcome: Outcome;
  /** The refusal's reason (ErrorDetail.reason), or the error's message. */
  detail: string | null;
  /** The journal row the answer named: the transfer, or a reserve's transfer; null for a release. */
  transferId: string | null;
  attempts: number;
  /** True when the answer that counted was a replay of an earlier attempt that had been applied. */
  replayed: boolean;
  readonly startedAtMs: number;
  endedAtMs: number;
}

/** The business refusals a correct run can meet; any other refusal is an error. */
export const REFUSAL_REASONS: ReadonlySet<string> = new Set(["INSUFFICIENT_FUNDS", "HOLD_EXPIRED", "HOLD_NOT_PENDING"]);

/** Transport failures: the command may or may not have run, so the same request goes again. */
const RETRYABLE_CODES: ReadonlySet<Code> = new Set([
  Code.Unavailable, Code.Unknown, Code.Internal, Code.DeadlineExceeded, Code.ResourceExhausted, Code.Aborted, Code.Canceled,
]);
const ATTEMPTS_MAX = 200;
/** Longest a command may keep retrying: well beyond any outage the battery causes. */
const COMMAND_TIME_MS_MAX = 90_000;
const CALL_TIMEOUT_MS = 10_000;
const RETRY_DELAY_MS_MIN = 50;
const RETRY_DELAY_MS_MAX = 1000;
const ASSET = "USD";
/** Each wallet's opening deposit: far more than the load spends from it. */
export const OPENING_FUNDS = 10_000_000n;
/** A spend far above any balance, sent now and then to exercise the refusal path. */
const OVERSIZED_AMOUNT = 10n ** 15n;
const HOLD_TTL_SECONDS_LONG = 600;
/** Short holds are left alone for the hold-expiry worker (or the next debit) to void. */
const HOLD_TTL_SECONDS_SHORT = 1;
/** Longest pause between two commands of a client, so that it notices `done` promptly. */
const PACING_WAIT_MS_MAX = 1000;
/** Open holds one client keeps at most; beyond it, it captures or releases first. */
const OPEN_HOLDS_MAX = 32;

/** The wallets of a run: `w_0` ... `w_<n-1>`. */
export function walletIds(count: number): string[] {
  return Array.from({ length: count }, (_, i) => `w_${i}`);
}

/** A small seeded generator (mulberry32): the same seed gives the same command mix. */
export function createRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
}

/** The ledger's gRPC client with a key, over its own HTTP/2 connection. */
export interface LedgerCaller {
  readonly client: Client<typeof LedgerService>;
  readonly headers: Readonly<Record<string, string>>;
}

export function createLedgerCaller(baseUrl: string, apiKey: string): LedgerCaller {
  return { client: createClient(LedgerService, createGrpcTransport({ baseUrl })), headers: { authorization: `Bearer ${apiKey}` } };
}

/** A command ready to send, and how to read its answer. */
interface Planned {
  readonly record: CommandRecord;
  send(caller: LedgerCaller): Promise<{ transferId: string | null; replayed: boolean }>;
}

/** Sends `planned` until it gets an answer that counts, or the retry budget runs out. */
export async function runCommand(caller: LedgerCaller, planned: Planned): Promise<CommandRecord> {
  const { record } = planned;
  const deadlineMs = record.startedAtMs + COMMAND_TIME_MS_MAX;
  for (;;) {
    record.attempts++;
    try {
      const answer = await planned.send(caller);
      return finish(record, "applied", null, answer);
    } catch (err) {
      const error = ConnectError.from(err);
      const reason = error.findDetails(ErrorDetailSchema)[0]?.reason ?? "";
      if (REFUSAL_REASONS.has(reason)) return finish(record, "refused", reason);
      if (!RETRYABLE_CODES.has(error.code)) return finish(record, "error", `${Code[error.code]} ${reason} ${error.rawMessage}`);
      const delayMs = backoffDelayMs(record.attempts - 1, { delayMsMin: RETRY_DELAY_MS_MIN, delayMsMax: RETRY_DELAY_MS_MAX });
      if (record.attempts >= ATTEMPTS_MAX || Date.now() + delayMs > deadlineMs) {
        return finish(record, "unknown", `${Code[error.code]} ${error.rawMessage}`);
      }
      await sleep(delayMs * (0.5 + Math.random() / 2));
    }
  }
}

function finish(
  record: CommandRecord,
  outcome: Outcome,
  detail: string | null,
  answer: { transferId: string | null; replayed: boolean } = { transferId: null, replayed: false },
): CommandRecord {
  record.outcome = outcome;
  record.detail = detail;
  record.transferId = answer.transferId;
  record.replayed = answer.replayed;
  record.endedAtMs = Date.now();
  return record;
}

function newRecord(kind: CommandKind, walletId: string, amount: bigint, extra: { toWalletId?: string; holdId?: string } = {}): CommandRecord {
  return {
    key: `${kind}-${randomUUID()}`,
    kind,
    walletId,
    toWalletId: extra.toWalletId ?? null,
    holdId: extra.holdId ?? null,
    amount,
    outcome: "unknown",
    detail: null,
    transferId: null,
    attempts: 0,
    replayed: false,
    startedAtMs: Date.now(),
    endedAtMs: 0,
  };
}

/** The opening deposit of a wallet. */
export function planDeposit(walletId: string, amount: bigint): Planned {
  const record = newRecord("deposit", walletId, amount);
  const request = { walletId, asset: ASSET, amount, idempotencyKey: record.key, metadata: { fault_key: record.key } };
  return {
    record,
    async send({ client, headers }) {
      const r = await client.deposit(request, { headers, timeoutMs: CALL_TIMEOUT_MS });
      return { transferId: r.transfer?.transferId ?? null, replayed: r.replayed };
    },
  };
}

function planSpend(walletId: string, amount: bigint): Planned {
  const record = newRecord("spend", walletId, amount);
  const request = { walletId, asset: ASSET, amount, idempotencyKey: record.key, metadata: { fault_key: record.key } };
  return {
    record,
    async send({ client, headers }) {
      const r = await client.spend(request, { headers, timeoutMs: CALL_TIMEOUT_MS });
      return { transferId: r.transfer?.transferId ?? null, replayed: r.replayed };
    },
  };
}

function planTransfer(fromWalletId: string, toWalletId: string, amount: bigint): Planned {
  const record = newRecord("transfer", fromWalletId, amount, { toWalletId });
  const request = { fromWalletId, toWalletId, asset: ASSET, amount, idempotencyKey: record.key, metadata: { fault_key: record.key } };
  return {
    record,
    async send({ client, headers }) {
      const r = await client.transfer(request, { headers, timeoutMs: CALL_TIMEOUT_MS });
      return { transferId: r.transfer?.transferId ?? null, replayed: r.replayed };
    },
  };
}

function planReserve(walletId: string, amount: bigint, ttlSeconds: number): Planned {
  const holdId = `h_${randomUUID()}`;
  const record = newRecord("reserve", walletId, amount, { holdId });
  const request = { walletId, asset: ASSET, amount, holdId, ttlSeconds, idempotencyKey: record.key, metadata: { fault_key: record.key } };
  return {
    record,
    async send({ client, headers }) {
      const r = await client.reserve(request, { headers, timeoutMs: CALL_TIMEOUT_MS });
      return { transferId: r.hold?.reserveTransferId ?? null, replayed: r.replayed };
    },
  };
}

function planCapture(hold: OpenHold, amount: bigint): Planned {
  const record = newRecord("capture", hold.walletId, amount, { holdId: hold.holdId });
  const request = { holdId: hold.holdId, amount, idempotencyKey: record.key, metadata: { fault_key: record.key } };
  return {
    record,
    async send({ client, headers }) {
      const r = await client.capture(request, { headers, timeoutMs: CALL_TIMEOUT_MS });
      return { transferId: r.transfer?.transferId ?? null, replayed: r.replayed };
    },
  };
}

function planRelease(hold: OpenHold): Planned {
  const record = newRecord("release", hold.walletId, hold.amount, { holdId: hold.holdId });
  const request = { holdId: hold.holdId, idempotencyKey: record.key };
  return {
    record,
    async send({ client, headers }) {
      const r = await client.release(request, { headers, timeoutMs: CALL_TIMEOUT_MS });
      return { transferId: null, replayed: r.replayed };
    },
  };
}

interface OpenHold {
  readonly holdId: string;
  readonly walletId: string;
  readonly amount: bigint;
}

/** What one client needs to run. */
export interface ClientOptions {
  readonly caller: LedgerCaller;
  readonly wallets: readonly string[];
  readonly random: () => number;
  /** The client sends its next command this long after the previous one started, or at once when late. */
  readonly intervalMs: number;
  /** True once the client should start no more commands (the load's end, with every fault done). */
  readonly done: () => boolean;
  /** Every finished command, in the order they finished. */
  readonly sink: CommandRecord[];
}

/** One client's loop: a command at a time until `done`; the last one finishes its retries. */
export async function runClient(options: ClientOptions): Promise<void> {
  const { random, wallets } = options;
  const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)]!;
  const amount = (min: number, max: number) => BigInt(min + Math.floor(random() * (max - min + 1)));
  const openHolds: OpenHold[] = [];
  let nextStartMs = Date.now();
  while (!options.done()) {
    const planned = nextCommand(random, pick, amount, wallets, openHolds);
    const record = await runCommand(options.caller, planned);
    options.sink.push(record);
    if (record.kind === "reserve" && record.outcome === "applied" && planned.longHold) {
      openHolds.push({ holdId: record.holdId!, walletId: record.walletId, amount: record.amount });
    }
    nextStartMs += options.intervalMs;
    const waitMs = nextStartMs - Date.now();
    if (waitMs > 0) await sleep(Math.min(waitMs, PACING_WAIT_MS_MAX));
    else nextStartMs = Date.now();
  }
}

/** The next command of the mix; a command on an open hold takes the client's oldest one. */
function nextCommand(
  random: () => number,
  pick: <T>(items: readonly T[]) => T,
  amount: (min: number, max: number) => bigint,
  wallets: readonly string[],
  openHolds: OpenHold[],
): Planned & { longHold?: boolean } {
  const roll = openHolds.length >= OPEN_HOLDS_MAX ? 0.7 + random() * 0.3 : random();
  const walletId = pick(wallets);
  if (roll < 0.15) return planDeposit(walletId, amount(100, 10_000));
  if (roll < 0.33) return planSpend(walletId, random() < 0.05 ? OVERSIZED_AMOUNT : amount(1, 500));
  if (roll < 0.48) {
    const others = wallets.filter((w) => w !== walletId);
    return planTransfer(walletId, pick(others), amount(1, 500));
  }
  if (roll < 0.7) {
    const long = random() >= 0.25;
    return { ...planReserve(walletId, amount(100, 2000), long ? HOLD_TTL_SECONDS_LONG : HOLD_TTL_SECONDS_SHORT), longHold: long };
  }
  const hold = openHolds.shift();
  if (hold === undefined) return planDeposit(walletId, amount(100, 10_000));
  // A capture may take less than the hold (the rest returns) and never more, so it always fits.
  if (roll < 0.88) return planCapture(hold, amount(1, Number(hold.amount)));
  return planRelease(hold);
}
