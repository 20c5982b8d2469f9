// The "empty RPC" baseline's process: the ledger's RPC server with the ledger's own auth and
// interceptors, whose Reserve, Capture and Spend return a constant response without touching the
// ledger core or the database: what one call costs before any ledger work, to set the hot
// wallet's rate through the service against.
//
//   node bench/dist/empty-rpc-main.js   (configured by the ledger's environment: DATABASE_URL,
//                                        HOLDFAST_PORT, HOLDFAST_HOST, HOLDFAST_RATE_LIMIT_*, …)
//
// Built from what the ledger package exports, as services/ledger/src/app.ts builds the real one:
// createServer with the ledger's limits, createInterceptors (errors, then auth with the rate
// limiter) over the ledger's key verifier (the benchmark's writer key, cached as in the ledger),
// and the server's RPC metrics. What the real process has besides: every other service, the key
// check before the body is read (here the auth interceptor makes the same verifier call), the
// command metrics interceptor (not exported), the outbox relay, the retention sweeper and the
// WatchWallet feed.
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { createLogger } from "@holdfast/common/logger";
import { createMetricsRegistry } from "@holdfast/common/metrics";
import { createPool } from "@holdfast/common/pg";
import { loadConfigOrExit, stopOnSignals } from "@holdfast/common/process";
import { createServer } from "@holdfast/common/server";
import { CaptureResponseSchema, LedgerService, ReserveResponseSchema, SpendResponseSchema } from "@holdfast/gen/holdfast/v1/ledger_pb";
import { HoldStatus, TransferKind } from "@holdfast/gen/holdfast/v1/types_pb";
import { createKeyVerifier } from "@holdfast/ledger/auth/api-keys";
import { loadLedgerConfig } from "@holdfast/ledger/config";
import { createInterceptors } from "@holdfast/ledger/rpc";
import { createRateLimiter } from "@holdfast/ledger/rpc/rate-limit";

/** The ledger's bounds of the same name (app.ts). */
const AUTH_CACHE_ENTRIES_MAX = 10_000;
const RATE_LIMIT_BUCKETS_MAX = 100_000;

/** Responses shaped like the ledger's answers to the hot workload (one hot wallet), built once. */
const NOW = timestampFromDate(new Date());
const BALANCE = { asset: "USD", posted: 999_999_999_000n, held: 10n, available: 999_999_998_990n, creditLimit: 0n, scheduled: 0n };
const TRANSFER = {
  transferId: "0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",
  debitWalletId: "hot",
  creditWalletId: "@revenue",
  asset: "USD",
  amount: 5n,
  createdAt: NOW,
  grants: [{ grantId: "default_USD", amount: 5n }],
};
const HOLD = {
  holdId: "h_0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",
  walletId: "hot",
  asset: "USD",
  amount: 10n,
  status: HoldStatus.PENDING,
  createdAt: NOW,
  expiresAt: NOW,
  reserveTransferId: TRANSFER.transferId,
  allocations: [{ grantId: "default_USD", amount: 10n }],
};
const RESERVE = create(ReserveResponseSchema, { hold: HOLD, balance: BALANCE });
const CAPTURE = create(CaptureResponseSchema, {
  transfer: { ...TRANSFER, kind: TransferKind.CAPTURE, amount: 7n, holdId: HOLD.holdId },
  hold: { ...HOLD, capturedAmount: 7n, status: HoldStatus.CAPTURED, closedAt: NOW },
  balance: BALANCE,
});
const SPEND = create(SpendResponseSchema, { transfer: { ...TRANSFER, kind: TransferKind.SPEND }, balance: BALANCE });

const config = loadConfigOrExit(loadLedgerConfig);
const logger = createLogger("empty-rpc", config.logLevel);
const pool = createPool(config, logger, { applicationName: "holdfast-bench-empty-rpc" });
const verifier = createKeyVerifier(pool, { cacheMs: config.authCacheMs, maxEntries: AUTH_CACHE_ENTRIES_MAX });
let serving = true;
const server = createServer({
  routes: (router) => {
    router.service(LedgerService, { reserve: () => RESERVE, capture: () => CAPTURE, spend: () => SPEND });
  },
  interceptors: createInterceptors(verifier, logger, {
    authCacheMs: config.authCacheMs,
    limiter: createRateLimiter({
      key: config.rateLimitKey,
      tenant: config.rateLimitTenant,
      tenantStreamsMax: config.tenantStreamsMax,
      bucketsMax: RATE_LIMIT_BUCKETS_MAX,
    }),
  }),
  host: config.host,
  port: config.port,
  corsOrigins: [...config.corsOrigins],
  readMaxBytes: config.readMaxBytes,
  maxTimeoutMs: config.maxTimeoutMs,
  defaultTimeoutMs: config.defaultTimeoutMs,
  maxInFlight: config.maxInFlight,
  drainTimeoutMs: config.drainTimeoutMs,
  ...config.serverLimits,
  tls: config.tls,
  metrics: { registry: createMetricsRegistry({ defaultMetrics: true }), token: config.metricsToken },
  logger,
  readiness: async () => ({ ready: serving, detail: {} }),
});
await server.listen();
stopOnSignals(logger, async () => {
  serving = false;
  await server.drain();
  await verifier.close();
  await pool.end();
});
