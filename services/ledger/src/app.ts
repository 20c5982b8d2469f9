import { fileURLToPath } from "node:url";
import type pg from "pg";
import type { Logger } from "pino";
import { systemClock, uuidV7, type Clock, type IdGenerator } from "@holdfast/common/ids";
import { createMetricsRegistry, type Registry } from "@holdfast/common/metrics";
import { streamSettingsOf } from "@holdfast/common/nats";
import { createPool } from "@holdfast/common/pg";
import { toConnectError } from "@holdfast/common/errors";
import { createServer, type Authenticate } from "@holdfast/common/server";
import { createStaticFiles } from "@holdfast/common/static-files";
import { createKeyVerifier } from "./auth/api-keys.js";
import { createLedger, type Ledger } from "./domain/ledger.js";
import { migrateIfPermitted } from "@holdfast/db/migrate";
import { commandMetricsInterceptor, registerLedgerMetrics } from "./metrics.js";
import { createOutboxRelay, type OutboxRelay } from "./relay/outbox-relay.js";
import type { LedgerConfig } from "./config.js";
import { startRetention } from "./retention.js";
import { createChainHeadPublisher, startChainCheckpoints } from "./chain-checkpoints.js";
import { authenticateBearer, PRINCIPAL_KEY, type KeyVerifier } from "./rpc/auth.js";
import { createRateLimiter } from "./rpc/rate-limit.js";
import { createInterceptors, createRoutes } from "./rpc/routes.js";
import { createWalletFeed } from "./watch.js";
import { commitWakeInterceptor, wakeAfterWrites } from "./rpc/commit-wake.js";
import { createOutboxNotifier } from "@holdfast/common/outbox-wake";

/** Bounds of the WatchWallet feed. */
const WATCH_POLL_INTERVAL_MS = 200;
/** Shortest time between two reads of the WatchWallet feed while this process keeps committing. */
const WATCH_WAKE_GAP_MS = 5;
const WATCH_WATCHERS_MAX = 1000;
const WATCH_BATCH_MAX = 100;
/** Entries in the API key cache. */
const AUTH_CACHE_ENTRIES_MAX = 10_000;
/** Rate-limit buckets kept of each kind (keys, tenants); idle full ones are dropped first. */
const RATE_LIMIT_BUCKETS_MAX = 100_000;
/** Outbox relay bounds; see createOutboxRelay. */
const RELAY_BATCH_MAX = 256;
/**
 * The relay's safety poll: commits wake it at once (in this process directly, elsewhere by
 * NOTIFY), so this only bounds how late an event is when a wake is lost, and idle costs one
 * short query per second.
 */
const RELAY_IDLE_MS = 1000;
/**
 * Shortest time between the starts of two batches when commits keep waking the relay: under load
 * the events of 20 ms go out as one batch (one read, one mark) instead of one batch per commit,
 * as many as the 20 ms poll gathered before wakes, and a lone command's event waits for nothing.
 */
const RELAY_WAKE_GAP_MS = 20;
/** Shortest time between two NOTIFYs this process sends to another process's relay. */
const OUTBOX_NOTIFY_GAP_MS = 5;
const RELAY_STANDBY_POLL_MS = 1000;
const RELAY_RETRY_DELAY_MS_MAX = 5000;
const RELAY_PUBLISH_TIMEOUT_MS = 5000;
const RELAY_STATUS_LOG_MS = 30_000;
/** The retention settings are in hours. */
const HOUR_MS = 3_600_000;
/**
 * The web console's build output (console/, `npm run build`), found from this file: src/ and
 * dist/ are both three folders below the repository root, as in the image.
 */
export const CONSOLE_DIRECTORY_DEFAULT = fileURLToPath(new URL("../../../console/dist", import.meta.url));

export interface LedgerAppOptions {
  config: LedgerConfig;
  logger: Logger;
  /** Defaults to the system clock; tests pass a manual one. */
  clock?: Clock;
  newId?: IdGenerator;
  /**
   * Run migrations before serving when the database role may (on by default; safe with several
   * replicas). The runtime role may not: it only checks that none is pending.
   */
  migrate?: boolean;
  /** Run the outbox relay (on by default). */
  relay?: boolean;
  /**
   * Where the ledger's metrics go (served on `/metrics`); main.ts passes one with the process
   * metrics, and without it the app makes its own (tests read it as `app.metrics`).
   */
  metricsRegistry?: Registry;
  /** The web console's built files, served at `/console` (docs/console.md); tests pass their own build. */
  consoleDirectory?: string;
}

