import type pg from "pg";
import type { Clock, IdGenerator } from "@holdfast/common/ids";
import type { CommandCall, Unkeyed } from "./command-call.js";
import {
  captureCall,
  createGrantCall,
  depositCall,
  extendHoldCall,
  refundCall,
  releaseCall,
  reserveCall,
  spendCall,
  transferCall,
  withTransientRetry,
} from "./commands.js";
import { requestFingerprint } from "./fingerprint.js";
import {
  captureUsageCall,
  parseUsageCharge,
  parseUsageQuote,
  reserveUsageCall,
  spendUsageCall,
  type CaptureUsageInput, type CaptureUsageResult, type ReserveUsageInput, type ReserveUsageResult, type SpendUsageInput, type SpendUsageResult } from "./usage.js";
import {
  parseBalance,
  parseCaptureResult,
  parseGrantResult,
  parseHold,
  parseHoldResult,
  parseRefundResult,
  parseRefusal,
  parseTransfer,
  parseTransferBetweenResult,
  parseTransferResult,
} from "./rows.js";
import type {
  CaptureInput,
  CaptureResult,
  Caller,
  CreateGrantInput,
  DepositInput,
  ExtendHoldInput,
  GrantResult,
  Hold,
  HoldCommandInput,
  HoldResult,
  Json,
  RefundInput,
  RefundResult,
  Refusal,
  ReserveInput,
  SpendInput,
  TransferBetweenResult,
  TransferInput,
  TransferResult,
} from "./types.js";

/**
 * Atomic batches (docs/batches.md): up to {@link BATCH_COMMANDS_MAX} wallet commands applied
 * in one transaction, all of them or none, by one call of the SQL function
 * `ledger_execute_batch` (migrations/0016_batches.sql). The commands are the single commands of
 * commands.ts, with the same arguments, run by the same `ledger_command_dispatch` in request
 * order; the batch's idempotency key covers them all, and a refusal of any of them leaves
 * nothing applied and is recorded under that key with the index of the command at fault.
 *
 * A batch bypasses group commit (group-commit.ts): it is always a transaction of its own that
 * locks every wallet it names up front, in wallet id order. Joining one wallet's queue would
 * take the batch's other wallet locks inside that wallet's group transaction, after its lock
 * and so out of the one global order, where batches could deadlock; and the queue's fallback
 * (each command run alone when a group fails) would split the batch. The one-writer rule is
 * about throughput, never correctness (docs/architecture.md, "Hot wallets: who writes"): the
 * wallet row lock serialises the queue's writer and the batch, which take turns on it.
 */

/** The most commands in one batch (the proto's documented limit). */
export const BATCH_COMMANDS_MAX = 100;

/** One command of a batch; `kind` is the command's case in BatchCommand (proto). */
export type BatchCommandInput =
  | { kind: "deposit"; input: Unkeyed<DepositInput> }
  | { kind: "spend"; input: Unkeyed<SpendInput> }
  | { kind: "reserve"; input: Unkeyed<ReserveInput> }
  | { kind: "capture"; input: Unkeyed<CaptureInput> }
  | { kind: "release"; input: Unkeyed<HoldCommandInput> }
  | { kind: "extendHold"; input: Unkeyed<ExtendHoldInput> }
  | { kind: "refund"; input: Unkeyed<RefundInput> }
  | { kind: "transfer"; input: Unkeyed<TransferInput> }
  | { kind: "createGrant"; input: Unkeyed<CreateGrantInput> }
  | { kind: "spendUsage"; input: Unkeyed<SpendUsageInput> }
  | { kind: "reserveUsage"; input: Unkeyed<ReserveUsageInput> }
  | { kind: "captureUsage"; input: Unkeyed<CaptureUsageInput> };

export type BatchCommandKind = BatchCommandInput["kind"];

export interface ExecuteBatchInput {
  idempotencyKey: string;
  /** 1 to BATCH_COMMANDS_MAX commands, applied in this order. */
  commands: readonly BatchCommandInput[];
}

/** The result of one command, as its single command returns it. */
export type BatchCommandResult =
  | { kind: "deposit"; result: TransferResult }
  | { kind: "spend"; result: TransferResult }
  | { kind: "reserve"; result: HoldResult }
  | { kind: "capture"; result: CaptureResult }
  | { kind: "release"; result: HoldResult }
  | { kind: "extendHold"; result: { hold: Hold } }
  | { kind: "refund"; result: RefundResult }
  | { kind: "transfer"; result: TransferBetweenResult }
  | { kind: "createGrant"; result: GrantResult }
  | { kind: "spendUsage"; result: SpendUsageResult }
  | { kind: "reserveUsage"; result: ReserveUsageResult }
  | { kind: "captureUsage"; result: CaptureUsageResult };

/**
 * A refused batch: nothing was applied. `index` (from 0) is the command refused; null when the
 * batch as a whole was (IDEMPOTENCY_KEY_REUSED).
 */
