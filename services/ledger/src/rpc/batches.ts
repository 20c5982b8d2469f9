import type { MessageInitShape } from "@bufbuild/protobuf";
import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import { HoldfastError, InvalidFieldError, PermissionDeniedError, RefusedError, type ErrorReason } from "@holdfast/common/errors";
import {
  BatchFailureSchema,
  type BatchCommand,
  type BatchResultSchema,
  type ExecuteBatchRequest,
} from "@holdfast/gen/holdfast/v1/batches_pb";
import type { ErrorDetailSchema } from "@holdfast/gen/holdfast/v1/errors_pb";
import { LedgerService } from "@holdfast/gen/holdfast/v1/ledger_pb";
import { BATCH_COMMANDS_MAX, type BatchCommandInput, type BatchCommandResult, type BatchRefusal } from "../domain/batches.js";
import type { Ledger } from "../domain/ledger.js";
import { callerOf, PRINCIPAL_KEY } from "./auth.js";
import { toBalance, toGrant, toHold, toTransfer } from "./convert.js";
import { toQuoteMessage } from "./rate-card-service.js";
import { authorizeCall, authorizeRequest } from "./scope.js";
import { chargeMessage, model, rateCardId, tokenUsage } from "./usage-service.js";
import * as v from "./validate.js";

/**
 * LedgerService.ExecuteBatch (docs/batches.md): validates every command as its single RPC
 * would, naming the field at fault as `commands[<index>].<command>.<field>`; applies the
 * single RPCs' rules of scope.ts to every command, so a wallet-scoped key may put in a batch
 * exactly what it may call alone; runs the batch in the ledger core (domain/batches.ts); and
 * answers every command's result, or fails the call as the refused command would have, with
 * its index, and a BatchFailure detail that reports every other command as not applied.
 */

export interface BatchHandlerOptions {
  ledger: Ledger;
  defaultHoldTtlSeconds: number;
}

type Command = Exclude<BatchCommand["command"], { case: undefined }>;
type CommandCase = Command["case"];

/** The single RPC of each command, whose rule of scope.ts the command follows. */
const RPC_OF: Record<CommandCase, string> = {
  deposit: "Deposit",
  spend: "Spend",
  reserve: "Reserve",
  capture: "Capture",
  release: "Release",
  extendHold: "ExtendHold",
  refund: "Refund",
  transfer: "Transfer",
  createGrant: "CreateGrant",
  spendUsage: "SpendUsage",
  reserveUsage: "ReserveUsage",
  captureUsage: "CaptureUsage",
};

/** The ErrorDetail reason of the commands of a refused batch that are not at fault. */
const NOT_APPLIED_REASON = "BATCH_COMMAND_NOT_APPLIED";

/** The ExecuteBatch handler. */
export function batchHandlers({ ledger, defaultHoldTtlSeconds }: BatchHandlerOptions): Pick<ServiceImpl<typeof LedgerService>, "executeBatch"> {
  return {
    async executeBatch(req, ctx) {
      const commands = validCommands(req, ctx, defaultHoldTtlSeconds);
      const idempotencyKey = v.idempotencyKey(req.idempotencyKey);
      const outcome = await ledger.executeBatch(callerOf(ctx), { idempotencyKey, commands });
      if (!outcome.ok) {
        const { index } = outcome;
        if (index === null) {
          throw new RefusedError(outcome);
        }
        throw batchRefused({ ...outcome, index }, commands.length, commandPath(index, commands[index]!.kind));
      }
      return { results: outcome.results.map(toBatchResult), replayed: outcome.replayed, batchId: outcome.batchId };
    },
  };
}

/** The request's commands, each allowed for the caller's key and valid, in request order. */
function validCommands(req: ExecuteBatchRequest, ctx: HandlerContext, defaultHoldTtlSeconds: number): BatchCommandInput[] {
  if (req.commands.length === 0 || req.commands.length > BATCH_COMMANDS_MAX) {
    throw new InvalidFieldError("commands", `must have 1-${BATCH_COMMANDS_MAX} entries`);
  }
  return req.commands.map((c, i) => {
    if (c.command.case === undefined) {
      throw new InvalidFieldError(`commands[${i}]`, "must set one command");
    }
    const path = commandPath(i, c.command.case);
    authorizeCommand(ctx, c.command, path);
    return withFieldPrefix(path, () => commandInput(c.command as Command, defaultHoldTtlSeconds));
  });
}

