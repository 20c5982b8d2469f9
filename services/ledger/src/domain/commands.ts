import type pg from "pg";
import type { Clock, IdGenerator } from "@holdfast/common/ids";
import { PermissionDeniedError } from "@holdfast/common/errors";
import { pgErrorCode } from "@holdfast/common/pg";
import { categoriesArg, type CommandCall, type Unkeyed } from "./command-call.js";
import { requestFingerprint } from "./fingerprint.js";
import { createHoldRoutes, type HoldRoutes } from "./hold-routes.js";
import {
  parseCaptureResult,
  parseGrantResult,
  parseHold,
  parseHoldResult,
  parseOutcome,
  parseRefundResult,
  parseTransferBetweenResult,
  parseTransferResult,
  parseWalletResult,
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
  Metadata,
  Outcome,
  RefundInput,
  RefundResult,
  ReserveInput,
  SpendInput,
  TransferBetweenResult,
  TransferInput,
  TransferResult,
  UpdateWalletInput,
  VoidGrantInput,
  WalletResult,
} from "./types.js";
import { createUsageCommands } from "./usage.js";

/**
 * The ledger's commands. Every money movement is one call of the SQL function `ledger_command`
 * (migrations/0003_commands.sql): one round trip, no row lock held across an await. This module
 * is the only code that calls it, alone (`runCommand`) or in batches (`runCommandBatch`, for
 * group commit). Refusals come back as values, never as exceptions.
 */

/** How often a command is run again after a transient conflict (deadlock, racing unique insert). */
const COMMAND_ATTEMPTS_MAX = 3;

/** SQLSTATEs that mean "run the whole command again": serialization_failure, deadlock_detected, unique_violation. */
const RETRYABLE_SQLSTATES = new Set(["40001", "40P01", "23505"]);

/** numeric_value_out_of_range: a balance sum would not fit int64. */
const OVERFLOW_SQLSTATE = "22003";

/** Entries in the hold id → wallet map that routes captures to their wallet's batches. */
const HOLD_ROUTES_MAX = 100_000;

/** One command, ready for ledger_command. */
export interface QueuedCommand {
  tenantId: string;
  command: string;
  key: string;
  fingerprint: Buffer;
  now: Date;
  args: Json;
}

/** Runs one command in its own transaction, retrying transient conflicts. */
export async function runCommand(pool: pg.Pool, c: QueuedCommand): Promise<Json> {
  try {
    const result = await withTransientRetry(() =>
      pool.query<{ r: Json }>({
        name: "ledger_command",
        text: "select ledger_command($1, $2, $3, $4, $5, $6) as r",
        values: [c.tenantId, c.command, c.key, c.fingerprint, c.now, c.args],
      }),
    );
    return result.rows[0]!.r;
  } catch (err) {
    if (pgErrorCode(err) === OVERFLOW_SQLSTATE) {
      return { ok: false, reason: "AMOUNT_OVERFLOW", message: "the resulting balance would overflow int64", metadata: {} };
    }
    throw err;
  }
}

/**
 * Runs one transaction (a command, or ExecuteBatch's batch) again after a transient conflict,
 * up to {@link COMMAND_ATTEMPTS_MAX} times; nothing of a failed attempt committed.
 */
export async function withTransientRetry<T>(run: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await run();
    } catch (err) {
      const code = pgErrorCode(err);
      if (attempt >= COMMAND_ATTEMPTS_MAX || code === undefined || !RETRYABLE_SQLSTATES.has(code)) {
        throw err;
      }
    }
  }
}

/**
 * Runs commands in one transaction, one result per command: in order, except that Spends,
 * Reserves and Captures of one wallet account may run together as one set at the first one's
 * position (ledger_debit_run, migration 0025; the batch's commands are concurrent requests, so
 * any order is one they could have arrived in). It throws when the batch fails as a whole (then
 * nothing of it committed), and does not retry: the caller runs the commands alone instead, so
 * that only the one at fault sees its error.
 */
