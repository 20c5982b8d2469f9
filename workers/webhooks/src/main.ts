import { createLogger } from "../../../services/common/src/logger.js";
import { streamSettingsOf } from "../../../services/common/src/nats.js";
import { createPool } from "../../../services/common/src/pg.js";
import { loadConfigOrExit, stopOnSignals } from "../../../services/common/src/process.js";
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
