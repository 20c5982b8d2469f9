/**
 * The receiving half of the worker: a durable JetStream consumer that turns each event into one
 * pending delivery per endpoint that takes it, and acknowledges the message only after those rows
 * are committed. A crash before the commit means the message is redelivered after `ack_wait`; a
 * crash after the commit but before the ack means it is redelivered and adds nothing (the rows'
 * unique keys). Either way no event is lost.
 *
 * All replicas share the one durable consumer, so JetStream spreads the messages over them.
 * Messages are taken in small batches (what has arrived, up to `batchMax`) and stored with one
 * statement per batch.
 *
 * @module
 */
import { setTimeout as sleep } from "node:timers/promises";
import { fromBinary } from "@bufbuild/protobuf";
import { AckPolicy, DeliverPolicy, jetstream, type ConsumerMessages, type JsMsg } from "@nats-io/jetstream";
import { nanos, type NatsConnection } from "@nats-io/transport-node";
import type pg from "pg";
import type { Logger } from "pino";
import { backoffDelayMs } from "@holdfast/common/backoff";
import { connectNats, ensureStream, EVENT_SUBJECTS_ALL, type StreamSettings } from "@holdfast/common/nats";
import { isUuid } from "@holdfast/common/patterns";
import { EventSchema } from "@holdfast/gen/holdfast/v1/events_pb";
import { fanOut, ledgerEventMessage, type WebhookMessage } from "@holdfast/webhooks-core/messages";

export interface IntakeOptions {
  readonly pool: pg.Pool;
  readonly logger: Logger;
  readonly natsUrl: string;
  readonly stream: Omit<StreamSettings, "subjects">;
  /** The durable consumer's name; replicas share it. */
  readonly consumerName: string;
  /** Most messages stored per statement. */
  readonly batchMax: number;
  /** Most messages handed out and not yet acknowledged, over all replicas. */
  readonly ackPendingMax: number;
  /** How long JetStream waits for an ack before redelivering. */
  readonly ackWaitMs: number;
  /** Delay before a message whose batch could not be stored is redelivered. */
  readonly nakDelayMs: number;
  /** Longest pause after the consumer loop failed (NATS away), doubling up to it. */
  readonly retryDelayMsMax: number;
  /** Called after deliveries were added, to wake the sender. */
  readonly onStored: () => void;
}

export interface IntakeTotals {
  messages: number;
  deliveries: number;
  storeFailures: number;
}

/** The pause after the consumer loop first fails; it doubles per failure up to retryDelayMsMax. */
const LOOP_RETRY_DELAY_MS_MIN = 250;

/**
 * The intake of one worker: a consumer loop that keeps the subscription open through NATS
 * outages, and a store loop that writes what arrived; `stop` stores what was taken first.
 */
export function createIntake(options: IntakeOptions) {
  const { logger } = options;
  const totals: IntakeTotals = { messages: 0, deliveries: 0, storeFailures: 0 };
  const buffer: JsMsg[] = [];
  let stopping = false;
  const stopped = new AbortController();
  let nc: NatsConnection | null = null;
  let messages: ConsumerMessages | null = null;
  let arrived: (() => void) | null = null;
  let loops: Promise<unknown> | null = null;

  /** Keeps a consumer subscription open, re-creating it whenever it closes. */
  async function consumeLoop(): Promise<void> {
    let failures = 0;
    while (!stopping) {
      try {
        if (nc?.isClosed() === true) nc = null;
        nc ??= await connectNats(options.natsUrl, "holdfast-webhooks", logger);
        const jsm = await ensureStream(nc, { ...options.stream, subjects: [EVENT_SUBJECTS_ALL] });
        await ensureConsumer(jsm, options);
        const consumer = await jetstream(nc).consumers.get(options.stream.name, options.consumerName);
        messages = await consumer.consume({
          max_messages: options.batchMax,
          abort_on_missing_resource: true,
          callback: (msg) => {
            buffer.push(msg);
            arrived?.();
          },
        });
        failures = 0;
        const closed = await messages.closed();
        if (closed instanceof Error) throw closed;
      } catch (err) {
        if (stopping) break;
        failures++;
        const delay = backoffDelayMs(failures, { delayMsMin: LOOP_RETRY_DELAY_MS_MIN, delayMsMax: options.retryDelayMsMax });
        logger.warn({ err, retryInMs: delay }, "webhooks: event consumer failed; retrying");
        await sleep(delay, undefined, { signal: stopped.signal }).catch(() => undefined);
      }
    }
  }

  /** Stores what has arrived, batch by batch, until stopped. */
  async function storeLoop(): Promise<void> {
    while (!stopping || buffer.length > 0) {
      if (buffer.length === 0) {
        await new Promise<void>((resolve) => {
          arrived = resolve;
        });
        arrived = null;
        continue;
      }
      await storeBatch(options, totals, buffer.splice(0, options.batchMax));
    }
  }

  return {
    start(): void {
      loops ??= Promise.all([consumeLoop(), storeLoop()]);
    },
    totals: (): IntakeTotals => ({ ...totals }),
    /** Stops taking messages, stores what was taken, then closes the connection. */
    async stop(): Promise<void> {
      stopping = true;
      stopped.abort();
      await messages?.close().catch(() => undefined);
      arrived?.();
      await loops;
      await nc?.drain().catch(() => undefined);
    },
  };
}

