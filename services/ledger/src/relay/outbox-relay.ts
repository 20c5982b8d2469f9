import { setTimeout as sleep } from "node:timers/promises";
import { jetstream, type JetStreamClient } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import type pg from "pg";
import type { Logger } from "pino";
import { backoffDelayMs } from "@holdfast/common/backoff";
import { logRepeated } from "@holdfast/common/logger";
import { deploymentIdOf } from "@holdfast/common/deployment";
import type { NatsTlsConfig } from "@holdfast/common/config";
import { connectNats, DeploymentConflictError, ensureStream, type StreamSettings } from "@holdfast/common/nats";
import { OUTBOX_CHANNEL } from "@holdfast/common/outbox-wake";
import { createWaker, type Waker } from "@holdfast/common/waker";
import { encodeEvent, type OutboxRow } from "./event-codec.js";

/** The advisory lock whose holder is the one active relay among the ledger replicas. */
export const RELAY_LOCK_KEY = "5219509671615886197";
/** The pause after the first failed attempt; it doubles per failure up to retryDelayMsMax. */
const RETRY_DELAY_MS_MIN = 100;

export interface RelayOptions {
  pool: pg.Pool;
  logger: Logger;
  natsUrl: string;
  /** TLS to NATS (HOLDFAST_NATS_TLS_*); null or absent uses none unless the server requires it. */
  natsTls?: NatsTlsConfig | null;
  /** The stream, and the namespace whose subjects the events are published on. */
  stream: StreamSettings;
  /** Events published per batch; all of a batch are in flight at once. */
  batchMax: number;
  /**
   * The safety poll: the longest pause when there is nothing to publish. A wake ends it at once:
   * wake() after a commit in this process, or a NOTIFY on OUTBOX_CHANNEL from another one. It
   * only matters when a wake is lost (a writer that does not notify, a NOTIFY sent while the
   * relay's connection was being replaced).
   */
  idleMs: number;
  /**
   * Shortest time from the start of one batch to the start of the next when a wake (rather than
   * a full batch) starts it: while commits keep coming, the events of this long go out together
   * instead of one small batch per commit. An idle relay answers a wake at once. Default 0.
   */
  wakeGapMs?: number;
  /** How long a standby replica waits before trying to take over. */
  standbyPollMs: number;
  /** Longest pause between attempts after a failure (NATS or Postgres down). */
  retryDelayMsMax: number;
  /** How long one publish may wait for the server's ack. */
  publishTimeoutMs: number;
  /** How often the backlog and publish lag are logged. */
  statusLogMs: number;
  /** Test hook, called after a batch is published and before it is marked. */
  afterPublish?: (eventIds: string[]) => void;
  /**
   * Called when the stream belongs to another deployment (DeploymentConflictError): the relay
   * has stopped for good, and the process should stop too.
   */
  onFatal?: (err: DeploymentConflictError) => void;
}

export interface RelayStatus {
  role: "active" | "standby" | "stopped";
  nats: "connected" | "disconnected";
  /** Unpublished events, as of the last refresh. */
  backlog: number;
  /** Age of the oldest unpublished event, as of the last refresh. */
  lagMs: number;
  publishedTotal: number;
}

/**
 * The transactional outbox relay. It publishes unpublished rows of the events table to
 * JetStream in position order with Nats-Msg-Id = event id, then marks them published.
 *
 * - Rows are selected by "not yet published", never by "position above the last one seen": a
 *   transaction that committed late with a lower position would otherwise be skipped.
 * - A crash between publish and mark re-publishes the batch; the stream's duplicate window
 *   drops the copies, and consumers dedupe on the event id as well.
 * - One relay is active across replicas: the holder of a session advisory lock on a dedicated
 *   connection. If that replica dies its connection closes, the lock is freed and a standby
 *   takes over within standbyPollMs.
 * - NATS being down only stops this loop; ledger commands never wait for it. The backlog
 *   waits in Postgres and drains when NATS returns.
 * - It does not poll for work: with nothing to publish it sleeps until woken, by wake() (the
 *   ledger calls it after each command this process commits, which costs nothing) or by a
 *   NOTIFY on OUTBOX_CHANNEL, which the active relay LISTENs for on its leadership connection
 *   (other writers send it after their commit: packages/common/src/outbox-wake.ts), or until
 *   the safety poll (idleMs) runs out. A wake during a batch makes the loop look again right
 *   after it, so a commit is never left waiting for the safety poll while the relay is active.
 */