export async function runCommandBatch(pool: pg.Pool, commands: readonly QueuedCommand[]): Promise<Json[]> {
  const payload = commands.map((c) => ({
    tenant_id: c.tenantId,
    command: c.command,
    key: c.key,
    fingerprint: c.fingerprint.toString("hex"),
    now: c.now.toISOString(),
    args: c.args,
  }));
  const { rows } = await pool.query<{ r: Json[] }>({
    name: "ledger_command_batch",
    text: "select ledger_command_batch($1) as r",
    values: [JSON.stringify(payload)],
  });
  return rows[0]!.r;
}

/** A wallet's queue of commands (group commit, see group-commit.ts). */
export interface CommandQueue {
  submit(walletKey: string, command: QueuedCommand): Promise<Json>;
}

export interface CommandsOptions {
  pool: pg.Pool;
  clock: Clock;
  newId: IdGenerator;
  /** Where commands for a known wallet go; null runs every command alone. */
  queue: CommandQueue | null;
}

interface CommandContext extends CommandsOptions {
  holdRoutes: HoldRoutes;
}

/** The commands, bound to one pool, clock and id generator. */
export function createCommands(options: CommandsOptions) {
  const ctx: CommandContext = { ...options, holdRoutes: createHoldRoutes(HOLD_ROUTES_MAX) };
  return {
    deposit: (caller: Caller, input: DepositInput) => deposit(ctx, caller, input),
    spend: (caller: Caller, input: SpendInput) => spend(ctx, caller, input),
    reserve: (caller: Caller, input: ReserveInput) => reserve(ctx, caller, input),
    capture: (caller: Caller, input: CaptureInput) => capture(ctx, caller, input),
    release: (caller: Caller, input: HoldCommandInput) => release(ctx, caller, input),
    extendHold: (caller: Caller, input: ExtendHoldInput) => extendHold(ctx, caller, input),
    refund: (caller: Caller, input: RefundInput) => refund(ctx, caller, input),
    transfer: (caller: Caller, input: TransferInput) => transfer(ctx, caller, input),
    createGrant: (caller: Caller, input: CreateGrantInput) => createGrant(ctx, caller, input),
    voidGrant: (caller: Caller, input: VoidGrantInput) => voidGrant(ctx, caller, input),
    createWallet: (caller: Caller, walletId: string, metadata: Metadata) => createWallet(ctx, caller, walletId, metadata),
    updateWallet: (caller: Caller, input: UpdateWalletInput) => updateWallet(ctx, caller, input),
    ...createUsageCommands({
      send: (caller, command, key, request, args, walletId) => send(ctx, caller, command, key, request, args, walletId),
      reportedAt: (row) => reportedAt(ctx, row),
      newId: ctx.newId,
      holdRoutes: ctx.holdRoutes,
    }),
  };
}

export type Commands = ReturnType<typeof createCommands>;

/**
 * Sends a command: through its wallet's queue when the wallet is known and group commit is on,
 * alone otherwise. `request` is what the fingerprint covers; `args` is what the SQL gets.
 */
async function send(
  ctx: CommandContext,
  caller: Caller,
  command: string,
  key: string,
  request: unknown,
  args: Json,
  walletId: string | undefined,
): Promise<Json> {
  const queued: QueuedCommand = {
    tenantId: caller.tenantId,
    command,
    key,
    fingerprint: requestFingerprint(caller, command, request),
    now: ctx.clock(),
    args: { ...args, scope_wallet_id: caller.scopeWalletId, transfer_id: ctx.newId(), key_id: caller.keyId ?? null },
  };
  if (ctx.queue !== null && walletId !== undefined) {
    return ctx.queue.submit(`${caller.tenantId}/${walletId}`, queued);
  }
  return runCommand(ctx.pool, queued);
}

/** Sends a command built by one of the `*Call` functions below. */
function sendCall(ctx: CommandContext, caller: Caller, key: string, call: CommandCall, walletId: string | undefined): Promise<Json> {
  return send(ctx, caller, call.command, key, call.request, call.args, walletId);
}

export function depositCall(input: Unkeyed<DepositInput>): CommandCall {
  const args = { wallet_id: input.walletId, asset: input.asset, amount: String(input.amount), metadata: input.metadata };
  return { command: "Deposit", request: args, args };
}

async function deposit(ctx: CommandContext, caller: Caller, input: DepositInput): Promise<Outcome<TransferResult>> {
  const row = await sendCall(ctx, caller, input.idempotencyKey, depositCall(input), input.walletId);
  return parseOutcome(row, parseTransferResult);
}

