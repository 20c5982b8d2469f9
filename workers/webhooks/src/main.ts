import { loadConfig } from "../../../services/common/src/config.js";
import { createLogger } from "../../../services/common/src/logger.js";
import { createPool } from "../../../services/common/src/pg.js";
import { createWebhookWorker } from "./worker.js";

/** The webhook worker process: deliver webhooks until SIGTERM or SIGINT, then drain and exit. */
const totals_log_interval_ms = 60_000;

const config = loadConfig();
const logger = createLogger("webhooks", config.logLevel);
const pool = createPool(config, logger, { applicationName: "holdfast-webhooks" });
const worker = createWebhookWorker({
  pool,
  logger,
  natsUrl: config.natsUrl,
  stream: {
    name: config.streamName,
    maxAgeMs: config.streamMaxAgeHours * 3_600_000,
    duplicateWindowMs: config.streamDuplicateWindowSeconds * 1000,
    replicas: config.streamReplicas,
  },
  settings: config,
});
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

let stopping = false;
for (const signal of ["SIGTERM", "SIGINT"] as const) {
  process.on(signal, () => {
    if (stopping) {
      return;
    }
    stopping = true;
    logger.info({ signal }, "stopping");
    worker
      .stop()
      .then(() => pool.end())
      .then(
        () => process.exit(0),
        (err: unknown) => {
          logger.error({ err }, "stopping failed");
          process.exit(1);
        },
      );
  });
}
