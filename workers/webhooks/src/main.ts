import { exitOnDeploymentConflict } from "@holdfast/common/deployment";
import { createLogger } from "@holdfast/common/logger";
import { createMetricsRegistry, serveMetricsPort } from "@holdfast/common/metrics";
import { streamSettingsOf } from "@holdfast/common/nats";
import { createPool } from "@holdfast/common/pg";
import { loadConfigOrExit, logPeriodically, stopOnSignals } from "@holdfast/common/process";
import { loadWebhookWorkerConfig } from "./config.js";
import { registerWebhookMetrics } from "./metrics.js";
import { createWebhookWorker } from "./worker.js";

/** The webhook worker process: deliver webhooks until SIGTERM or SIGINT, then drain and exit. */
const TOTALS_LOG_INTERVAL_MS = 60_000;

const config = loadConfigOrExit(loadWebhookWorkerConfig);
const logger = createLogger("webhooks", config.logLevel);
const pool = createPool(config, logger, { applicationName: "holdfast-webhooks" });
const worker = createWebhookWorker({ pool, logger, natsUrl: config.natsUrl, natsTls: config.natsTls, stream: streamSettingsOf(config), settings: config.webhooks });
const registry = createMetricsRegistry({ defaultMetrics: true });
registerWebhookMetrics(registry, worker, pool);
const metricsServer =
  config.metricsPort === null ? null : await serveMetricsPort({ port: config.metricsPort, host: config.host, registry, token: null, logger });
worker.start();
const { concurrency, endpointConcurrency, timeoutMs, retryScheduleMs } = config.webhooks;
logger.info({ concurrency, endpointConcurrency, timeoutMs, retryScheduleMs, namespace: config.namespace }, "webhook worker running");
logPeriodically(logger, TOTALS_LOG_INTERVAL_MS, "webhook totals", worker.totals);

async function stop(): Promise<void> {
  await worker.stop();
  metricsServer?.close();
  await pool.end();
}
void worker.fatal.then((err) => exitOnDeploymentConflict(logger, err, stop));
stopOnSignals(logger, stop);
