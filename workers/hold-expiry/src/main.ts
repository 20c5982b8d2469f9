import { systemClock } from "@holdfast/common/ids";
import { createLogger } from "@holdfast/common/logger";
import { counterOf, createMetricsRegistry, gaugeOf, serveMetricsPort } from "@holdfast/common/metrics";
import { createPool } from "@holdfast/common/pg";
import { loadConfigOrExit, logPeriodically, stopOnSignals } from "@holdfast/common/process";
import { loadHoldExpiryConfig } from "./config.js";
import { createHoldExpirer } from "./expirer.js";

/** The hold-expiry worker process: expire due holds until SIGTERM or SIGINT. */
const WALLETS_PER_PASS_MAX = 100;
const IDLE_MS = 250;
const RETRY_DELAY_MS_MAX = 5000;
const TOTALS_LOG_INTERVAL_MS = 60_000;
const MS_PER_SECOND = 1000;

const config = loadConfigOrExit(loadHoldExpiryConfig);
const logger = createLogger("hold-expiry", config.logLevel);
const pool = createPool(config, logger, { applicationName: "holdfast-hold-expiry" });
const expirer = createHoldExpirer({
  pool,
  clock: systemClock,
  logger,
  walletsPerPassMax: WALLETS_PER_PASS_MAX,
  idleMs: IDLE_MS,
  retryDelayMsMax: RETRY_DELAY_MS_MAX,
});
const registry = createMetricsRegistry({ defaultMetrics: true });
counterOf(registry, "holdfast_holds_expired_total", "Holds this process expired (their funds returned)", () => expirer.totals().expired);
counterOf(registry, "holdfast_hold_expiry_passes_total", "Expiry passes run by this process", () => expirer.totals().passes);
counterOf(registry, "holdfast_grants_expired_total", "Expired grants this process broke (their unheld remainder posted to @breakage)", () =>
  expirer.totals().grantsExpired,
);
gaugeOf(registry, "holdfast_hold_expiry_lag_seconds_max", "Longest a hold stayed pending past its expiry before a pass expired it, since start", () =>
  expirer.totals().lagMsMax / MS_PER_SECOND,
);
const metricsServer =
  config.metricsPort === null ? null : await serveMetricsPort({ port: config.metricsPort, host: config.host, registry, token: null, logger });
expirer.start();
logger.info("hold-expiry worker running");
logPeriodically(logger, TOTALS_LOG_INTERVAL_MS, "hold expiry totals", expirer.totals);

stopOnSignals(logger, async () => {
  await expirer.stop();
  metricsServer?.close();
  await pool.end();
});
