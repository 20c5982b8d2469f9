/**
 * The webhook worker: the intake (JetStream → deliveries in PostgreSQL), the sender
 * (deliveries → HTTP) and a retention sweeper, wired together. main.ts builds one from the
 * environment; tests build several in one process, on their own NATS server and database.
 *
 * The sender needs only PostgreSQL: while NATS is away, deliveries already stored keep going
 * out, and the stream's backlog is taken in when NATS comes back.
 *
 * @module
 */
import type pg from "pg";
import type { Logger } from "pino";
import { uuidV7, type IdGenerator } from "@holdfast/common/ids";
import { NAMESPACE_DEFAULT, type NatsTlsConfig } from "@holdfast/common/config";
import { consumerNameOf, type StreamSettings } from "@holdfast/common/nats";
import { createUrlPolicy } from "@holdfast/webhooks-core/url-policy";
import type { WebhookSettings } from "./config.js";
import { pruneOld } from "./deliveries.js";
import { createHttpPoster } from "./http-post.js";
import { createIntake, type IntakeBacklog, type IntakeTotals } from "./intake.js";
import { createSender, type SenderTotals } from "./sender.js";

export interface WebhookWorkerOptions {
  readonly pool: pg.Pool;
  readonly logger: Logger;
  readonly natsUrl: string;
  /** TLS to NATS (HOLDFAST_NATS_TLS_*); null or absent uses none unless the server requires it. */
  readonly natsTls?: NatsTlsConfig | null;
  /** The stream, and the namespace (HOLDFAST_NAMESPACE) its subjects and the consumer's name are in. */
  readonly stream: StreamSettings;
  readonly settings: WebhookSettings;
  readonly newId?: IdGenerator;
  /**
   * The durable consumer's name; every replica of one deployment must use the same. Defaults
   * to `<namespace>-webhooks` ({@link CONSUMER_ROLE}).
   */
  readonly consumerName?: string;
  readonly pollIdleMs?: number;
}

/** The durable consumer every replica shares is `<namespace>-webhooks`: holdfast-webhooks by default. */
export const CONSUMER_ROLE = "webhooks";
/**
 * A claim's lease: twice the request timeout plus this. The attempt itself takes at most one
 * timeout; the second covers recording the outcome and clock skew between replicas. An attempt
 * cut short by a crash is retried once the lease runs out.
 */
const LEASE_SLACK_MS = 1000;
/**
 * The sender's safety poll: the longest pause between claims when nothing is due. New events,
 * finished attempts and this process's retries falling due wake it sooner, so idle it costs one
 * short claim per second; a retry scheduled by another replica or by RetryDelivery waits for it.
 */
const POLL_IDLE_MS = 1000;
const CLAIM_ENDPOINTS_MAX = 256;
const INTAKE_BATCH_MAX = 256;
/** Must exceed INTAKE_BATCH_MAX, or one worker could starve the others of messages. */
const INTAKE_ACK_PENDING_MAX = 4096;
/**
 * Storing a batch is one statement (bounded by the statement timeout, 5 s by default), so a
 * message unacknowledged for this long belongs to a worker that died: hand it to another. A
 * slow database that overruns it costs only a redelivery, which adds nothing.
 */
const INTAKE_ACK_WAIT_MS = 10_000;
const INTAKE_NAK_DELAY_MS = 1000;
const RETRY_DELAY_MS_MAX = 5000;
const RESPONSE_BYTES_MAX = 4096;
/**
 * Retention of finished deliveries and their messages: every interval, batches of at most this
 * many rows per statement until one comes back short (caught up), so pruning keeps pace with
 * any delivery rate the sender reaches without a long transaction (docs/performance.md,
 * "Retention").
 */
const PRUNE_INTERVAL_MS = 10_000;
const PRUNE_BATCH_MAX = 5_000;
const USER_AGENT = "Holdfast-Webhooks/0.1 (+https://www.standardwebhooks.com)";

export function createWebhookWorker(options: WebhookWorkerOptions) {
  const { pool, logger, settings } = options;
  const newId = options.newId ?? uuidV7;
  const poster = createHttpPoster({
    policy: createUrlPolicy(settings.allowedNetworks),
    timeoutMs: settings.timeoutMs,
    socketsMax: settings.concurrency,
    responseBytesMax: RESPONSE_BYTES_MAX,
    userAgent: USER_AGENT,
  });
  const sender = createSender({
    pool,
    logger,
    poster,
    newId,
    concurrency: settings.concurrency,
    endpointConcurrency: settings.endpointConcurrency,
    retryScheduleMs: settings.retryScheduleMs,
    disableAfterSeconds: settings.disableAfterSeconds,
    leaseMs: 2 * settings.timeoutMs + LEASE_SLACK_MS,
    claimEndpointsMax: CLAIM_ENDPOINTS_MAX,
    pollIdleMs: options.pollIdleMs ?? POLL_IDLE_MS,
    retryDelayMsMax: RETRY_DELAY_MS_MAX,
  });
  const intake = createIntake({
    pool,
    logger,
    natsUrl: options.natsUrl,
    natsTls: options.natsTls ?? null,
    stream: options.stream,
    consumerName: options.consumerName ?? consumerNameOf(options.stream.namespace ?? NAMESPACE_DEFAULT, CONSUMER_ROLE),
    batchMax: INTAKE_BATCH_MAX,
    ackPendingMax: INTAKE_ACK_PENDING_MAX,
    ackWaitMs: INTAKE_ACK_WAIT_MS,
    nakDelayMs: INTAKE_NAK_DELAY_MS,
    retryDelayMsMax: RETRY_DELAY_MS_MAX,
    onStored: (added) => sender.deliveriesAdded(added),
  });
  let pruner: NodeJS.Timeout | null = null;
  let pruning = false;

  async function prune(): Promise<void> {
    // A prune that outlasts the interval (a large backlog) is not joined by a second one.
    if (pruning) return;
    pruning = true;
    try {
      while ((await pruneOld(pool, settings.retentionHours, PRUNE_BATCH_MAX)).deliveries >= PRUNE_BATCH_MAX) {
        // A full batch: there may be more.
      }
    } catch (err) {
      logger.warn({ err }, "webhooks: pruning old deliveries failed; trying again later");
    } finally {
      pruning = false;
    }
  }

  return {
    start(): void {
      sender.start();
      intake.start();
      pruner ??= setInterval(() => void prune(), PRUNE_INTERVAL_MS);
      pruner.unref();
    },
    totals: (): { intake: IntakeTotals; sender: SenderTotals } => ({ intake: intake.totals(), sender: sender.totals() }),
    /** Resolves once the intake's consumer is subscribed the first time. */
    ready: intake.ready,
    /**
     * Resolves with the reason when the intake stopped for good: the stream or its consumer
     * belongs to another deployment (docs/events.md, "Namespaces"). The process should exit.
     */
    fatal: intake.fatal,
    /** The intake consumer's backlog in JetStream; null while NATS is away. */
    backlog: (): Promise<IntakeBacklog | null> => intake.backlog(),
    /** Stops taking events, lets attempts in flight finish (each within the request timeout). */
    async stop(): Promise<void> {
      if (pruner !== null) clearInterval(pruner);
      await intake.stop();
      await sender.stop();
      poster.close();
    },
  };
}

export type WebhookWorker = ReturnType<typeof createWebhookWorker>;
