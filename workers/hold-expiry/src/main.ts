import { systemClock } from "@holdfast/common/ids";
import { createLogger } from "@holdfast/common/logger";
import { createPool } from "@holdfast/common/pg";
import { loadConfigOrExit, stopOnSignals } from "@holdfast/common/process";
import { createHoldExpirer } from "./expirer.js";

/** The hold-expiry worker process: expire due holds until SIGTERM or SIGINT. */
const wallets_per_pass_max = 100;
const idle_ms = 250;
const retry_delay_ms_max = 5000;

const config = loadConfigOrExit();
const logger = createLogger("hold-expiry", config.logLevel);
const pool = createPool(config, logger, { applicationName: "holdfast-hold-expiry" });
const expirer = createHoldExpirer({
  pool,
  clock: systemClock,
  logger,
  walletsPerPassMax: wallets_per_pass_max,
  idleMs: idle_ms,
  retryDelayMsMax: retry_delay_ms_max,
});
expirer.start();
logger.info("hold-expiry worker running");

const summary = setInterval(() => logger.info(expirer.totals(), "hold expiry totals"), 60_000);
summary.unref();

stopOnSignals(logger, async () => {
  await expirer.stop();
  await pool.end();
});