/**
 * The time at which a command's hold is reported (a pending hold past its expiry reads as
 * expired): the clock after the command, or null for an idempotent replay, which answers the
 * original response as it was, hold and balance alike.
 */
function reportedAt(ctx: CommandContext, row: Json): Date | null {
  return row["replayed"] === true ? null : ctx.clock();
}

export function spendCall(input: Unkeyed<SpendInput>): CommandCall {
  const args = {
    wallet_id: input.walletId,
    asset: input.asset,
    amount: String(input.amount),
    metadata: input.metadata,
    ...categoriesArg(input.categories),
  };
  return { command: "Spend", request: args, args };
}

async function spend(ctx: CommandContext, caller: Caller, input: SpendInput): Promise<Outcome<TransferResult>> {
  const row = await sendCall(ctx, caller, input.idempotencyKey, spendCall(input), input.walletId);
  return parseOutcome(row, parseTransferResult);
}

/** An empty hold id gets a generated one, which the fingerprint does not cover. */
export function reserveCall(input: Unkeyed<ReserveInput>, newId: IdGenerator): CommandCall {
  const request = {
    wallet_id: input.walletId,
    asset: input.asset,
    amount: String(input.amount),
    hold_id: input.holdId,
    ttl_seconds: input.ttlSeconds,
    metadata: input.metadata,
    ...categoriesArg(input.categories),
  };
  return { command: "Reserve", request, args: { ...request, hold_id: input.holdId === "" ? `hold_${newId()}` : input.holdId } };
}

async function reserve(ctx: CommandContext, caller: Caller, input: ReserveInput): Promise<Outcome<HoldResult>> {
  const row = await sendCall(ctx, caller, input.idempotencyKey, reserveCall(input, ctx.newId), input.walletId);
  const now = reportedAt(ctx, row);
  const result = parseOutcome(row, (r) => parseHoldResult(r, now));
  if (result.ok) {
    ctx.holdRoutes.remember(caller.tenantId, result.hold.holdId, result.hold.walletId);
  }
  return result;
}

export function captureCall(input: Unkeyed<CaptureInput>): CommandCall {
  const args = {
    hold_id: input.holdId,
    amount: input.amount === null ? null : String(input.amount),
    metadata: input.metadata,
  };
  return { command: "Capture", request: args, args };
}

async function capture(ctx: CommandContext, caller: Caller, input: CaptureInput): Promise<Outcome<CaptureResult>> {
  const walletId = ctx.holdRoutes.walletOf(caller.tenantId, input.holdId);
  const row = await sendCall(ctx, caller, input.idempotencyKey, captureCall(input), walletId);
  const now = reportedAt(ctx, row);
  return parseOutcome(row, (r) => parseCaptureResult(r, now));
}

export function releaseCall(input: Unkeyed<HoldCommandInput>): CommandCall {
  const args = { hold_id: input.holdId };
  return { command: "Release", request: args, args };
}

async function release(ctx: CommandContext, caller: Caller, input: HoldCommandInput): Promise<Outcome<HoldResult>> {
  const walletId = ctx.holdRoutes.walletOf(caller.tenantId, input.holdId);
  const row = await sendCall(ctx, caller, input.idempotencyKey, releaseCall(input), walletId);
  const now = reportedAt(ctx, row);
  return parseOutcome(row, (r) => parseHoldResult(r, now));
}

export function extendHoldCall(input: Unkeyed<ExtendHoldInput>): CommandCall {
  const args = { hold_id: input.holdId, ttl_seconds: input.ttlSeconds };
  return { command: "ExtendHold", request: args, args };
}

async function extendHold(ctx: CommandContext, caller: Caller, input: ExtendHoldInput): Promise<Outcome<{ hold: Hold }>> {
  const walletId = ctx.holdRoutes.walletOf(caller.tenantId, input.holdId);
  const row = await sendCall(ctx, caller, input.idempotencyKey, extendHoldCall(input), walletId);
  const now = reportedAt(ctx, row);
  return parseOutcome(row, (r) => ({ hold: parseHold(r["hold"] as Json, now) }));
}

