/**
 * The billing-stream worker: one JetStream pipeline per configured sink, sharing a NATS
 * connection, a PostgreSQL pool and the wallet look-up cache.
 *
 * @module
 */
import { setTimeout as sleep } from "node:timers/promises";
import { jetstream, type JetStreamManager } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import type pg from "pg";
import type { Logger } from "pino";
import { connectNats, ensureStream, EVENT_SUBJECTS_ALL, type StreamSettings } from "@holdfast/common/nats";
import type { BillingConfig } from "@holdfast/billing-core/config";
import { newSinkMetrics, type SinkMetrics } from "@holdfast/billing-core/metrics";
import { createResolver } from "@holdfast/billing-core/resolver";
import { createSink } from "@holdfast/billing-core/sinks";
import { createSinkStream, type SinkStream } from "@holdfast/billing-core/stream";

/** Entries of each look-up cache (wallet metadata, refunded transfers). */
const RESOLVER_CACHE_ENTRIES_MAX = 10_000;
/** Pause between attempts to reach NATS at start. */
const CONNECT_RETRY_MS = 1_000;

export interface BillingWorkerOptions {
  readonly config: BillingConfig;
  readonly pool: pg.Pool;
  readonly natsUrl: string;
  /** The ledger's stream settings (created or updated at start, as the ledger does). */
  readonly stream: Omit<StreamSettings, "subjects">;
  readonly logger: Logger;
  /** How often each sink's figures are refreshed and logged. */
  readonly statusLogMs: number;
}

export type BillingWorker = ReturnType<typeof createBillingWorker>;

export function createBillingWorker(options: BillingWorkerOptions) {
  const { config, logger } = options;
  const metrics = new Map<string, SinkMetrics>(config.sinks.map((s) => [s.name, newSinkMetrics()]));
  const resolver = createResolver({ pool: options.pool, walletCacheTtlMs: config.walletCacheTtlMs, cacheEntriesMax: RESOLVER_CACHE_ENTRIES_MAX });
  const stopping = new AbortController();
  let nc: NatsConnection | null = null;
  let streams: SinkStream[] = [];
  let status: ReturnType<typeof setInterval> | null = null;

  async function connect(): Promise<{ nc: NatsConnection; jsm: JetStreamManager }> {
    for (;;) {
      try {
        const conn = await connectNats(options.natsUrl, "holdfast-billing-stream", logger);
        const jsm = await ensureStream(conn, { ...options.stream, subjects: [EVENT_SUBJECTS_ALL] });
        return { nc: conn, jsm };
      } catch (err) {
        if (stopping.signal.aborted) throw err;
        logger.warn({ err }, "billing: cannot reach NATS; retrying");
        await sleep(CONNECT_RETRY_MS, undefined, { signal: stopping.signal }).catch(() => undefined);
      }
    }
  }

  async function logStatus(): Promise<void> {
    for (const stream of streams) await stream.refresh().catch(() => undefined);
    for (const [sink, m] of metrics) logger.info({ sink, ...m }, "billing sink status");
  }

  return {
    metrics,
    /** Connects (retrying until NATS answers) and starts every sink's pipeline. */
    async start(): Promise<void> {
      const connected = await connect();
      nc = connected.nc;
      const js = jetstream(nc);
      const multipleFilters = supportsMultipleFilters(nc.info?.version);
      streams = config.sinks.map((sinkConfig) =>
        createSinkStream({
          ctx: { sink: createSink(sinkConfig), pool: options.pool, resolver, metrics: metrics.get(sinkConfig.name)!, logger },
          js,
          jsm: connected.jsm,
          streamName: options.stream.name,
          multipleFilters,
        }),
      );
      for (const stream of streams) stream.start();
      status = setInterval(() => void logStatus(), options.statusLogMs);
      status.unref();
      logger.info({ sinks: config.sinks.map((s) => `${s.name} (${s.type})`) }, "billing-stream worker running");
    },
    /** Refreshes the backlog figures of every sink now (tests and /metrics use the cached ones). */
    refresh: logStatus,
    healthy: (): boolean => nc !== null && !nc.isClosed(),
    async stop(): Promise<void> {
      stopping.abort();
      if (status !== null) clearInterval(status);
      await Promise.all(streams.map((s) => s.stop()));
      await nc?.drain().catch(() => undefined);
    },
  };
}

/** Several filter subjects per consumer need nats-server 2.10 or later. */
export function supportsMultipleFilters(version: string | undefined): boolean {
  const match = /^v?(\d+)\.(\d+)/.exec(version ?? "");
  if (match === null) return false;
  const [major, minor] = [Number(match[1]), Number(match[2])];
  return major > 2 || (major === 2 && minor >= 10);
}