export function createOutboxRelay(options: RelayOptions) {
  const { pool, logger } = options;
  const status: RelayStatus = { role: "standby", nats: "disconnected", backlog: 0, lagMs: 0, publishedTotal: 0 };
  const stopping = new AbortController();
  const waker = createWaker();
  const leadership = createLeadership(pool, logger, status, waker);
  const publisher = createPublisher(options, status);

  async function run(): Promise<void> {
    let failures = 0;
    while (!stopping.signal.aborted) {
      try {
        if (!leadership.held() && !(await leadership.acquire())) {
          await pause(options.standbyPollMs);
          continue;
        }
        const startedAt = performance.now();
        const published = await publisher.publishBatch();
        failures = 0;
        if (published < options.batchMax) {
          await idle(startedAt);
        }
      } catch (err) {
        if (err instanceof DeploymentConflictError) {
          stopForGood(err);
          return;
        }
        failures++;
        status.nats = "disconnected";
        const delay = backoffDelayMs(failures, { delayMsMin: RETRY_DELAY_MS_MIN, delayMsMax: options.retryDelayMsMax });
        logRepeated(logger, "warn", { err, failures, retryInMs: delay }, "outbox relay: publish failed; the backlog waits in Postgres");
        await pause(delay);
      }
    }
  }

  async function pause(ms: number): Promise<void> {
    await sleep(ms, undefined, { signal: stopping.signal }).catch(() => undefined);
  }

  /** Waits for new events (a wake, or the safety poll), then out the wake gap since the last batch began. */
  async function idle(lastBatchAt: number): Promise<void> {
    await waker.idle(options.idleMs, stopping.signal);
    const gap = lastBatchAt + (options.wakeGapMs ?? 0) - performance.now();
    if (gap > 0) await pause(gap);
  }

  /** Publishing into another deployment's stream would hand it our events: stop, and say so. */
  function stopForGood(err: DeploymentConflictError): void {
    logger.fatal({ err }, "outbox relay: the event stream belongs to another deployment; not publishing");
    status.role = "stopped";
    leadership.release();
    options.onFatal?.(err);
  }

  const refresh = () => refreshStatus(pool, status);
  let loop: Promise<void> | null = null;
  let statusTimer: NodeJS.Timeout | null = null;
  return {
    start() {
      loop ??= run();
      statusTimer ??= logStatusPeriodically(logger, options.statusLogMs, refresh);
    },
    status: () => ({ ...status }),
    /**
     * Tells the relay that this process committed events: an active relay publishes them at
     * once rather than at its safety poll. Free to call often; wakes that arrive together count once.
     */
    wake: (): void => waker.wake(),
    /** Whether this process's relay publishes: commits elsewhere must NOTIFY it instead. */
    isActive: (): boolean => status.role === "active",
    refreshStatus: refresh,
    /**
     * Connects and checks that the stream is this deployment's, so that a ledger started into
     * another deployment's namespace refuses to start. Throws DeploymentConflictError for that
     * only; NATS being away is logged and left to the relay's loop.
     */
    async verifyStream(): Promise<void> {
      try {
        await publisher.connect();
      } catch (err) {
        if (err instanceof DeploymentConflictError) throw err;
        logger.warn({ err }, "outbox relay: NATS not reachable at start; the stream's owner is checked when it is");
      }
    },
    async stop() {
      stopping.abort();
      if (statusTimer) clearInterval(statusTimer);
      await loop;
      status.role = "stopped";
      leadership.release();
      await publisher.close();
    },
  };
}

export type OutboxRelay = ReturnType<typeof createOutboxRelay>;

/**
 * The advisory lock that makes one replica's relay the active one. It lives on a dedicated
 * connection: the session lock is freed when that connection closes.
 */
