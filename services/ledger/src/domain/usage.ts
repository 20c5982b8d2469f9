/**
 * The usage commands: ReserveUsage, CaptureUsage and SpendUsage (proto/holdfast/v1/usage.proto).
 * Each is one call of `ledger_command` like every other command (db/migrations/0013_usage.sql):
 * the SQL prices the usage with the rate card after taking the wallet's lock, so the carry it
 * reads and writes cannot race, and writes the money leg and the token legs in the same
 * transaction. They join their wallet's group-commit queue like Reserve, Capture and Spend:
 * ReserveUsage and SpendUsage by wallet, CaptureUsage by the hold's remembered wallet.
 *
 * Input arrives checked (rpc/usage-service.ts); refusals come back as values, recorded for
 * replays (docs/metering.md, "The usage commands").
 *
 * @module
 */
import { TOKEN_CLASSES, type TokenClass, type TokenUsage } from "@holdfast/metering/pricing";
import type { IdGenerator } from "@holdfast/common/ids";
import { categoriesArg, type CommandCall, type Unkeyed } from "./command-call.js";
import type { HoldRoutes } from "./hold-routes.js";
import type { RateCardQuote } from "./rate-cards.js";
import { parseBalance, parseHold, parseOutcome, parseTransfer } from "./rows.js";
import type { Balance, Caller, Hold, Json, Metadata, Outcome, Transfer } from "./types.js";

/** A checked ReserveUsage request. */
export interface ReserveUsageInput {
  walletId: string;
  rateCardId: string;
  model: string;
  estimate: TokenUsage;
  /** Empty: generate one. */
  holdId: string;
  ttlSeconds: number;
  idempotencyKey: string;
  metadata: Metadata;
  categories?: readonly string[];
}

/** A checked CaptureUsage request. */
export interface CaptureUsageInput {
  holdId: string;
  usage: TokenUsage;
  idempotencyKey: string;
  metadata: Metadata;
}

/** A checked SpendUsage request. */
export interface SpendUsageInput {
  walletId: string;
  rateCardId: string;
  model: string;
  usage: TokenUsage;
  idempotencyKey: string;
  metadata: Metadata;
  categories?: readonly string[];
}

export interface ReserveUsageResult {
  hold: Hold;
  quote: RateCardQuote;
  balance: Balance;
}

/** What CaptureUsage and SpendUsage share: the price, the charge and the token legs. */
export interface UsageCharge {
  usageId: string;
  quote: RateCardQuote;
  /** Minor units charged (0: the carry absorbed the cost). */
  amount: bigint;
  /** The wallet's account carry after the charge, in nano units. */
  carryNano: bigint;
  tokenTransfers: Transfer[];
  balance: Balance;
}

export interface CaptureUsageResult extends UsageCharge {
  /** The CAPTURE, or the RELEASE when nothing was charged. */
  transfer: Transfer;
  hold: Hold;
}

export interface SpendUsageResult extends UsageCharge {
  /** The SPEND; null when nothing was charged. */
  transfer: Transfer | null;
}

/** What the usage commands need of the command layer (commands.ts). */
export interface UsageCommandContext {
  /** commands.ts's send: the wallet's queue when known, alone otherwise. */
  send(caller: Caller, command: string, key: string, request: unknown, args: Json, walletId: string | undefined): Promise<Json>;
  /** When a command's hold is reported at: null for a replay (see commands.ts). */
  reportedAt(row: Json): Date | null;
  newId(): string;
  holdRoutes: HoldRoutes;
}

/** The usage commands, bound to the command layer. */
export function createUsageCommands(ctx: UsageCommandContext) {
  return {
    reserveUsage: (caller: Caller, input: ReserveUsageInput) => reserveUsage(ctx, caller, input),
    captureUsage: (caller: Caller, input: CaptureUsageInput) => captureUsage(ctx, caller, input),
    spendUsage: (caller: Caller, input: SpendUsageInput) => spendUsage(ctx, caller, input),
  };
}

/** A TokenUsage as the SQL takes it: every class, counts as decimal strings. */
export function usageArg(usage: TokenUsage): Record<string, string> {
  return Object.fromEntries(TOKEN_CLASSES.map((c) => [`${c}_tokens`, usage[c].toString()]));
}

/** An empty hold id gets a generated one, which the fingerprint does not cover. */
export function reserveUsageCall(input: Unkeyed<ReserveUsageInput>, newId: IdGenerator): CommandCall {
  const request = {
    wallet_id: input.walletId,
    rate_card_id: input.rateCardId,
    model: input.model,
    estimate: usageArg(input.estimate),
    hold_id: input.holdId,
    ttl_seconds: input.ttlSeconds,
    metadata: input.metadata,
    ...categoriesArg(input.categories),
  };
  return { command: "ReserveUsage", request, args: { ...request, hold_id: input.holdId === "" ? `hold_${newId()}` : input.holdId } };
}

