// The ledger process of `npm run bench:soak`: services/ledger's own app (startLedgerApp), configured
// by the ledger's environment like services/ledger/dist/main.js, except that the idempotency and
// event retention periods are SOAK_RETENTION_SECONDS, far below what the settings accept
// (HOLDFAST_IDEMPOTENCY_RETENTION_HOURS is at least 24), so that a soak of minutes shows whether
// retention keeps up with the write rate.
//
//   SOAK_RETENTION_SECONDS=60 DATABASE_URL=... NATS_URL=... node bench/dist/soak-ledger-main.js
import { createLogger } from "@holdfast/common/logger";
import { loadConfigOrExit, stopOnSignals } from "@holdfast/common/process";
import { startLedgerApp } from "@holdfast/ledger/app";
import { loadLedgerConfig } from "@holdfast/ledger/config";

const retentionSeconds = Number(process.env["SOAK_RETENTION_SECONDS"] ?? "60");
if (!Number.isInteger(retentionSeconds) || retentionSeconds < 1) {
  throw new Error(`SOAK_RETENTION_SECONDS must be a whole number of seconds, at least 1, not ${JSON.stringify(process.env["SOAK_RETENTION_SECONDS"])}`);
}
const config = loadConfigOrExit(loadLedgerConfig);
const logger = createLogger("ledger", config.logLevel);
const retentionHours = retentionSeconds / 3600;
const app = await startLedgerApp({
  config: { ...config, idempotencyRetentionHours: retentionHours, eventRetentionHours: retentionHours },
  logger,
  migrate: false,
});
stopOnSignals(logger, () => app.stop());
