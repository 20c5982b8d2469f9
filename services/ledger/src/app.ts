import type pg from "pg";
import type { Logger } from "pino";
import type { Config } from "@holdfast/common/config";
import { systemClock, uuidV7, type Clock, type IdGenerator } from "@holdfast/common/ids";
import { streamSettingsOf } from "@holdfast/common/nats";
import { createPool } from "@holdfast/common/pg";
import { createServer } from "@holdfast/common/server";
import { createKeyVerifier } from "./auth/api-keys.js";
import { createLedger, type Ledger } from "./domain/ledger.js";
import { migrate } from "@holdfast/db/migrate";
import { createOutboxRelay, type OutboxRelay } from "./relay/outbox-relay.js";
import { startRetention } from "./retention.js";
import { createInterceptors, createRoutes } from "./rpc/routes.js";
import { createWalletFeed } from "./watch.js";

/** Bounds of the WatchWallet feed. */
const watch_poll_interval_ms = 200;
const watch_watchers_max = 1000;
const watch_batch_max = 100;
/** Entries in the API key cache. */
const auth_cache_entries_max = 10_000;
/** Outbox relay bounds; see createOutboxRelay. */
const relay_batch_max = 256;
const relay_idle_ms = 20;
const relay_standby_poll_ms = 1000;
const relay_retry_delay_ms_max = 5000;
const relay_publish_timeout_ms = 5000;
const relay_status_log_ms = 30_000;

export interface LedgerAppOptions {
  config: Config;
  logger: Logger;
  /** Defaults to the system clock; tests pass a manual one. */
  clock?: Clock;
  newId?: IdGenerator;
  /** Run migrations before serving (on by default; safe with several replicas). */
  migrate?: boolean;
  /** Run the outbox relay (on by default). */
  relay?: boolean;
}

export interface LedgerApp {
  address: { host: string; port: number };
  url: string;
  pool: pg.Pool;
  ledger: Ledger;
  relay: OutboxRelay | null;
  /** Drains in-flight calls, then closes the server and the pool. */
  stop(): Promise<void>;
}

/**
 * Builds and starts the ledger process: pool, migrations, ledger core, RPC server and the
 * retention sweeper. main.ts calls it with the environment's config; tests call it with a
 * fresh database, port 0 and a manual clock.
 */
export async function startLedgerApp(options: LedgerAppOptions): Promise<LedgerApp> {
  const { config, logger } = options;
  const clock = options.clock ?? systemClock;
  const pool = createPool(config, logger, { applicationName: "holdfast-ledger" });
  if (options.migrate ?? true) {
    await migrate(pool, logger);
  }
  const ledger = createLedger({
    pool,
    clock,
    newId: options.newId ?? uuidV7,
    groupCommit: config.groupCommit ? { batchMax: config.groupCommitBatchMax, queueMax: config.groupCommitQueueMax } : null,
  });
  const feed = createWalletFeed({
    pool,
    pollIntervalMs: watch_poll_interval_ms,
    watchersMax: watch_watchers_max,
    batchMax: watch_batch_max,
  });
  const relay =
    options.relay === false
      ? null
      : createOutboxRelay({
          pool,
          logger: logger.child({ component: "relay" }),
          natsUrl: config.natsUrl,
          stream: streamSettingsOf(config),
          batchMax: relay_batch_max,
          idleMs: relay_idle_ms,
          standbyPollMs: relay_standby_poll_ms,
          retryDelayMsMax: relay_retry_delay_ms_max,
          publishTimeoutMs: relay_publish_timeout_ms,
          statusLogMs: relay_status_log_ms,
        });
  const verifier = createKeyVerifier(pool, { cacheMs: config.authCacheMs, maxEntries: auth_cache_entries_max });
  let serving = true;
  const server = createServer({
    routes: createRoutes({
      ledger,
      pool,
      feed,
      defaultHoldTtlSeconds: config.defaultHoldTtlSeconds,
      webhooks: { allowedNetworks: config.webhookAllowedNetworks, secretOverlapSeconds: config.webhookSecretOverlapSeconds },
      isServing: () => serving,
    }),
    interceptors: createInterceptors(verifier, logger),
    host: config.host,
    port: config.port,
    corsOrigins: [...config.corsOrigins],
    readMaxBytes: config.readMaxBytes,
    maxTimeoutMs: config.maxTimeoutMs,
    defaultTimeoutMs: config.defaultTimeoutMs,
    maxInFlight: config.maxInFlight,
    drainTimeoutMs: config.drainTimeoutMs,
    logger,
    readiness: () => readiness(pool, relay),
  });
  const address = await server.listen();
  relay?.start();
  const retention = startRetention({ pool, logger, retentionHours: config.idempotencyRetentionHours });
  return {
    address,
    url: `http://${address.host.includes(":") ? `[${address.host}]` : address.host}:${address.port}`,
    pool,
    ledger,
    relay,
    async stop() {
      serving = false;
      retention.stop();
      await server.drain();
      await relay?.stop();
      await pool.end();
    },
  };
}

/**
 * Ready when the database answers. NATS is reported (relay role, backlog, publish lag) but
 * never makes the ledger unready: commands do not need it.
 */
async function readiness(pool: pg.Pool, relay: OutboxRelay | null): Promise<{ ready: boolean; detail: Record<string, unknown> }> {
  try {
    const outbox = relay ? await relay.refreshStatus() : "disabled";
    return { ready: true, detail: { database: "ok", outbox } };
  } catch {
    return { ready: false, detail: { database: "unreachable" } };
  }
}
