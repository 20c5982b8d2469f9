/**
 * One sink's JetStream pipeline: a durable pull consumer of its own, batches cut at
 * `batch_size_max` or `flush_interval_ms`, and acknowledgement only once the engine accepted
 * a record or it was dead-lettered.
 *
 * Because each sink has its own durable consumer, a sink that is down or slow only grows its
 * own backlog in JetStream; the others read on. A record the engine could not take after the
 * in-process retries is negatively acknowledged with a delay, so JetStream redelivers it later
 * (`max_deliver` is unlimited: usage is never dropped for being late; the stream's retention,
 * HOLDFAST_STREAM_MAX_AGE_HOURS, bounds how long an outage can last before a backfill is needed).
 * A crash loses nothing either: unacknowledged messages come back after `ack_wait`, and the
 * transfer id as idempotency key turns the re-send into a no-op at the engine.
 *
 * The consumer is named in the deployment's namespace (`<namespace>-billing-<sink>`) and
 * records the deployment that owns it; one owned by another deployment stops the pipeline for
 * good (`onFatal`). Usage of a tenant this database does not know is never sent: it is
 * terminated, logged and counted (the tenant guard in @holdfast/common/deployment).
 *
 * @module
 */
import { setTimeout as sleep } from "node:timers/promises";
import { fromBinary } from "@bufbuild/protobuf";
import {
  AckPolicy,
  DeliverPolicy,
  type ConsumerConfig,
  type ConsumerMessages,
  type JetStreamClient,
  type JetStreamManager,
  type JsMsg,
} from "@nats-io/jetstream";
import { nanos } from "@nats-io/transport-node";
import { backoffDelayMs } from "@holdfast/common/backoff";
import { NAMESPACE_DEFAULT } from "@holdfast/common/config";
import type { TenantGuard } from "@holdfast/common/deployment";
import {
  checkConsumerOwner,
  consumerNameOf,
  DeploymentConflictError,
  eventSubjectRoot,
  eventSubjectsAll,
  ownedDescription,
} from "@holdfast/common/nats";
import { EventSchema } from "@holdfast/gen/holdfast/v1/events_pb";
import type { SinkConfig } from "./config.js";
import { processRecords, type ProcessContext, type RecordOutcome } from "./process.js";
import { usageFromEvent, type UsageRecord } from "./usage.js";

/** Subject tail of each usage kind. */
const KIND_SUBJECTS = { spend: "spend.completed", capture: "hold.captured", refund: "refund.completed" } as const;
/** More filter subjects than this and the consumer filters on the root instead. */
const FILTER_SUBJECTS_MAX = 64;
/** Margin on ack_wait above the worst flush the worker keeps in process. */
const ACK_WAIT_SLACK_MS = 5_000;
/** Pause after the consumer loop fails (NATS away, consumer deleted), doubled up to the max. */
const LOOP_RETRY_DELAY_MS_MIN = 250;
const LOOP_RETRY_DELAY_MS_MAX = 5_000;

export interface SinkStreamOptions {
  readonly ctx: ProcessContext;
  readonly js: JetStreamClient;
  readonly jsm: JetStreamManager;
  readonly streamName: string;
  /** Whether the server takes several filter subjects per consumer (nats-server 2.10+). */
  readonly multipleFilters: boolean;
  /** HOLDFAST_NAMESPACE: the subjects filtered on and the consumer's name are in it. */
  readonly namespace: string;
  /** This deployment's id, recorded on the consumer and checked against it. */
  readonly deploymentId: string;
  /** Sets aside usage of tenants this database does not know. */
  readonly guard: TenantGuard;
  /** Called when the consumer belongs to another deployment: the pipeline has stopped for good. */
  readonly onFatal: (err: DeploymentConflictError) => void;
}

/** The durable consumer's name for a sink: `<namespace>-billing-<sink>` (holdfast-billing-stripe). */
export const consumerName = (sink: SinkConfig, namespace: string = NAMESPACE_DEFAULT): string =>
  consumerNameOf(namespace, `billing-${sink.name}`);

