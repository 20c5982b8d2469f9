import { createLogger } from "@holdfast/common/logger";
import { streamSettingsOf } from "@holdfast/common/nats";
import { createPool } from "@holdfast/common/pg";
import { loadConfigOrExit, logPeriodically, stopOnSignals } from "@holdfast/common/process";
import { loadWebhookWorkerConfig } from "./config.js";
import { createWebhookWorker } from "./worker.js";

/** The webhook worker process: deliver webhooks until SIGTERM or SIGINT, then drain and exit. */
const TOTALS_LOG_INTERVAL_MS = 60_000;

const config = loadConfigOrExit(loadWebhookWorkerConfig);
const logger = createLogger("webhooks", config.logLevel);
const pool = createPool(config, logger, { applicationName: "holdfast-webhooks" });
const worker = createWebhookWorker({ pool, logger, natsUrl: config.natsUrl, stream: streamSettingsOf(config), settings: config.webhooks });
worker.start();
const { concurrency, endpointConcurrency, timeoutMs, retryScheduleMs } = config.webhooks;
logger.info({ concurrency, endpointConcurrency, timeoutMs, retryScheduleMs }, "webhook worker running");
logPeriodically(logger, TOTALS_LOG_INTERVAL_MS, "webhook totals", worker.totals);

stopOnSignals(logger, async () => {
  await worker.stop();
  await pool.end();
});