function createLeadership(pool: pg.Pool, logger: Logger, status: RelayStatus, waker: Waker) {
  let lockClient: pg.PoolClient | null = null;

  async function acquire(): Promise<boolean> {
    const client = await pool.connect();
    const result = await client
      .query<{ locked: boolean }>("select pg_try_advisory_lock($1) as locked", [RELAY_LOCK_KEY])
      .catch((err: unknown) => {
        // A connection that failed mid-query is destroyed, not lent out again.
        client.release(err instanceof Error ? err : true);
        throw err;
      });
    if (!result.rows[0]?.locked) {
      client.release();
      return false;
    }
    // Only the lock holder listens for wakes, on the connection that holds the lock: it is never
    // lent out, and it closes with the leadership, which ends the LISTEN with it.
    try {
      await client.query(`listen ${OUTBOX_CHANNEL}`);
    } catch (err) {
      client.release(err instanceof Error ? err : true);
      throw err;
    }
    client.on("notification", () => waker.wake());
    // Only the lock holder watches its connection: a standby returns its client to the pool at
    // once, so listeners never pile up on pooled clients.
    client.once("error", (err) => {
      logger.warn({ err }, "relay lock connection lost; stepping down");
      if (lockClient === client) {
        lockClient = null;
        status.role = "standby";
        client.release(err);
      }
    });
    lockClient = client;
    status.role = "active";
    logger.info("outbox relay active");
    return true;
  }

  return {
    acquire,
    held: (): boolean => lockClient !== null,
    release(): void {
      // Destroy rather than return the connection: it still holds the session advisory lock.
      lockClient?.release(true);
      lockClient = null;
    },
  };
}

/** The NATS side of the relay: one connection, and a batch at a time from the outbox to it. */
function createPublisher(options: RelayOptions, status: RelayStatus) {
  const { pool } = options;
  const deploymentId = deploymentIdOf(pool);
  let nc: NatsConnection | null = null;
  let js: JetStreamClient | null = null;

  /** Connects and makes sure the stream exists and is this deployment's; closes on failure. */
  async function ensureNats(): Promise<JetStreamClient> {
    if (js && nc && !nc.isClosed()) {
      return js;
    }
    const id = await deploymentId();
    const conn = await connectNats(options.natsUrl, "holdfast-ledger-relay", options.logger, options.natsTls ?? null);
    try {
      await ensureStream(conn, options.stream, id, options.logger);
    } catch (err) {
      await conn.close().catch(() => undefined);
      throw err;
    }
    nc = conn;
    js = jetstream(nc, { timeout: options.publishTimeoutMs });
    return js;
  }

  /** Publishes one batch; returns how many events it published. */
  async function publishBatch(): Promise<number> {
    const client = await ensureNats();
    status.nats = "connected";
    const { rows } = await pool.query<OutboxRow>({
      name: "relay_unpublished",
      text: `select event_id, tenant_id, wallet_id, seq, type, asset, occurred_at, data
               from events where published_at is null order by position limit $1`,
      values: [options.batchMax],
    });
    if (rows.length === 0) {
      return 0;
    }
    // All of a batch are in flight at once; one connection keeps them in order on the server.
    await Promise.all(
      rows.map((row) => {
        const message = encodeEvent(row, options.stream.namespace);
        return client.publish(message.subject, message.body, { msgID: row.event_id, headers: message.headers });
      }),
    );
    const ids = rows.map((row) => row.event_id);
    options.afterPublish?.(ids);
    await pool.query({
      name: "relay_mark_published",
      text: "update events set published_at = now() where event_id = any($1::uuid[])",
      values: [ids],
    });
    status.publishedTotal += rows.length;
    return rows.length;
  }

  return {
    publishBatch,
    connect: ensureNats,
    async close(): Promise<void> {
      await nc?.close().catch(() => undefined);
    },
  };
}

/** Reads the backlog and the publish lag into `status`, and returns a copy. */
async function refreshStatus(pool: pg.Pool, status: RelayStatus): Promise<RelayStatus> {
  const { rows } = await pool.query<{ backlog: bigint; lag_ms: bigint }>({
    name: "relay_backlog",
    text: `select count(*) as backlog,
                  coalesce(extract(epoch from now() - min(occurred_at)) * 1000, 0)::bigint as lag_ms
             from events where published_at is null`,
  });
  status.backlog = Number(rows[0]?.backlog ?? 0n);
  status.lagMs = Number(rows[0]?.lag_ms ?? 0n);
  return { ...status };
}

function logStatusPeriodically(logger: Logger, intervalMs: number, refresh: () => Promise<RelayStatus>): NodeJS.Timeout {
  const timer = setInterval(() => {
    refresh().then(
      (s) => logger.info(s, "outbox relay status"),
      (err: unknown) => logger.warn({ err }, "outbox relay status unavailable"),
    );
  }, intervalMs);
  timer.unref();
  return timer;
}
