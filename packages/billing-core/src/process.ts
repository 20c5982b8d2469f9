/**
 * One batch of usage records through one sink: resolve, map, deliver, dead-letter. Shared by
 * the stream (records from JetStream) and the backfill (records from the journal), so both
 * send exactly the same thing for the same transfer.
 *
 * @module
 */
import type pg from "pg";
import type { Logger } from "pino";
import { recordDeadLetters, resolveDeadLetters, type DeadLetter } from "./dead-letters.js";
import { deliver, type DeliveryOptions } from "./delivery.js";
import { mapUsage, needsWalletMetadata, type BillableUsage } from "./mapping.js";
import type { SinkMetrics } from "./metrics.js";
import type { Resolver } from "./resolver.js";
import type { Sink } from "./sinks/index.js";
import type { UsageRecord } from "./usage.js";

/** What became of one record. `failed` records must be offered again later. */
export type RecordOutcome =
  | { readonly status: "delivered" }
  | { readonly status: "skipped" }
  | { readonly status: "dead" }
  | { readonly status: "failed"; readonly retryAfterMs: number | null };

export interface ProcessContext {
  readonly sink: Sink;
  readonly pool: pg.Pool;
  readonly resolver: Resolver;
  readonly metrics: SinkMetrics;
  readonly logger: Logger;
  /** Mark earlier dead letters of delivered records resolved (the backfill does). */
  readonly resolveDeadLetters?: boolean;
}

/**
 * Processes `records` and returns one outcome per record, in order. Throws nothing for an
 * engine or a database outage: when PostgreSQL cannot be reached the records come back
 * `failed` and nothing was sent.
 */
export async function processRecords(
  ctx: ProcessContext,
  records: readonly UsageRecord[],
  delivery: Omit<DeliveryOptions, "onRetry">,
): Promise<RecordOutcome[]> {
  const { sink, metrics, logger } = ctx;
  let resolved;
  try {
    resolved = await ctx.resolver.resolve(records, needsWalletMetadata(sink.config));
  } catch (err) {
    logger.warn({ err, sink: sink.config.name }, "billing: cannot read wallets from PostgreSQL; the batch will be retried");
    return records.map(() => ({ status: "failed", retryAfterMs: null }));
  }
  const outcomes: RecordOutcome[] = new Array(records.length);
  const usages: BillableUsage[] = [];
  const usageIndex: number[] = [];
  const letters: { index: number; letter: DeadLetter }[] = [];
  records.forEach((record, index) => {
    const mapped = mapUsage(sink.config, record, resolved);
    if (mapped.kind === "skip") {
      outcomes[index] = { status: "skipped" };
    } else if (mapped.kind === "unmappable") {
      letters.push({ index, letter: { record, httpStatus: null, answer: mapped.why, request: unmappedRequest(record), attempts: 0 } });
    } else {
      usages.push(mapped.usage);
      usageIndex.push(index);
    }
  });
  const delivered = await deliver(sink, usages, {
    ...delivery,
    onRetry: (count, answer, delayMs) => {
      metrics.retried += count;
      logger.info({ sink: sink.config.name, count, answer, delayMs }, "billing: retrying after a transient failure");
    },
  });
  delivered.forEach((outcome, k) => {
    const index = usageIndex[k]!;
    const usage = usages[k]!;
    if (outcome.status === "delivered") outcomes[index] = { status: "delivered" };
    else if (outcome.status === "failed") outcomes[index] = { status: "failed", retryAfterMs: outcome.retryAfterMs };
    else letters.push({ index, letter: { record: usage.record, httpStatus: outcome.httpStatus, answer: outcome.answer, request: sink.describe(usage), attempts: outcome.attempts } });
  });
  await settleDeadLetters(ctx, letters, outcomes);
  await settleResolved(ctx, records, outcomes);
  count(ctx, records, outcomes, delivered.filter((o) => o.status === "failed").map((o) => (o as { answer: string }).answer)[0]);
  return outcomes;
}

async function settleDeadLetters(ctx: ProcessContext, letters: { index: number; letter: DeadLetter }[], outcomes: RecordOutcome[]): Promise<void> {
  if (letters.length === 0) return;
  try {
    await recordDeadLetters(ctx.pool, ctx.sink.config.name, letters.map((l) => l.letter));
    for (const { index, letter } of letters) {
      outcomes[index] = { status: "dead" };
      ctx.logger.warn(
        { sink: ctx.sink.config.name, transferId: letter.record.transferId, httpStatus: letter.httpStatus, answer: letter.answer },
        "billing: usage dead-lettered",
      );
    }
  } catch (err) {
    // Not recorded means not settled: the record is offered again rather than lost.
    ctx.logger.warn({ err, sink: ctx.sink.config.name }, "billing: cannot record dead letters; the records will be retried");
    for (const { index } of letters) outcomes[index] = { status: "failed", retryAfterMs: null };
  }
}

async function settleResolved(ctx: ProcessContext, records: readonly UsageRecord[], outcomes: RecordOutcome[]): Promise<void> {
  if (ctx.resolveDeadLetters !== true) return;
  const delivered = records.filter((_, i) => outcomes[i]?.status === "delivered");
  await resolveDeadLetters(ctx.pool, ctx.sink.config.name, delivered).catch((err: unknown) => {
    ctx.logger.warn({ err, sink: ctx.sink.config.name }, "billing: cannot mark dead letters resolved");
  });
}

function count(ctx: ProcessContext, records: readonly UsageRecord[], outcomes: readonly RecordOutcome[], failure: string | undefined): void {
  const { metrics } = ctx;
  const now = Date.now();
  outcomes.forEach((outcome, i) => {
    if (outcome.status === "delivered") {
      metrics.sent += 1;
      metrics.lagMs = now - records[i]!.occurredAt.getTime();
    } else if (outcome.status === "dead") metrics.deadLettered += 1;
    else if (outcome.status === "skipped") metrics.skipped += 1;
    else metrics.failed += 1;
  });
  if (failure !== undefined) {
    ctx.logger.warn({ sink: ctx.sink.config.name, answer: failure }, "billing: sink unavailable; usage goes back to the stream for later");
  }
}

function unmappedRequest(record: UsageRecord): Record<string, unknown> {
  return {
    tenant_id: record.tenantId,
    wallet_id: record.walletId,
    transfer_id: record.transferId,
    kind: record.kind,
    asset: record.asset,
    amount: record.amount.toString(),
    occurred_at: record.occurredAt.toISOString(),
    metadata: record.metadata,
    refund_of: record.refundOf,
  };
}
