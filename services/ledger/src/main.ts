import { loadConfig } from "../../common/src/config.js";
import { createLogger } from "../../common/src/logger.js";
import { startLedgerApp } from "./app.js";

/** The ledger process: serve until SIGTERM or SIGINT, then drain and exit. */
const config = loadConfig();
const logger = createLogger("ledger", config.logLevel);
const app = await startLedgerApp({ config, logger });
logger.info({ url: app.url }, "holdfast ledger serving gRPC, gRPC-Web and Connect");

let stopping = false;
for (const signal of ["SIGTERM", "SIGINT"] as const) {
  process.on(signal, () => {
    if (stopping) {
      return;
    }
    stopping = true;
    logger.info({ signal }, "draining");
    app.stop().then(
      () => process.exit(0),
      (err: unknown) => {
        logger.error({ err }, "drain failed");
        process.exit(1);
      },
    );
  });
}
