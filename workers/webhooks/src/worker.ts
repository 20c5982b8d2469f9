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
import type { Config } from "@holdfast/common/config";
import { uuidV7, type IdGenerator } from "@holdfast/common/ids";
import type { StreamSettings } from "@holdfast/common/nats";
import { createUrlPolicy } from "@holdfast/webhooks-core/url-policy";
import { pruneOld } from "./deliveries.js";
import { createHttpPoster } from "./http-post.js";
import { createIntake, type IntakeTotals } from "./intake.js";
import { createSender, type SenderTotals } from "./sender.js";

/** The part of Config the worker reads. */
export type WebhookSettings = Pick<
  Config,
  | "webhookAllowedNetworks"
  | "webhookRetryScheduleMs"
  | "webhookTimeoutMs"
  | "webhookConcurrency"
  | "webhookEndpointConcurrency"
  | "webhookDisableAfterSeconds"
  | "webhookRetentionHours"
>;

export interface WebhookWorkerOptions {
  readonly pool: pg.Pool;
  readonly logger: Logger;
  readonly natsUrl: string;
  readonly stream: Omit<StreamSettings, "subjects">;
  readonly settings: WebhookSettings;
  readonly newId?: IdGenerator;
  /** The durable consumer's name; every replica of one deployment must use the same. */
  readonly consumerName?: string;
  readonly pollIdleMs?: number;
}

/** The durable consumer every replica shares. */
export const default_consumer_name = "holdfast-webhooks";
/**
 * A claim's lease: twice the request timeout plus this. The attempt itself takes at most one
 * timeout; the second covers recording the outcome and clock skew between replicas. An attempt
 * cut short by a crash is retried once the lease runs out.
 */
const lease_slack_ms = 1000;
/** Pause between claims when nothing is due; new events and finished attempts wake it sooner. */
const poll_idle_ms = 100;
const claim_endpoints_max = 256;
const intake_batch_max = 256;
/** Must exceed intake_batch_max, or one worker could starve the others of messages. */
const intake_ack_pending_max = 4096;
/**
 * Storing a batch is one statement (bounded by the statement timeout, 5 s by default), so a
 * message unacknowledged for this long belongs to a worker that died: hand it to another. A
 * slow database that overruns it costs only a redelivery, which adds nothing.
 */
const intake_ack_wait_ms = 10_000;
const intake_nak_delay_ms = 1000;
const retry_delay_ms_max = 5000;
const response_bytes_max = 4096;
const prune_interval_ms = 60_000;
const prune_batch_max = 1000;
const user_agent = "Holdfast-Webhooks/0.1 (+https://www.standardwebhooks.com)";

export function createWebhookWorker(options: WebhookWorkerOptions) {
  const { pool, logger, settings } = options;
  const newId = options.newId ?? uuidV7;
  const poster = createHttpPoster({
    policy: createUrlPolicy(settings.webhookAllowedNetworks),
    timeoutMs: settings.webhookTimeoutMs,
    socketsMax: settings.webhookConcurrency,
    responseBytesMax: response_bytes_max,
    userAgent: user_agent,
  });
  const sender = createSender({
    pool,
    logger,
    poster,
    newId,
    concurrency: settings.webhookConcurrency,
    endpointConcurrency: settings.webhookEndpointConcurrency,
    retryScheduleMs: settings.webhookRetryScheduleMs,
    disableAfterSeconds: settings.webhookDisableAfterSeconds,
    leaseMs: 2 * settings.webhookTimeoutMs + lease_slack_ms,
    claimEndpointsMax: claim_endpoints_max,
    pollIdleMs: options.pollIdleMs ?? poll_idle_ms,
    retryDelayMsMax: retry_delay_ms_max,
  });
  const intake = createIntake({
    pool,
    logger,
    natsUrl: options.natsUrl,
    stream: options.stream,
    consumerName: options.consumerName ?? default_consumer_name,
    batchMax: intake_batch_max,
    ackPendingMax: intake_ack_pending_max,
    ackWaitMs: intake_ack_wait_ms,
    nakDelayMs: intake_nak_delay_ms,
    retryDelayMsMax: retry_delay_ms_max,
    onStored: () => sender.wake(),
  });
  let pruner: NodeJS.Timeout | null = null;

  async function prune(): Promise<void> {
    try {
      while ((await pruneOld(pool, settings.webhookRetentionHours, prune_batch_max)) >= prune_batch_max) {
        // A full batch: there may be more.
      }
    } catch (err) {
      logger.warn({ err }, "webhooks: pruning old deliveries failed; trying again later");
    }
  }

  return {
    start(): void {
      sender.start();
      intake.start();
      pruner ??= setInterval(() => void prune(), prune_interval_ms);
      pruner.unref();
    },
    totals: (): { intake: IntakeTotals; sender: SenderTotals } => ({ intake: intake.totals(), sender: sender.totals() }),
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
