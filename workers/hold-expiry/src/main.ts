import { systemClock } from "@holdfast/common/ids";
import { createLogger } from "@holdfast/common/logger";
import { counterOf, createMetricsRegistry, gaugeOf, serveMetricsPort } from "@holdfast/common/metrics";
import { createPool } from "@holdfast/common/pg";
import { loadConfigOrExit, logPeriodically, stopOnSignals } from "@holdfast/common/process";
import { loadHoldExpiryConfig } from "./config.js";
import { createHoldExpirer } from "./expirer.js";
import { createOutboxNotifier } from "@holdfast/common/outbox-wake";

/** The hold-expiry worker process: expire due holds until SIGTERM or SIGINT. */
const WALLETS_PER_PASS_MAX = 100;
/**
 * The longest sleep between idle passes: the worker sleeps until the next hold or grant falls
 * due, but at most this long, which bounds how late a hold created meanwhile is expired.
 */
const IDLE_MS = 1000;
/** The shortest: how soon it looks again at something due that a pass had to skip (busy wallet). */
const IDLE_MS_MIN = 50;
/** Shortest time between two wakes of the outbox relay (a NOTIFY) after passes that expired something. */
const OUTBOX_NOTIFY_GAP_MS = 5;
const RETRY_DELAY_MS_MAX = 5000;
const TOTALS_LOG_INTERVAL_MS = 60_000;
const MS_PER_SECOND = 1000;

const config = loadConfigOrExit(loadHoldExpiryConfig);
const logger = createLogger("hold-expiry", config.logLevel);
const pool = createPool(config, logger, { applicationName: "holdfast-hold-expiry" });
// The events of expired holds and grants go out at once: the ledger's relay is woken by NOTIFY.
const notifier = createOutboxNotifier(pool, { gapMs: OUTBOX_NOTIFY_GAP_MS, logger });
const expirer = createHoldExpirer({
  pool,
  clock: systemClock,
  logger,
  walletsPerPassMax: WALLETS_PER_PASS_MAX,
  idleMs: IDLE_MS,
  idleMsMin: IDLE_MS_MIN,
  onExpired: notifier.notify,
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
  notifier.close();
  metricsServer?.close();
  await pool.end();
});