/**
 * The longest a flush may keep records in process: every attempt's request timeout plus the
 * longest wait before the next one. Past it the flush hands what is left back to JetStream.
 */
export function flushBudgetMs(sink: SinkConfig): number {
  return sink.attemptsMax * (sink.requestTimeoutMs + Math.max(sink.retryDelayMsMax, sink.retryAfterMsMax));
}

/** ack_wait: a message may wait one flush interval and one whole flush before it is worked on. */
export const ackWaitMs = (sink: SinkConfig): number => sink.flushIntervalMs + flushBudgetMs(sink) + ACK_WAIT_SLACK_MS;

/** The narrowest server-side filter in the namespace: exact subjects when the server takes several. */
export function filterFor(
  sink: SinkConfig,
  multipleFilters: boolean,
  namespace: string = NAMESPACE_DEFAULT,
): Pick<ConsumerConfig, "filter_subject" | "filter_subjects"> {
  const root = eventSubjectRoot(namespace);
  const tenants = sink.tenants ?? ["*"];
  const exact = tenants.flatMap((t) => sink.kinds.map((k) => `${root}.${t}.*.${KIND_SUBJECTS[k]}`));
  if (exact.length === 1) return { filter_subject: exact[0]! };
  if (multipleFilters && exact.length <= FILTER_SUBJECTS_MAX) return { filter_subjects: exact };
  return { filter_subject: tenants.length === 1 ? `${root}.${tenants[0]}.>` : eventSubjectsAll(namespace) };
}

type ConsumerOptions = Pick<SinkStreamOptions, "jsm" | "streamName" | "multipleFilters" | "namespace" | "deploymentId">;

function consumerConfig(sink: SinkConfig, options: ConsumerOptions): Partial<ConsumerConfig> {
  const start =
    sink.start.policy === "all"
      ? { deliver_policy: DeliverPolicy.All }
      : sink.start.policy === "new"
        ? { deliver_policy: DeliverPolicy.New }
        : { deliver_policy: DeliverPolicy.StartTime, opt_start_time: sink.start.at.toISOString() };
  return {
    durable_name: consumerName(sink, options.namespace),
    description: ownedDescription(`Holdfast billing stream to ${sink.type} sink ${sink.name}`, options.deploymentId),
    ack_policy: AckPolicy.Explicit,
    ack_wait: nanos(ackWaitMs(sink)),
    max_ack_pending: sink.maxAckPending,
    max_deliver: -1,
    ...start,
    ...filterFor(sink, options.multipleFilters, options.namespace),
  };
}

/**
 * Creates the sink's durable consumer, or brings the settings that may change up to date; one
 * that names another deployment as its owner is refused (DeploymentConflictError).
 */
export async function ensureConsumer(options: ConsumerOptions, sink: SinkConfig): Promise<void> {
  const { jsm, streamName } = options;
  const config = consumerConfig(sink, options);
  const name = consumerName(sink, options.namespace);
  const existing = await jsm.consumers.info(streamName, name).catch((err: unknown) => {
    if (err instanceof Error && /consumer not found/i.test(err.message)) return null;
    throw err;
  });
  if (existing === null) {
    await jsm.consumers.add(streamName, config);
    return;
  }
  checkConsumerOwner(existing, options.namespace, options.deploymentId);
  const { ack_wait, max_ack_pending, description, filter_subject, filter_subjects } = config;
  const filterChanged =
    (existing.config.filter_subject ?? "") !== (filter_subject ?? "") ||
    JSON.stringify(existing.config.filter_subjects ?? []) !== JSON.stringify(filter_subjects ?? []);
  const filter = filterChanged ? (filter_subjects !== undefined ? { filter_subjects } : { filter_subject }) : {};
  try {
    await jsm.consumers.update(streamName, name, { ack_wait, max_ack_pending, description, ...filter });
  } catch (err) {
    if (!filterChanged) throw err;
    // A narrower old filter would silently miss usage the configuration now routes here.
    // Deleting the consumer would replay the whole stream, past some engines' dedupe window.
    throw new Error(
      `consumer ${name} filters ${JSON.stringify(existing.config.filter_subject ?? existing.config.filter_subjects)} but sink ` +
        `${sink.name} now needs ${JSON.stringify(filter_subject ?? filter_subjects)}, and the server refused to change it ` +
        `(${(err as Error).message}); give the sink a new name (its consumer starts per "start") and backfill what it missed`,
    );
  }
}