/** Reserves the estimate's cost, rounded up. */
async function reserveUsage(ctx: UsageCommandContext, caller: Caller, input: ReserveUsageInput): Promise<Outcome<ReserveUsageResult>> {
  const call = reserveUsageCall(input, ctx.newId);
  const row = await ctx.send(caller, call.command, input.idempotencyKey, call.request, call.args, input.walletId);
  const now = ctx.reportedAt(row);
  const result = parseOutcome(row, (r) => ({
    hold: parseHold(r["hold"] as Json, now),
    quote: parseUsageQuote(r["quote"] as Json),
    balance: parseBalance(r["balance"] as Json),
  }));
  if (result.ok) {
    ctx.holdRoutes.remember(caller.tenantId, result.hold.holdId, result.hold.walletId);
  }
  return result;
}

export function captureUsageCall(input: Unkeyed<CaptureUsageInput>, newId: IdGenerator): CommandCall {
  const request = { hold_id: input.holdId, usage: usageArg(input.usage), metadata: input.metadata };
  return { command: "CaptureUsage", request, args: { ...request, usage_id: newId() } };
}

async function captureUsage(ctx: UsageCommandContext, caller: Caller, input: CaptureUsageInput): Promise<Outcome<CaptureUsageResult>> {
  const call = captureUsageCall(input, ctx.newId);
  const walletId = ctx.holdRoutes.walletOf(caller.tenantId, input.holdId);
  const row = await ctx.send(caller, call.command, input.idempotencyKey, call.request, call.args, walletId);
  const now = ctx.reportedAt(row);
  return parseOutcome(row, (r) => ({
    ...parseUsageCharge(r),
    transfer: parseTransfer(r["transfer"] as Json),
    hold: parseHold(r["hold"] as Json, now),
  }));
}

export function spendUsageCall(input: Unkeyed<SpendUsageInput>, newId: IdGenerator): CommandCall {
  const request = {
    wallet_id: input.walletId,
    rate_card_id: input.rateCardId,
    model: input.model,
    usage: usageArg(input.usage),
    metadata: input.metadata,
    ...categoriesArg(input.categories),
  };
  return { command: "SpendUsage", request, args: { ...request, usage_id: newId() } };
}

async function spendUsage(ctx: UsageCommandContext, caller: Caller, input: SpendUsageInput): Promise<Outcome<SpendUsageResult>> {
  const call = spendUsageCall(input, ctx.newId);
  const row = await ctx.send(caller, call.command, input.idempotencyKey, call.request, call.args, input.walletId);
  return parseOutcome(row, (r) => {
    const transfer = r["transfer"] as Json | undefined;
    return { ...parseUsageCharge(r), transfer: transfer ? parseTransfer(transfer) : null };
  });
}

/** The charge of a CaptureUsage or SpendUsage row (also a batch's, domain/batches.ts). */
export function parseUsageCharge(row: Json): UsageCharge {
  return {
    usageId: String(row["usage_id"]),
    quote: parseUsageQuote(row["quote"] as Json),
    amount: BigInt(String(row["amount"])),
    carryNano: BigInt(String(row["carry_nano"])),
    tokenTransfers: ((row["token_transfers"] ?? []) as Json[]).map(parseTransfer),
    balance: parseBalance(row["balance"] as Json),
  };
}

/** A quote as ledger_usage_quote writes it (the shape of metering_quote, with the rate card). */
export function parseUsageQuote(row: Json): RateCardQuote {
  const big = (key: string) => BigInt(String(row[key]));
  const tier = row["tier_above_input_tokens"];
  return {
    rateCardId: String(row["rate_card_id"]),
    version: Number(row["rate_card_version"]),
    model: String(row["model"]),
    asset: String(row["asset"]),
    tokenAsset: String(row["token_asset"]),
    markupBps: Number(row["markup_bps"]),
    tierAboveInputTokens: typeof tier === "string" ? BigInt(tier) : null,
    lines: (row["lines"] as Json[]).map((l) => ({
      tokenClass: l["token_class"] as TokenClass,
      tokens: BigInt(String(l["tokens"])),
      priceNanoPerMtok: BigInt(String(l["price_nano_per_mtok"])),
      costNano: BigInt(String(l["cost_nano"])),
    })),
    baseCostNano: big("base_cost_nano"),
    costNano: big("cost_nano"),
    chargeAmount: big("charge_amount"),
    holdAmount: big("hold_amount"),
  };
}
