import type pg from "pg";
import type { Clock, IdGenerator } from "@holdfast/common/ids";
import { PermissionDeniedError } from "@holdfast/common/errors";
import { pgErrorCode } from "@holdfast/common/pg";
import { requestFingerprint } from "./fingerprint.js";
import { parseUsageCharge, parseUsageQuote, usageArg, type CaptureUsageInput, type CaptureUsageResult, type ReserveUsageInput, type ReserveUsageResult, type SpendUsageInput, type SpendUsageResult } from "./usage.js";
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

/** How often a batch is run again after a transient conflict, as runCommand does a command. */
const BATCH_ATTEMPTS_MAX = 3;

/** SQLSTATEs that mean "run the whole batch again": serialization_failure, deadlock_detected, unique_violation. */
const RETRYABLE_SQLSTATES = new Set(["40001", "40P01", "23505"]);

/** A single command's input without its idempotency key: the batch's key covers it. */
type Unkeyed<T> = Omit<T, "idempotencyKey">;

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

/** A command as ledger_execute_batch takes it, and the request its fingerprint covers. */
interface SqlCommand {
  command: string;
  request: Json;
  args: Json;
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
  for (let attempt = 1; ; attempt++) {
    try {
      const result = await pool.query<{ r: Json }>({
        name: "ledger_execute_batch",
        text: "select ledger_execute_batch($1, $2, $3, $4, $5) as r",
        values,
      });
      return result.rows[0]!.r;
    } catch (err) {
      const code = pgErrorCode(err);
      if (attempt >= BATCH_ATTEMPTS_MAX || code === undefined || !RETRYABLE_SQLSTATES.has(code)) {
        throw err;
      }
    }
  }
}

/**
 * The SQL command, fingerprinted request and arguments of one batch command: exactly what the
 * single command sends (commands.ts), so that a command means the same in a batch and alone.
 */
function toSql(ctx: BatchesOptions, caller: Caller, c: BatchCommandInput): SqlCommand {
  switch (c.kind) {
    case "deposit": {
      const args = { wallet_id: c.input.walletId, asset: c.input.asset, amount: String(c.input.amount), metadata: c.input.metadata };
      return { command: "Deposit", request: args, args };
    }
    case "spend": {
      const args = { ...walletAmountArgs(c.input), ...categoriesArg(c.input.categories) };
      return { command: "Spend", request: args, args };
    }
    case "reserve": {
      const request = {
        ...walletAmountArgs(c.input),
        hold_id: c.input.holdId,
        ttl_seconds: c.input.ttlSeconds,
        ...categoriesArg(c.input.categories),
      };
      return { command: "Reserve", request, args: { ...request, hold_id: c.input.holdId === "" ? `hold_${ctx.newId()}` : c.input.holdId } };
    }
    case "capture": {
      const args = { hold_id: c.input.holdId, amount: optionalAmountArg(c.input.amount), metadata: c.input.metadata };
      return { command: "Capture", request: args, args };
    }
    case "release":
      return { command: "Release", request: { hold_id: c.input.holdId }, args: { hold_id: c.input.holdId } };
    case "extendHold": {
      const args = { hold_id: c.input.holdId, ttl_seconds: c.input.ttlSeconds };
      return { command: "ExtendHold", request: args, args };
    }
    case "refund": {
      const args = { refund_transfer_id: c.input.transferId, amount: optionalAmountArg(c.input.amount), metadata: c.input.metadata };
      return { command: "Refund", request: args, args };
    }
    case "transfer": {
      const args = {
        from_wallet_id: c.input.fromWalletId,
        to_wallet_id: c.input.toWalletId,
        asset: c.input.asset,
        amount: String(c.input.amount),
        metadata: c.input.metadata,
      };
      return { command: "Transfer", request: args, args };
    }
    case "createGrant":
      return createGrantSql(ctx, caller, c.input);
    case "spendUsage":
    case "reserveUsage":
    case "captureUsage":
      return usageSql(ctx, c);
  }
}

/** The usage commands' arguments, as usage.ts sends them. */
function usageSql(ctx: BatchesOptions, c: Extract<BatchCommandInput, { kind: "spendUsage" | "reserveUsage" | "captureUsage" }>): SqlCommand {
  switch (c.kind) {
    case "spendUsage": {
      const { walletId, rateCardId, model, usage, metadata, categories } = c.input;
      const request = { wallet_id: walletId, rate_card_id: rateCardId, model, usage: usageArg(usage), metadata, ...categoriesArg(categories) };
      return { command: "SpendUsage", request, args: { ...request, usage_id: ctx.newId() } };
    }
    case "reserveUsage": {
      const { walletId, rateCardId, model, estimate, holdId, ttlSeconds, metadata, categories } = c.input;
      const request = {
        wallet_id: walletId,
        rate_card_id: rateCardId,
        model,
        estimate: usageArg(estimate),
        hold_id: holdId,
        ttl_seconds: ttlSeconds,
        metadata,
        ...categoriesArg(categories),
      };
      return { command: "ReserveUsage", request, args: { ...request, hold_id: holdId === "" ? `hold_${ctx.newId()}` : holdId } };
    }
    case "captureUsage": {
      const request = { hold_id: c.input.holdId, usage: usageArg(c.input.usage), metadata: c.input.metadata };
      return { command: "CaptureUsage", request, args: { ...request, usage_id: ctx.newId() } };
    }
  }
}

/** A grant creates money, so a key limited to one wallet may never create one (as commands.ts). */
function createGrantSql(ctx: BatchesOptions, caller: Caller, input: Unkeyed<CreateGrantInput>): SqlCommand {
  if (caller.scopeWalletId !== null) {
    throw new PermissionDeniedError("CreateGrant: a key limited to one wallet may not create grants", "wallet_id");
  }
  const request = {
    wallet_id: input.walletId,
    asset: input.asset,
    amount: String(input.amount),
    grant_id: input.grantId,
    category: input.category,
    priority: input.priority,
    starts_at: input.startsAt?.toISOString() ?? null,
    expires_at: input.expiresAt?.toISOString() ?? null,
    metadata: input.metadata,
  };
  return { command: "CreateGrant", request, args: { ...request, grant_id: input.grantId === "" ? `grant_${ctx.newId()}` : input.grantId } };
}

function walletAmountArgs(input: Unkeyed<DepositInput>): Json {
  return { wallet_id: input.walletId, asset: input.asset, amount: String(input.amount), metadata: input.metadata };
}

function optionalAmountArg(amount: bigint | null): string | null {
  return amount === null ? null : String(amount);
}

/** As commands.ts: categories only when some are given, so the fingerprint matches a request without them. */
function categoriesArg(categories: readonly string[] | undefined): { categories?: readonly string[] } {
  return categories !== undefined && categories.length > 0 ? { categories } : {};
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
