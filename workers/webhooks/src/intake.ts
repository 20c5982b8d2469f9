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
 * The stream and the consumer must be this deployment's (their descriptions name its id); one
 * owned by another deployment stops the intake for good (`fatal`), since taking its messages
 * would lose its webhooks. An event of a tenant this database does not know is not stored: it
 * is terminated, logged and counted (the tenant guard in @holdfast/common/deployment).
 *
 * @module
 */
import { setTimeout as sleep } from "node:timers/promises";
import { fromBinary } from "@bufbuild/protobuf";
import { AckPolicy, DeliverPolicy, jetstream, type ConsumerMessages, type JetStreamManager, type JsMsg } from "@nats-io/jetstream";
import { nanos, type NatsConnection } from "@nats-io/transport-node";
import type pg from "pg";
import type { Logger } from "pino";
import { backoffDelayMs } from "@holdfast/common/backoff";
import { logRepeated } from "@holdfast/common/logger";
import { NAMESPACE_DEFAULT, type NatsTlsConfig } from "@holdfast/common/config";
import { createTenantGuard, deploymentIdOf, type TenantGuard } from "@holdfast/common/deployment";
import {
  checkConsumerOwner,
  connectNats,
  DeploymentConflictError,
  ensureStream,
  eventSubjectsAll,
  ownedDescription,
  type StreamSettings,
} from "@holdfast/common/nats";
import { isUuid } from "@holdfast/common/patterns";
import { EventSchema } from "@holdfast/gen/holdfast/v1/events_pb";
import { fanOut, ledgerEventMessage, type AddedDelivery, type WebhookMessage } from "@holdfast/webhooks-core/messages";

export interface IntakeOptions {
  readonly pool: pg.Pool;
  readonly logger: Logger;
  readonly natsUrl: string;
  /** TLS to NATS (HOLDFAST_NATS_TLS_*); null or absent uses none unless the server requires it. */
  readonly natsTls?: NatsTlsConfig | null;
  readonly stream: StreamSettings;
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
  /** Called after deliveries were added, with each one's endpoint, to wake the sender. */
  readonly onStored: (added: readonly AddedDelivery[]) => void;
}

export interface IntakeTotals {
  messages: number;
  deliveries: number;
  storeFailures: number;
  /** Events of tenants this database does not know: terminated, logged and counted. */
  unknownTenantEvents: number;
}

/** The intake's consumer, as JetStream last reported it. */
export interface IntakeBacklog {
  /** Events in the stream not yet handed to any replica. */
  readonly pending: number;
  /** Events handed out and not yet acknowledged. */
  readonly ackPending: number;
}

/** The pause after the consumer loop first fails; it doubles per failure up to retryDelayMsMax. */
const LOOP_RETRY_DELAY_MS_MIN = 250;

/**
 * The intake of one worker: a consumer loop that keeps the subscription open through NATS
 * outages, and a store loop that writes what arrived; `stop` stores what was taken first.
 */