/** Starts the pipeline of one sink; `stop` lets the batch in hand finish (or hand back) first. */
export function createSinkStream(options: SinkStreamOptions) {
  const { ctx } = options;
  const sink = ctx.sink.config;
  const stopping = new AbortController();
  let messages: ConsumerMessages | null = null;

  async function run(): Promise<void> {
    let failures = 0;
    while (!stopping.signal.aborted) {
      try {
        await ensureConsumer(options, sink);
        const consumer = await options.js.consumers.get(options.streamName, consumerName(sink, options.namespace));
        messages = await consumer.consume({ max_messages: sink.batchSizeMax });
        failures = 0;
        await readBatches(messages, sink, flush);
      } catch (err) {
        if (stopping.signal.aborted) break;
        if (err instanceof DeploymentConflictError) {
          // Billing another deployment's usage would bill it twice or to the wrong customer.
          ctx.logger.fatal({ err, sink: sink.name }, "billing: the sink's consumer belongs to another deployment; not consuming");
          options.onFatal(err);
          break;
        }
        failures++;
        const delay = backoffDelayMs(failures, { delayMsMin: LOOP_RETRY_DELAY_MS_MIN, delayMsMax: LOOP_RETRY_DELAY_MS_MAX });
        ctx.logger.warn({ err, sink: sink.name, retryInMs: delay }, "billing: consumer loop failed; retrying");
        await sleep(delay, undefined, { signal: stopping.signal }).catch(() => undefined);
      }
    }
  }

  /** Delivers one batch and settles every message of it. */
  async function flush(batch: JsMsg[]): Promise<void> {
    const grouped = groupByTransfer(batch, (msg) => decodeUsage(ctx, msg));
    const { records, owners } = await setAsideUnknown(options.guard, ctx, grouped, redeliveryDelayMs);
    if (records.length === 0) return;
    const outcomes = await processRecords(ctx, records, {
      signal: stopping.signal,
      deadline: Date.now() + flushBudgetMs(sink),
      onAttempt: () => owners.forEach((msgs) => msgs.forEach((m) => m.working())),
    });
    outcomes.forEach((outcome, i) => owners[i]!.forEach((msg) => settle(msg, outcome)));
  }

  function settle(msg: JsMsg, outcome: RecordOutcome): void {
    if (outcome.status !== "failed") {
      msg.ack();
      return;
    }
    if (stopping.signal.aborted) {
      msg.nak();
      return;
    }
    msg.nak(Math.max(redeliveryDelayMs(msg), outcome.retryAfterMs ?? 0));
  }

  /** Later for each redelivery, so a long outage costs few requests per record. */
  function redeliveryDelayMs(msg: JsMsg): number {
    return backoffDelayMs(msg.info.deliveryCount, { delayMsMin: sink.retryDelayMsMin, delayMsMax: sink.retryDelayMsMax });
  }

  let loop: Promise<void> | null = null;
  return {
    start(): void {
      loop ??= run();
    },
    /** Refreshes backlog figures from the consumer's info. */
    async refresh(): Promise<void> {
      const info = await options.jsm.consumers.info(options.streamName, consumerName(sink, options.namespace));
      ctx.metrics.pending = info.num_pending;
      ctx.metrics.ackPending = info.num_ack_pending;
    },
    async stop(): Promise<void> {
      stopping.abort();
      await messages?.close().catch(() => undefined);
      await loop;
    },
  };
}

export type SinkStream = ReturnType<typeof createSinkStream>;

/** Usage records with the messages that carry each (see groupByTransfer). */
interface Grouped {
  readonly records: UsageRecord[];
  readonly owners: JsMsg[][];
}