export interface LedgerApp {
  address: { host: string; port: number };
  url: string;
  pool: pg.Pool;
  ledger: Ledger;
  relay: OutboxRelay | null;
  /** The registry `/metrics` serves. */
  metrics: Registry;
  /**
   * Resolves with the reason when the process must stop: the event stream turned out to belong
   * to another deployment (docs/events.md, "Namespaces"). Never resolves otherwise.
   */
  fatal: Promise<Error>;
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
    // Only a role that owns the schema migrates; the runtime role checks that none is pending.
    await migrateIfPermitted(pool, logger);
  }
  const core = createLedger({
    pool,
    clock,
    newId: options.newId ?? uuidV7,
    groupCommit: config.groupCommit ? { batchMax: config.groupCommitBatchMax, queueMax: config.groupCommitQueueMax } : null,
  });
  const feed = createWalletFeed({
    pool,
    pollIntervalMs: WATCH_POLL_INTERVAL_MS,
    wakeGapMs: WATCH_WAKE_GAP_MS,
    watchersMax: WATCH_WATCHERS_MAX,
    batchMax: WATCH_BATCH_MAX,
  });
  let onFatal: (err: Error) => void = () => undefined;
  const fatal = new Promise<Error>((resolve) => {
    onFatal = resolve;
  });
  const relay = options.relay === false ? null : createRelay(pool, config, logger, onFatal);
  // A ledger started into another deployment's namespace refuses to start (NATS being away
  // does not stop it: commands do not need NATS, and the relay checks when it connects).
  await relay?.verifyStream().catch(async (err: unknown) => {
    await relay.stop();
    await pool.end();
    throw err;
  });
  // After a write commits, its events go out at once: this process's relay when it is the
  // active one (free), else the active relay of another replica, woken by a NOTIFY; and the
  // WatchWallet feed reads at once when a watched wallet changed. The ledger's writes wake
  // whoever calls them; the interceptor covers the writes of the other services' handlers.
  const notifier = createOutboxNotifier(pool, { gapMs: OUTBOX_NOTIFY_GAP_MS, logger });
  const onCommit = (wallets: readonly string[] | null): void => {
    if (relay?.isActive()) relay.wake();
    else notifier.notify();
    feed.wake(wallets);
  };
  const ledger = wakeAfterWrites(core, onCommit);
  const commitWake = commitWakeInterceptor(onCommit);
  const metrics = options.metricsRegistry ?? createMetricsRegistry();
  registerLedgerMetrics(metrics, { ledger, relay, feed });
  const verifier = createKeyVerifier(pool, { cacheMs: config.authCacheMs, maxEntries: AUTH_CACHE_ENTRIES_MAX });
  let serving = true;
  const server = createServer({
    routes: createRoutes({
      ledger,
      pool,
      feed,
      defaultHoldTtlSeconds: config.defaultHoldTtlSeconds,
      webhooks: config.webhooks,
      isServing: () => serving,
      clock,
    }),
    interceptors: [commitWake, ...createInterceptors(verifier, logger, {
      authCacheMs: config.authCacheMs,
      limiter: createRateLimiter({
        key: config.rateLimitKey,
        tenant: config.rateLimitTenant,
        tenantStreamsMax: config.tenantStreamsMax,
        bucketsMax: RATE_LIMIT_BUCKETS_MAX,
      }),
    })],
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
    metrics: { registry: metrics, token: config.metricsToken, interceptors: [commandMetricsInterceptor(metrics)] },
    authenticate: authenticateBeforeBody(verifier, logger),
    staticFiles: createStaticFiles({ directory: options.consoleDirectory ?? CONSOLE_DIRECTORY_DEFAULT, prefix: "/console", hashedFolder: "assets", redirectRoot: true, notBuiltHint: "the console is not built: run npm run build", logger }),
    // Backlog and lag are for operators: loopback callers and admin keys.
    readinessDetailAllowed: async (authorization) =>
      (await authenticateBearer(verifier, authorization).catch(() => null))?.role === "admin",
    logger,
    readiness: () => readiness(pool, relay),
  });
  const address = await server.listen();
  relay?.start();
  const retention = startRetention({
    pool,
    logger,
    clock,
    idempotencyRetentionMs: config.idempotencyRetentionHours * HOUR_MS,
    eventRetentionMs: config.eventRetentionHours === 0 ? null : config.eventRetentionHours * HOUR_MS,
  });
  const chainHeads =
    relay === null ? null : createChainHeadPublisher({ natsUrl: config.natsUrl, natsTls: config.natsTls, namespace: config.namespace, logger });
  const checkpoints = startChainCheckpoints({ pool, logger, publish: chainHeads?.publish });
  return {
    address,
    url: `${config.tls ? "https" : "http"}://${address.host.includes(":") ? `[${address.host}]` : address.host}:${address.port}`,
    pool,
    ledger,
    relay,
    metrics,
    fatal,
    async stop() {
      serving = false;
      await retention.stop();
      checkpoints.stop();
      await server.drain();
      await relay?.stop();
      notifier.close();
      await chainHeads?.close();
      await verifier.close();
      await pool.end();
    },
  };
}

/** The outbox relay of this process, with the ledger's fixed bounds. */
function createRelay(pool: pg.Pool, config: LedgerConfig, logger: Logger, onFatal: (err: Error) => void): OutboxRelay {
  return createOutboxRelay({
    pool,
    logger: logger.child({ component: "relay" }),
    natsUrl: config.natsUrl,
    natsTls: config.natsTls,
    stream: streamSettingsOf(config),
    batchMax: RELAY_BATCH_MAX,
    idleMs: RELAY_IDLE_MS,
    wakeGapMs: RELAY_WAKE_GAP_MS,
    standbyPollMs: RELAY_STANDBY_POLL_MS,
    retryDelayMsMax: RELAY_RETRY_DELAY_MS_MAX,
    publishTimeoutMs: RELAY_PUBLISH_TIMEOUT_MS,
    statusLogMs: RELAY_STATUS_LOG_MS,
    onFatal,
  });
}

/**
 * The key check the server runs before it reads a body, so a caller without a key cannot make
 * it buffer one; it refuses exactly as the auth interceptor would, and hands the principal on.
 */
function authenticateBeforeBody(verifier: KeyVerifier, logger: Logger): Authenticate {
  return async ({ header, contextValues }) => {
    try {
      contextValues.set(PRINCIPAL_KEY, await authenticateBearer(verifier, header.get("authorization")));
    } catch (err) {
      throw toConnectError(err, logger);
    }
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