export interface BatchRefusal extends Refusal {
  index: number | null;
  replayed: boolean;
}

/** What a batch answers: every command's result, or the refusal that stopped it. */
export type BatchOutcome = { ok: true; replayed: boolean; batchId: string; results: BatchCommandResult[] } | BatchRefusal;

export interface BatchesOptions {
  pool: pg.Pool;
  clock: Clock;
  newId: IdGenerator;
}

/** ExecuteBatch, bound to one pool, clock and id generator. */
export function createBatches(options: BatchesOptions) {
  return {
    executeBatch: (caller: Caller, input: ExecuteBatchInput) => executeBatch(options, caller, input),
  };
}

async function executeBatch(ctx: BatchesOptions, caller: Caller, input: ExecuteBatchInput): Promise<BatchOutcome> {
  const commands = input.commands.map((c) => toSql(ctx, caller, c));
  const batchId = ctx.newId();
  const fingerprint = requestFingerprint(
    caller,
    "ExecuteBatch",
    commands.map((c) => [c.command, c.request]),
  );
  const batch = {
    batch_id: batchId,
    key_id: caller.keyId ?? null,
    commands: commands.map((c) => ({
      command: c.command,
      args: { ...c.args, scope_wallet_id: caller.scopeWalletId, transfer_id: ctx.newId() },
    })),
  };
  const row = await runBatch(ctx.pool, [caller.tenantId, input.idempotencyKey, fingerprint, ctx.clock(), batch]);
  const replayed = row["replayed"] === true;
  if (row["ok"] !== true) {
    return { ...parseRefusal(row), index: typeof row["index"] === "number" ? row["index"] : null, replayed };
  }
  // A replay answers the original results as they were (see commands.ts, reportedAt).
  const now = replayed ? null : ctx.clock();
  const results = (row["results"] as Json[]).map((r, i) => parseResult(input.commands[i]!.kind, r, now));
  return { ok: true, replayed, batchId: String(row["batch_id"]), results };
}

/** Runs the batch in its own transaction, retrying transient conflicts (nothing of it committed). */
async function runBatch(pool: pg.Pool, values: unknown[]): Promise<Json> {
  const result = await withTransientRetry(() =>
    pool.query<{ r: Json }>({
      name: "ledger_execute_batch",
      text: "select ledger_execute_batch($1, $2, $3, $4, $5) as r",
      values,
    }),
  );
  return result.rows[0]!.r;
}

/**
 * The SQL command, fingerprinted request and arguments of one batch command, built by the same
 * function as the single command's (commands.ts, usage.ts), so that a command means the same
 * in a batch and alone.
 */
function toSql(ctx: BatchesOptions, caller: Caller, c: BatchCommandInput): CommandCall {
  switch (c.kind) {
    case "deposit":
      return depositCall(c.input);
    case "spend":
      return spendCall(c.input);
    case "reserve":
      return reserveCall(c.input, ctx.newId);
    case "capture":
      return captureCall(c.input);
    case "release":
      return releaseCall(c.input);
    case "extendHold":
      return extendHoldCall(c.input);
    case "refund":
      return refundCall(c.input);
    case "transfer":
      return transferCall(c.input);
    case "createGrant":
      return createGrantCall(caller, c.input, ctx.newId);
    case "spendUsage":
      return spendUsageCall(c.input, ctx.newId);
    case "reserveUsage":
      return reserveUsageCall(c.input, ctx.newId);
    case "captureUsage":
      return captureUsageCall(c.input, ctx.newId);
  }
}

/** One command's result row, parsed as its single command parses it. */
function parseResult(kind: BatchCommandKind, row: Json, now: Date | null): BatchCommandResult {
  switch (kind) {
    case "deposit":
    case "spend":
      return { kind, result: parseTransferResult(row) };
    case "reserve":
    case "release":
      return { kind, result: parseHoldResult(row, now) };
    case "capture":
      return { kind, result: parseCaptureResult(row, now) };
    case "extendHold":
      return { kind, result: { hold: parseHold(row["hold"] as Json, now) } };
    case "refund":
      return { kind, result: parseRefundResult(row) };
    case "transfer":
      return { kind, result: parseTransferBetweenResult(row) };
    case "createGrant":
      return { kind, result: parseGrantResult(row) };
    case "spendUsage": {
      const transfer = row["transfer"] as Json | undefined;
      return { kind, result: { ...parseUsageCharge(row), transfer: transfer ? parseTransfer(transfer) : null } };
    }
    case "reserveUsage": {
      const result = { hold: parseHold(row["hold"] as Json, now), quote: parseUsageQuote(row["quote"] as Json), balance: parseBalance(row["balance"] as Json) };
      return { kind, result };
    }
    case "captureUsage": {
      const result = { ...parseUsageCharge(row), transfer: parseTransfer(row["transfer"] as Json), hold: parseHold(row["hold"] as Json, now) };
      return { kind, result };
    }
  }
}

export type Batches = ReturnType<typeof createBatches>;
