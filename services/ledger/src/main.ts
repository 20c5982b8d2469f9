import { createLogger } from "@holdfast/common/logger";
import { loadConfigOrExit, stopOnSignals } from "@holdfast/common/process";
import { startLedgerApp } from "./app.js";
import { loadLedgerConfig } from "./config.js";

/** The ledger process: serve until SIGTERM or SIGINT, then drain and exit. */
const config = loadConfigOrExit(loadLedgerConfig);
const logger = createLogger("ledger", config.logLevel);
const app = await startLedgerApp({ config, logger });
logger.info({ url: app.url }, "holdfast ledger serving gRPC, gRPC-Web and Connect");

stopOnSignals(logger, () => app.stop());
