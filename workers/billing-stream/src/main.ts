import { loadConfig } from "@holdfast/common/config";
import { createLogger } from "@holdfast/common/logger";
import { streamSettingsOf } from "@holdfast/common/nats";
import { createPool } from "@holdfast/common/pg";
import { loadBillingConfig } from "@holdfast/billing-core/config";
import { serveMetrics } from "@holdfast/billing-core/metrics";
import { createBillingWorker } from "./worker.js";

/** The billing-stream worker process: stream usage to billing engines until SIGTERM or SIGINT. */
const status_log_ms = 30_000;

const config = loadConfig();
const logger = createLogger("billing-stream", config.logLevel);
if (config.billingConfigPath === null) {
  logger.fatal("HOLDFAST_BILLING_CONFIG is not set: point it at the sink configuration (see docs/billing-engines.md)");
  process.exit(1);
}
const billing = await loadBillingConfig(config.billingConfigPath).catch((err: unknown) => {
  logger.fatal({ err }, "invalid billing configuration");
  process.exit(1);
});
const pool = createPool(config, logger, { applicationName: "holdfast-billing-stream" });
const worker = createBillingWorker({
  config: billing,
  pool,
  natsUrl: config.natsUrl,
  stream: streamSettingsOf(config),
  logger,
  statusLogMs: status_log_ms,
});
const metricsServer =
  billing.metricsPort === null ? null : await serveMetrics(billing.metricsPort, config.host, worker.metrics, worker.healthy);
await worker.start();

let stopping = false;
for (const signal of ["SIGTERM", "SIGINT"] as const) {
  process.on(signal, () => {
    if (stopping) {
      return;
    }
    stopping = true;
    logger.info({ signal }, "stopping");
    void worker
      .stop()
      .then(() => metricsServer?.close())
      .then(() => pool.end())
      .then(() => process.exit(0));
  });
}