/**
 * Terminates the messages of records whose tenant this database does not know (the guard logs
 * and counts them); when the database cannot say, hands the whole batch back for later.
 */
async function setAsideUnknown(guard: TenantGuard, ctx: ProcessContext, grouped: Grouped, delayMs: (msg: JsMsg) => number): Promise<Grouped> {
  const indexed = grouped.records.map((record, i) => ({ record, msgs: grouped.owners[i]! }));
  let split;
  try {
    split = await guard.split(indexed, (item) => item.record.tenantId);
  } catch (err) {
    ctx.logger.warn({ err, sink: ctx.sink.config.name }, "billing: cannot read tenants from PostgreSQL; the batch will be retried");
    for (const { msgs } of indexed) msgs.forEach((msg) => msg.nak(delayMs(msg)));
    return { records: [], owners: [] };
  }
  for (const { msgs } of split.unknown) msgs.forEach((msg) => msg.term("tenant unknown to this deployment"));
  return { records: split.known.map((item) => item.record), owners: split.known.map((item) => item.msgs) };
}

/**
 * Cuts the message flow into batches of batch_size_max or flush_interval_ms, whichever comes
 * first, and hands each to `flush`; returns when the flow ends.
 */
async function readBatches(source: ConsumerMessages, sink: SinkConfig, flush: (batch: JsMsg[]) => Promise<void>): Promise<void> {
  const iterator = source[Symbol.asyncIterator]();
  let pending: Promise<IteratorResult<JsMsg>> | null = null;
  for (;;) {
    pending ??= iterator.next();
    const first: IteratorResult<JsMsg> = await pending;
    pending = null;
    if (first.done === true) return;
    const batch = [first.value];
    const deadline = Date.now() + sink.flushIntervalMs;
    let ended = false;
    while (batch.length < sink.batchSizeMax) {
      const remaining = deadline - Date.now();
      if (remaining <= 0) break;
      pending ??= iterator.next();
      const next = await raceTimeout(pending, remaining);
      if (next === null) break;
      pending = null;
      if (next.done === true) {
        ended = true;
        break;
      }
      batch.push(next.value);
    }
    await flush(batch);
    if (ended) return;
  }
}

/**
 * The batch's usage records, one per transfer, each with the messages that carry it: the same
 * transfer twice in a batch (a re-published event) is sent once and settles both.
 */
function groupByTransfer(batch: readonly JsMsg[], decode: (msg: JsMsg) => UsageRecord | null): { records: UsageRecord[]; owners: JsMsg[][] } {
  const records: UsageRecord[] = [];
  const owners: JsMsg[][] = [];
  const byTransfer = new Map<string, number>();
  for (const msg of batch) {
    const record = decode(msg);
    if (record === null) continue;
    const seen = byTransfer.get(record.transferId);
    if (seen !== undefined) {
      owners[seen]!.push(msg);
      continue;
    }
    byTransfer.set(record.transferId, records.length);
    records.push(record);
    owners.push([msg]);
  }
  return { records, owners };
}

/** The message's usage record; messages that carry none are acknowledged here. */
function decodeUsage(ctx: ProcessContext, msg: JsMsg): UsageRecord | null {
  try {
    const record = usageFromEvent(fromBinary(EventSchema, msg.data));
    if (record === null) {
      ctx.metrics.skipped += 1;
      msg.ack();
    }
    return record;
  } catch (err) {
    // Not a holdfast.v1.Event: nothing to bill, and redelivering it would never help.
    const sink = ctx.sink.config.name;
    ctx.logger.error({ err, sink, subject: msg.subject, seq: msg.seq }, "billing: undecodable event; terminated");
    msg.term("undecodable holdfast.v1.Event");
    return null;
  }
}

/** The promise's result, or null when `ms` pass first. The promise is left running. */
async function raceTimeout<T>(promise: Promise<T>, ms: number): Promise<T | null> {
  const timer = new AbortController();
  try {
    return await Promise.race([promise, sleep(ms, null, { signal: timer.signal })]);
  } finally {
    timer.abort();
  }
}
