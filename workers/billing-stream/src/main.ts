import { createLogger } from "@holdfast/common/logger";
import { streamSettingsOf } from "@holdfast/common/nats";
import { createPool } from "@holdfast/common/pg";
import { exitOnConfigError, loadConfigOrExit, stopOnSignals } from "@holdfast/common/process";
import { loadBillingConfig, loadBillingWorkerConfig } from "@holdfast/billing-core/config";
import { serveMetrics } from "@holdfast/billing-core/metrics";
import { createBillingWorker } from "./worker.js";

/** The billing-stream worker process: stream usage to billing engines until SIGTERM or SIGINT. */
const STATUS_LOG_MS = 30_000;

const config = loadConfigOrExit(loadBillingWorkerConfig);
const logger = createLogger("billing-stream", config.logLevel);
// The sink file is configuration too: a bad one is refused like a bad variable.
const billing = await loadBillingConfig(config.billingConfigPath).catch(exitOnConfigError);
const pool = createPool(config, logger, { applicationName: "holdfast-billing-stream" });
const worker = createBillingWorker({
  config: billing,
  pool,
  natsUrl: config.natsUrl,
  stream: streamSettingsOf(config),
  logger,
  statusLogMs: STATUS_LOG_MS,
});
const metricsServer =
  billing.metricsPort === null ? null : await serveMetrics(billing.metricsPort, config.host, worker.metrics, worker.healthy);
await worker.start();

stopOnSignals(logger, async () => {
  await worker.stop();
  metricsServer?.close();
  await pool.end();
});
