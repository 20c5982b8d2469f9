import { exitOnDeploymentConflict } from "@holdfast/common/deployment";
import { createLogger } from "@holdfast/common/logger";
import { createMetricsRegistry, serveMetricsPort } from "@holdfast/common/metrics";
import { DeploymentConflictError, streamSettingsOf } from "@holdfast/common/nats";
import { createPool } from "@holdfast/common/pg";
import { exitOnConfigError, loadConfigOrExit, stopOnSignals } from "@holdfast/common/process";
import { BillingConfigError, checkSinkTenants, loadBillingConfig } from "@holdfast/billing-core/config";
import { loadBillingStreamConfig } from "./config.js";
import { registerBillingMetrics } from "./metrics.js";
import { createBillingWorker } from "./worker.js";

/** The billing-stream worker process: stream usage to billing engines until SIGTERM or SIGINT. */
const STATUS_LOG_MS = 30_000;

const config = loadConfigOrExit(loadBillingStreamConfig);
const logger = createLogger("billing-stream", config.logLevel);
// The sink file is configuration too: a bad one is refused like a bad variable.
const billing = await loadBillingConfig(config.billingConfigPath).catch(exitOnConfigError);
const pool = createPool(config, logger, { applicationName: "holdfast-billing-stream" });
// With several tenants, a sink must say whose usage it bills (docs/billing-engines.md).
await checkSinkTenants(billing, pool).catch((err: unknown) => (err instanceof BillingConfigError ? exitOnConfigError(err) : Promise.reject(err)));
const worker = createBillingWorker({
  config: billing,
  pool,
  natsUrl: config.natsUrl,
  natsTls: config.natsTls,
  stream: streamSettingsOf(config),
  logger,
  statusLogMs: STATUS_LOG_MS,
});
const registry = createMetricsRegistry({ defaultMetrics: true });
registerBillingMetrics(registry, worker);
// HOLDFAST_METRICS_PORT, as on every worker; the sink file's metrics_port is the older name of it.
const metricsPort = config.metricsPort ?? billing.metricsPort;
const metricsServer =
  metricsPort === null
    ? null
    : await serveMetricsPort({ port: metricsPort, host: config.host, registry, token: null, logger, healthy: worker.healthy });

async function stop(): Promise<void> {
  await worker.stop();
  metricsServer?.close();
  await pool.end();
}
await worker.start().catch((err: unknown) => {
  if (err instanceof DeploymentConflictError) return exitOnDeploymentConflict(logger, err, stop);
  throw err;
});
void worker.fatal.then((err) => exitOnDeploymentConflict(logger, err, stop));
stopOnSignals(logger, stop);
