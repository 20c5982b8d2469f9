import { exitOnDeploymentConflict } from "@holdfast/common/deployment";
import { createLogger } from "@holdfast/common/logger";
import { createMetricsRegistry } from "@holdfast/common/metrics";
import { DeploymentConflictError } from "@holdfast/common/nats";
import { loadConfigOrExit, stopOnSignals } from "@holdfast/common/process";
import { startLedgerApp } from "./app.js";
import { loadLedgerConfig } from "./config.js";

/** The ledger process: serve until SIGTERM or SIGINT, then drain and exit. */
const config = loadConfigOrExit(loadLedgerConfig);
const logger = createLogger("ledger", config.logLevel);
const metricsRegistry = createMetricsRegistry({ defaultMetrics: true });
const app = await startLedgerApp({ config, logger, metricsRegistry }).catch((err: unknown) => {
  if (err instanceof DeploymentConflictError) return exitOnDeploymentConflict(logger, err);
  throw err;
});
logger.info({ url: app.url }, "holdfast ledger serving gRPC, gRPC-Web and Connect");
void app.fatal.then((err) => exitOnDeploymentConflict(logger, err, () => app.stop()));

stopOnSignals(logger, () => app.stop());
