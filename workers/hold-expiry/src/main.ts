import { systemClock } from "@holdfast/common/ids";
import { createLogger } from "@holdfast/common/logger";
import { createPool } from "@holdfast/common/pg";
import { loadConfigOrExit, logPeriodically, stopOnSignals } from "@holdfast/common/process";
import { loadHoldExpiryConfig } from "./config.js";
import { createHoldExpirer } from "./expirer.js";

/** The hold-expiry worker process: expire due holds until SIGTERM or SIGINT. */
const WALLETS_PER_PASS_MAX = 100;
const IDLE_MS = 250;
const RETRY_DELAY_MS_MAX = 5000;
const TOTALS_LOG_INTERVAL_MS = 60_000;

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
expirer.start();
logger.info("hold-expiry worker running");
logPeriodically(logger, TOTALS_LOG_INTERVAL_MS, "hold expiry totals", expirer.totals);

stopOnSignals(logger, async () => {
  await expirer.stop();
  await pool.end();
});