/** `commands[3].extend_hold`: where a command sits in the request, in proto names. */
function commandPath(index: number, kind: CommandCase): string {
  return `commands[${index}].${kind.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`)}`;
}

/** Refuses a command the caller's key may not make alone, naming it by its path. */
function authorizeCommand(ctx: HandlerContext, command: Command, path: string): void {
  const principal = ctx.values.get(PRINCIPAL_KEY);
  if (principal === null) {
    throw new Error("authorizeCommand: no principal in context; is the auth interceptor installed?");
  }
  try {
    const rule = authorizeCall(principal, LedgerService.typeName, RPC_OF[command.case]);
    authorizeRequest(principal, rule, command.value);
  } catch (err) {
    if (err instanceof PermissionDeniedError) {
      throw new PermissionDeniedError(`${path}: ${err.message}`, err.field === "" ? path : `${path}.${err.field}`);
    }
    throw err;
  }
}

/** Runs a single command's validation, naming its fields under `path`. */
function withFieldPrefix<T>(path: string, validate: () => T): T {
  try {
    return validate();
  } catch (err) {
    if (err instanceof InvalidFieldError) {
      throw new InvalidFieldError(`${path}.${err.field}`, err.message.slice(err.field.length + ": ".length));
    }
    throw err;
  }
}

/** One command's input, validated exactly as its single RPC validates it (ledger-service.ts). */
function commandInput(command: Command, defaultHoldTtlSeconds: number): BatchCommandInput {
  switch (command.case) {
    case "deposit":
      return { kind: "deposit", input: walletAmountInput(command.value) };
    case "spend":
      return { kind: "spend", input: { ...walletAmountInput(command.value), categories: v.categories(command.value.categories) } };
    case "reserve": {
      const m = command.value;
      const input = {
        ...walletAmountInput(m),
        holdId: v.optionalHoldId(m.holdId),
        ttlSeconds: v.ttlSeconds(m.ttlSeconds, defaultHoldTtlSeconds),
        categories: v.categories(m.categories),
      };
      return { kind: "reserve", input };
    }
    case "capture": {
      const m = command.value;
      return { kind: "capture", input: { holdId: v.holdId(m.holdId), amount: v.optionalAmount(m.amount), metadata: v.metadata(m.metadata) } };
    }
    case "release":
      return { kind: "release", input: { holdId: v.holdId(command.value.holdId) } };
    case "extendHold":
      return { kind: "extendHold", input: { holdId: v.holdId(command.value.holdId), ttlSeconds: v.ttlSeconds(command.value.ttlSeconds, null) } };
    case "refund": {
      const m = command.value;
      return { kind: "refund", input: { transferId: v.transferId(m.transferId), amount: v.optionalAmount(m.amount), metadata: v.metadata(m.metadata) } };
    }
    case "transfer":
      return { kind: "transfer", input: transferInput(command.value) };
    case "createGrant":
      return { kind: "createGrant", input: createGrantInput(command.value) };
    case "spendUsage":
    case "reserveUsage":
    case "captureUsage":
      return usageInput(command, defaultHoldTtlSeconds);
  }
}

/** A usage command's input, validated as its single RPC validates it (usage-service.ts). */
function usageInput(command: Extract<Command, { case: "spendUsage" | "reserveUsage" | "captureUsage" }>, defaultHoldTtlSeconds: number): BatchCommandInput {
  switch (command.case) {
    case "spendUsage": {
      const m = command.value;
      const input = {
        walletId: v.walletId(m.walletId),
        rateCardId: rateCardId(m.rateCardId),
        model: model(m.model),
        usage: tokenUsage(m.usage, "usage", { countsSomething: true }),
        metadata: v.metadata(m.metadata),
        categories: v.categories(m.categories),
      };
      return { kind: "spendUsage", input };
    }
    case "reserveUsage": {
      const m = command.value;
      const input = {
        walletId: v.walletId(m.walletId),
        rateCardId: rateCardId(m.rateCardId),
        model: model(m.model),
        estimate: tokenUsage(m.estimate, "estimate", { countsSomething: true }),
        holdId: v.optionalHoldId(m.holdId),
        ttlSeconds: v.ttlSeconds(m.ttlSeconds, defaultHoldTtlSeconds),
        metadata: v.metadata(m.metadata),
        categories: v.categories(m.categories),
      };
      return { kind: "reserveUsage", input };
    }
    case "captureUsage": {
      const m = command.value;
      const input = { holdId: v.holdId(m.holdId), usage: tokenUsage(m.usage, "usage", { countsSomething: false }), metadata: v.metadata(m.metadata) };
      return { kind: "captureUsage", input };
    }
  }
}

function walletAmountInput(m: { walletId: string; asset: string; amount: bigint; metadata: Record<string, string> }) {
  return { walletId: v.walletId(m.walletId), asset: v.asset(m.asset), amount: v.amount(m.amount), metadata: v.metadata(m.metadata) };
}

function transferInput(m: Extract<Command, { case: "transfer" }>["value"]) {
  const input = {
    fromWalletId: v.walletId(m.fromWalletId, "from_wallet_id"),
    toWalletId: v.walletId(m.toWalletId, "to_wallet_id"),
    asset: v.asset(m.asset),
    amount: v.amount(m.amount),
    metadata: v.metadata(m.metadata),
  };
  if (input.fromWalletId === input.toWalletId) {
    throw new InvalidFieldError("to_wallet_id", "must differ from from_wallet_id");
  }
  return input;
}

function createGrantInput(m: Extract<Command, { case: "createGrant" }>["value"]) {
  const input = {
    walletId: v.walletId(m.walletId),
    asset: v.asset(m.asset),
    amount: v.amount(m.amount),
    grantId: v.optionalGrantId(m.grantId),
    category: v.optionalCategory(m.category),
    priority: v.optionalPriority(m.priority),
    startsAt: v.optionalTimestamp(m.startsAt, "starts_at"),
    expiresAt: v.optionalTimestamp(m.expiresAt, "expires_at"),
    metadata: v.metadata(m.metadata),
  };
  v.grantWindow(input.startsAt, input.expiresAt);
  return input;
}

function toBatchResult(r: BatchCommandResult): MessageInitShape<typeof BatchResultSchema> {
  switch (r.kind) {
    case "deposit":
    case "spend":
      return { result: { case: r.kind, value: { transfer: toTransfer(r.result.transfer), balance: toBalance(r.result.balance) } } };
    case "reserve":
    case "release":
      return { result: { case: r.kind, value: { hold: toHold(r.result.hold), balance: toBalance(r.result.balance) } } };
    case "capture": {
      const value = { transfer: toTransfer(r.result.transfer), hold: toHold(r.result.hold), balance: toBalance(r.result.balance) };
      return { result: { case: "capture", value } };
    }
    case "extendHold":
      return { result: { case: "extendHold", value: { hold: toHold(r.result.hold) } } };
    case "refund": {
      const value = { transfer: toTransfer(r.result.transfer), balance: toBalance(r.result.balance), breakage: r.result.breakage };
      return { result: { case: "refund", value } };
    }
    case "transfer": {
      const value = { transfer: toTransfer(r.result.transfer), fromBalance: toBalance(r.result.fromBalance), toBalance: toBalance(r.result.toBalance) };
      return { result: { case: "transfer", value } };
    }
    case "createGrant": {
      const transfer = r.result.transfer ? toTransfer(r.result.transfer) : undefined;
      return { result: { case: "createGrant", value: { grant: toGrant(r.result.grant), balance: toBalance(r.result.balance), transfer } } };
    }
    case "spendUsage": {
      const transfer = r.result.transfer === null ? undefined : toTransfer(r.result.transfer);
      return { result: { case: "spendUsage", value: { ...chargeMessage(r.result), transfer } } };
    }
    case "reserveUsage": {
      const value = { hold: toHold(r.result.hold), quote: toQuoteMessage(r.result.quote), balance: toBalance(r.result.balance) };
      return { result: { case: "reserveUsage", value } };
    }
    case "captureUsage": {
      const value = { ...chargeMessage(r.result), transfer: toTransfer(r.result.transfer), hold: toHold(r.result.hold) };
      return { result: { case: "captureUsage", value } };
    }
  }
}

/**
 * The error a refused batch fails with: the refused command's reason, code and message, its
 * `index` and `reason` in metadata, and a BatchFailure detail with one error per command. A
 * refusal that names a field (INVALID_FIELD, or AMOUNT_OVERFLOW, which travels as
 * INVALID_FIELD) names it under the command's path.
 */
function batchRefused(refusal: BatchRefusal & { index: number }, count: number, path: string): HoldfastError {
  const { field: refusedField, ...facts } = refusal.metadata;
  const metadata = { ...facts, index: String(refusal.index), reason: refusal.reason };
  const namesField = refusal.reason === "INVALID_FIELD" || refusal.reason === "AMOUNT_OVERFLOW";
  const reason: ErrorReason = refusal.reason === "AMOUNT_OVERFLOW" ? "INVALID_FIELD" : refusal.reason;
  const field = namesField ? `${path}.${refusedField ?? "amount"}` : "";
  // An INVALID_FIELD refusal's message already reads "<field>: <why>"; an overflow's is the why.
  const why = refusal.reason === "INVALID_FIELD" && refusedField !== undefined ? refusal.message.slice(refusedField.length + ": ".length) : refusal.message;
  const message = namesField ? `${field}: ${why}` : refusal.message;
  const atFault: MessageInitShape<typeof ErrorDetailSchema> = { reason, field, message, metadata };
  const notApplied: MessageInitShape<typeof ErrorDetailSchema> = {
    reason: NOT_APPLIED_REASON,
    message: `not applied: command ${refusal.index} of the batch was refused`,
    metadata: { index: String(refusal.index) },
  };
  const results = Array.from({ length: count }, (_, i) => ({ result: { case: "error" as const, value: i === refusal.index ? atFault : notApplied } }));
  const details = [{ desc: BatchFailureSchema, value: { results, replayed: refusal.replayed } }];
  return new HoldfastError(reason, message, { field, metadata, details });
}