export type Intake = ReturnType<typeof createIntake>;

/** Creates the shared durable consumer, or brings its settings up to date. */
async function ensureConsumer(jsm: Awaited<ReturnType<typeof ensureStream>>, options: IntakeOptions): Promise<void> {
  const settings = {
    ack_wait: nanos(options.ackWaitMs),
    max_ack_pending: options.ackPendingMax,
    description: "Holdfast webhook worker: events to webhook deliveries",
  };
  try {
    await jsm.consumers.info(options.stream.name, options.consumerName);
    await jsm.consumers.update(options.stream.name, options.consumerName, settings);
  } catch (err) {
    if (!(err instanceof Error && /consumer not found/i.test(err.message))) throw err;
    // Deliver policy all: events published before the worker's first start are not skipped.
    await jsm.consumers.add(options.stream.name, {
      ...settings,
      durable_name: options.consumerName,
      ack_policy: AckPolicy.Explicit,
      deliver_policy: DeliverPolicy.All,
      filter_subject: EVENT_SUBJECTS_ALL,
      max_deliver: -1,
    });
  }
}

/**
 * Stores one batch's deliveries in one statement, then acknowledges its messages; when that
 * fails, hands them back to JetStream for redelivery after `nakDelayMs`.
 */
async function storeBatch(options: IntakeOptions, totals: IntakeTotals, batch: JsMsg[]): Promise<void> {
  const decoded: { msg: JsMsg; message: WebhookMessage }[] = [];
  for (const msg of batch) {
    const message = decode(msg, options.logger);
    if (message !== null) decoded.push({ msg, message });
  }
  try {
    const added = await fanOut(options.pool, decoded.map((d) => d.message));
    totals.messages += decoded.length;
    totals.deliveries += added;
    for (const { msg } of decoded) msg.ack();
    if (added > 0) options.onStored();
  } catch (err) {
    // The database is away, or an endpoint was deleted mid-statement: JetStream brings the
    // messages back after the delay and the batch is stored again.
    totals.storeFailures++;
    options.logger.warn({ err, messages: decoded.length }, "webhooks: storing deliveries failed; messages will be redelivered");
    for (const { msg } of decoded) msg.nak(options.nakDelayMs);
  }
}

/** The message's webhook message; a message that is not a Holdfast event is terminated. */
function decode(msg: JsMsg, logger: Logger): WebhookMessage | null {
  try {
    const event = fromBinary(EventSchema, msg.data);
    if (!isUuid(event.tenantId) || !isUuid(event.eventId) || event.type === "") {
      throw new Error("event without tenant id, event id or type");
    }
    return ledgerEventMessage(event);
  } catch (err) {
    logger.error({ err, subject: msg.subject, seq: msg.seq }, "webhooks: undecodable event; terminated");
    msg.term("undecodable holdfast.v1.Event");
    return null;
  }
}