export function createIntake(options: IntakeOptions) {
  const { logger } = options;
  const totals: IntakeTotals = { messages: 0, deliveries: 0, storeFailures: 0, unknownTenantEvents: 0 };
  const buffer: JsMsg[] = [];
  let stopping = false;
  const stopped = new AbortController();
  const deploymentId = deploymentIdOf(options.pool);
  const guard = createTenantGuard({ pool: options.pool, logger, consumer: "webhooks" });
  const settled = settledSignals();
  let nc: NatsConnection | null = null;
  let jsm: JetStreamManager | null = null;
  let messages: ConsumerMessages | null = null;
  let arrived: (() => void) | null = null;
  let loops: Promise<unknown> | null = null;

  /** Keeps a consumer subscription open, re-creating it whenever it closes. */
  async function consumeLoop(): Promise<void> {
    let failures = 0;
    while (!stopping) {
      try {
        const id = await deploymentId();
        if (nc?.isClosed() === true) nc = null;
        nc ??= await connectNats(options.natsUrl, options.consumerName, logger, options.natsTls ?? null);
        jsm = await ensureStream(nc, options.stream, id, logger);
        messages = await subscribe(nc, jsm, options, id, (msg) => {
          buffer.push(msg);
          arrived?.();
        });
        failures = 0;
        settled.ready();
        const closed = await messages.closed();
        if (closed instanceof Error) throw closed;
      } catch (err) {
        if (stopping) break;
        if (err instanceof DeploymentConflictError) {
          // Taking another deployment's events would lose its webhooks: stop for good.
          logger.fatal({ err }, "webhooks: the event stream or consumer belongs to another deployment; not consuming");
          settled.fatal(err);
          break;
        }
        failures++;
        const delay = backoffDelayMs(failures, { delayMsMin: LOOP_RETRY_DELAY_MS_MIN, delayMsMax: options.retryDelayMsMax });
        logRepeated(logger, "warn", { err, retryInMs: delay }, "webhooks: event consumer failed; retrying");
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
      await storeBatch({ options, totals, guard }, buffer.splice(0, options.batchMax));
    }
  }

  return {
    start(): void {
      loops ??= Promise.all([consumeLoop(), storeLoop()]);
    },
    totals: (): IntakeTotals => ({ ...totals }),
    /** Resolves once the consumer is subscribed the first time. */
    ready: settled.readyPromise,
    /** Resolves with the reason if the intake stopped for good (another deployment's stream). */
    fatal: settled.fatalPromise,
    /** The consumer's backlog from JetStream, or null while NATS is away. */
    backlog: (): Promise<IntakeBacklog | null> => readBacklog(jsm, options),
    /** Stops taking messages, stores what was taken, then closes the connection. */
    async stop(): Promise<void> {
      stopping = true;
      stopped.abort();
      await messages?.close().catch(() => undefined);
      arrived?.();
      await loops;
      guard.close();
      await nc?.drain().catch(() => undefined);
    },
  };
}

async function readBacklog(jsm: JetStreamManager | null, options: IntakeOptions): Promise<IntakeBacklog | null> {
  const info = await jsm?.consumers.info(options.stream.name, options.consumerName).catch(() => null);
  return info == null ? null : { pending: info.num_pending, ackPending: info.num_ack_pending };
}

/** Makes sure of the durable consumer (this deployment's) and subscribes to it. */
async function subscribe(
  nc: NatsConnection,
  jsm: JetStreamManager,
  options: IntakeOptions,
  deploymentId: string,
  onMessage: (msg: JsMsg) => void,
): Promise<ConsumerMessages> {
  await ensureConsumer(jsm, options, deploymentId);
  const consumer = await jetstream(nc).consumers.get(options.stream.name, options.consumerName);
  return consumer.consume({ max_messages: options.batchMax, abort_on_missing_resource: true, callback: onMessage });
}

/** The two ways the consumer loop settles its start: subscribed, or refused for good. */
function settledSignals() {
  let ready: () => void = () => undefined;
  let fatal: (err: Error) => void = () => undefined;
  const readyPromise = new Promise<void>((resolve) => {
    ready = resolve;
  });
  const fatalPromise = new Promise<Error>((resolve) => {
    fatal = resolve;
  });
  return { ready: () => ready(), fatal: (err: Error) => fatal(err), readyPromise, fatalPromise };
}

export type Intake = ReturnType<typeof createIntake>;

/**
 * Creates the shared durable consumer, or brings its settings up to date; one that names
 * another deployment as its owner is refused (DeploymentConflictError).
 */
async function ensureConsumer(jsm: JetStreamManager, options: IntakeOptions, deploymentId: string): Promise<void> {
  const settings = {
    ack_wait: nanos(options.ackWaitMs),
    max_ack_pending: options.ackPendingMax,
    description: ownedDescription("Holdfast webhook worker: events to webhook deliveries", deploymentId),
  };
  try {
    const info = await jsm.consumers.info(options.stream.name, options.consumerName);
    checkConsumerOwner(info, options.stream.namespace ?? NAMESPACE_DEFAULT, deploymentId);
    await jsm.consumers.update(options.stream.name, options.consumerName, settings);
  } catch (err) {
    if (!(err instanceof Error && /consumer not found/i.test(err.message))) throw err;
    // Deliver policy all: events published before the worker's first start are not skipped.
    await jsm.consumers.add(options.stream.name, {
      ...settings,
      durable_name: options.consumerName,
      ack_policy: AckPolicy.Explicit,
      deliver_policy: DeliverPolicy.All,
      filter_subject: eventSubjectsAll(options.stream.namespace),
      max_deliver: -1,
    });
  }
}

/** What storing a batch needs besides the batch. */
interface StoreContext {
  readonly options: IntakeOptions;
  readonly totals: IntakeTotals;
  readonly guard: TenantGuard;
}

/**
 * Stores one batch's deliveries in one statement, then acknowledges its messages; when that
 * fails, hands them back to JetStream for redelivery after `nakDelayMs`. Messages of tenants
 * this database does not know are terminated (the guard logs and counts them).
 */
async function storeBatch({ options, totals, guard }: StoreContext, batch: JsMsg[]): Promise<void> {
  const all: { msg: JsMsg; message: WebhookMessage }[] = [];
  for (const msg of batch) {
    const message = decode(msg, options.logger);
    if (message !== null) all.push({ msg, message });
  }
  let unsettled = all;
  try {
    const { known, unknown } = await guard.split(all, (d) => d.message.tenantId);
    for (const { msg } of unknown) msg.term("tenant unknown to this deployment");
    totals.unknownTenantEvents += unknown.length;
    unsettled = known;
    const added = await fanOut(options.pool, known.map((d) => d.message));
    totals.messages += known.length;
    totals.deliveries += added.length;
    for (const { msg } of known) msg.ack();
    if (added.length > 0) options.onStored(added);
  } catch (err) {
    // The database is away, or an endpoint was deleted mid-statement: JetStream brings the
    // messages back after the delay and the batch is stored again.
    totals.storeFailures++;
    options.logger.warn({ err, messages: unsettled.length }, "webhooks: storing deliveries failed; messages will be redelivered");
    for (const { msg } of unsettled) msg.nak(options.nakDelayMs);
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
