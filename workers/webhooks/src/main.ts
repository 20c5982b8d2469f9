import { createLogger } from "@holdfast/common/logger";
import { streamSettingsOf } from "@holdfast/common/nats";
import { createPool } from "@holdfast/common/pg";
import { loadConfigOrExit, stopOnSignals } from "@holdfast/common/process";
import { createWebhookWorker } from "./worker.js";

/** The webhook worker process: deliver webhooks until SIGTERM or SIGINT, then drain and exit. */
const totals_log_interval_ms = 60_000;

const config = loadConfigOrExit();
const logger = createLogger("webhooks", config.logLevel);
const pool = createPool(config, logger, { applicationName: "holdfast-webhooks" });
const worker = createWebhookWorker({ pool, logger, natsUrl: config.natsUrl, stream: streamSettingsOf(config), settings: config });
worker.start();
logger.info(
  {
    concurrency: config.webhookConcurrency,
    endpointConcurrency: config.webhookEndpointConcurrency,
    timeoutMs: config.webhookTimeoutMs,
    retryScheduleMs: config.webhookRetryScheduleMs,
  },
  "webhook worker running",
);

const summary = setInterval(() => logger.info(worker.totals(), "webhook totals"), totals_log_interval_ms);
summary.unref();

stopOnSignals(logger, async () => {
  await worker.stop();
  await pool.end();
});