export function refundCall(input: Unkeyed<RefundInput>): CommandCall {
  const args = {
    refund_transfer_id: input.transferId,
    amount: input.amount === null ? null : String(input.amount),
    metadata: input.metadata,
  };
  return { command: "Refund", request: args, args };
}

/** Refunds are not routed to a wallet's queue: the wallet is known only to the SQL. */
async function refund(ctx: CommandContext, caller: Caller, input: RefundInput): Promise<Outcome<RefundResult>> {
  const row = await sendCall(ctx, caller, input.idempotencyKey, refundCall(input), undefined);
  return parseOutcome(row, parseRefundResult);
}

export function transferCall(input: Unkeyed<TransferInput>): CommandCall {
  const args = {
    from_wallet_id: input.fromWalletId,
    to_wallet_id: input.toWalletId,
    asset: input.asset,
    amount: String(input.amount),
    metadata: input.metadata,
  };
  return { command: "Transfer", request: args, args };
}

/** Transfers touch two wallets, so they run alone rather than in either wallet's queue. */
async function transfer(ctx: CommandContext, caller: Caller, input: TransferInput): Promise<Outcome<TransferBetweenResult>> {
  const row = await sendCall(ctx, caller, input.idempotencyKey, transferCall(input), undefined);
  return parseOutcome(row, parseTransferBetweenResult);
}

/**
 * Credits a wallet with a grant. A grant creates money, so a key limited to one wallet may
 * never create one: the SQL does not check the scope for CreateGrant, this does (besides the
 * RPC layer's rule). An empty grant id gets a generated one, which the fingerprint does not
 * cover.
 */
export function createGrantCall(caller: Caller, input: Unkeyed<CreateGrantInput>, newId: IdGenerator): CommandCall {
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
  return { command: "CreateGrant", request, args: { ...request, grant_id: input.grantId === "" ? `grant_${newId()}` : input.grantId } };
}

async function createGrant(ctx: CommandContext, caller: Caller, input: CreateGrantInput): Promise<Outcome<GrantResult>> {
  const row = await sendCall(ctx, caller, input.idempotencyKey, createGrantCall(caller, input, ctx.newId), input.walletId);
  return parseOutcome(row, parseGrantResult);
}

/** Voids a grant; like refunds it runs alone, since only the SQL knows the grant's wallet. */
async function voidGrant(ctx: CommandContext, caller: Caller, input: VoidGrantInput): Promise<Outcome<GrantResult>> {
  const args = { grant_id: input.grantId };
  const row = await send(ctx, caller, "VoidGrant", input.idempotencyKey, args, args, undefined);
  return parseOutcome(row, parseGrantResult);
}

async function createWallet(ctx: CommandContext, caller: Caller, walletId: string, metadata: Metadata): Promise<Outcome<WalletResult>> {
  const result = await ctx.pool.query<{ r: Json }>({
    name: "ledger_create_wallet",
    text: "select ledger_create_wallet($1, $2, $3) as r",
    values: [caller.tenantId, ctx.clock(), { wallet_id: walletId, metadata }],
  });
  return parseOutcome(result.rows[0]!.r, parseWalletResult);
}

/** A credit limit so high that the available balance would overflow int64 is refused, naming the field. */
async function updateWallet(ctx: CommandContext, caller: Caller, input: UpdateWalletInput): Promise<Outcome<WalletResult>> {
  const args = {
    wallet_id: input.walletId,
    status: input.status,
    credit_limits: input.creditLimits.map((l) => ({ asset: l.asset, credit_limit: String(l.creditLimit) })),
    metadata: input.metadata,
    key_id: caller.keyId ?? null,
  };
  try {
    const result = await ctx.pool.query<{ r: Json }>({
      name: "ledger_update_wallet",
      text: "select ledger_update_wallet($1, $2, $3) as r",
      values: [caller.tenantId, ctx.clock(), args],
    });
    return parseOutcome(result.rows[0]!.r, parseWalletResult);
  } catch (err) {
    if (pgErrorCode(err) === OVERFLOW_SQLSTATE) {
      const message = "the resulting available balance would overflow int64";
      return { ok: false, reason: "AMOUNT_OVERFLOW", message, metadata: { field: "credit_limits" } };
    }
    throw err;
  }
}
