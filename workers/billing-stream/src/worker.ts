/**
 * The billing-stream worker: one JetStream pipeline per configured sink, sharing a NATS
 * connection, a PostgreSQL pool and the wallet look-up cache.
 *
 * The stream and every sink's consumer must be this deployment's: `start` refuses one owned by
 * another deployment (DeploymentConflictError), and a conflict found later resolves `fatal`.
 *
 * @module
 */
import { setTimeout as sleep } from "node:timers/promises";
import { jetstream, type JetStreamManager } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import type pg from "pg";
import type { Logger } from "pino";
import { NAMESPACE_DEFAULT, type NatsTlsConfig } from "@holdfast/common/config";
import { logRepeated } from "@holdfast/common/logger";
import { createTenantGuard, deploymentIdOf, type TenantGuard } from "@holdfast/common/deployment";
import { connectNats, DeploymentConflictError, ensureStream, type StreamSettings } from "@holdfast/common/nats";
import type { BillingConfig } from "@holdfast/billing-core/config";
import { newSinkMetrics, type SinkMetrics } from "@holdfast/billing-core/metrics";
import { createResolver } from "@holdfast/billing-core/resolver";
import { createSink } from "@holdfast/billing-core/sinks";
import { createSinkStream, ensureConsumer, type SinkStream } from "@holdfast/billing-core/stream";

/** Entries of each look-up cache (wallet metadata, refunded transfers). */
const RESOLVER_CACHE_ENTRIES_MAX = 10_000;
/** Pause between attempts to reach NATS at start. */
const CONNECT_RETRY_MS = 1_000;

export interface BillingWorkerOptions {
  readonly config: BillingConfig;
  readonly pool: pg.Pool;
  readonly natsUrl: string;
  /** TLS to NATS (HOLDFAST_NATS_TLS_*); null or absent uses none unless the server requires it. */
  readonly natsTls?: NatsTlsConfig | null;
  /** The ledger's stream settings and namespace (created or updated at start, as the ledger does). */
  readonly stream: StreamSettings;
  readonly logger: Logger;
  /** How often each sink's figures are refreshed and logged. */
  readonly statusLogMs: number;
}

export type BillingWorker = ReturnType<typeof createBillingWorker>;

export function createBillingWorker(options: BillingWorkerOptions) {
  const { config, logger } = options;
  const metrics = new Map<string, SinkMetrics>(config.sinks.map((s) => [s.name, newSinkMetrics()]));
  const resolver = createResolver({ pool: options.pool, walletCacheTtlMs: config.walletCacheTtlMs, cacheEntriesMax: RESOLVER_CACHE_ENTRIES_MAX });
  const namespace = options.stream.namespace ?? NAMESPACE_DEFAULT;
  const deploymentId = deploymentIdOf(options.pool);
  const { guards, unknownTenantEvents } = createSinkGuards(options);
  const stopping = new AbortController();
  let onFatal: (err: Error) => void = () => undefined;
  const fatal = new Promise<Error>((resolve) => {
    onFatal = resolve;
  });
  let nc: NatsConnection | null = null;
  let streams: SinkStream[] = [];
  let status: ReturnType<typeof setInterval> | null = null;

  async function logStatus(): Promise<void> {
    for (const stream of streams) await stream.refresh().catch(() => undefined);
    for (const [sink, m] of metrics) logger.info({ sink, ...m }, "billing sink status");
  }

  return {
    metrics,
    /** Events of tenants this database does not know, set aside per sink since start. */
    unknownTenantEvents: (): ReadonlyMap<string, number> => new Map(unknownTenantEvents),
    /**
     * Resolves with the reason when a sink's consumer turned out to belong to another
     * deployment after the start (docs/events.md, "Namespaces"); the process should exit.
     */
    fatal,
    /**
     * Connects (retrying until NATS answers) and starts every sink's pipeline. Rejects with a
     * DeploymentConflictError when the stream or a sink's consumer is another deployment's.
     */
    async start(): Promise<void> {
      const connected = await connectChecked(options, deploymentId, stopping.signal);
      nc = connected.nc;
      const js = jetstream(nc);
      const common = {
        js,
        jsm: connected.jsm,
        streamName: options.stream.name,
        multipleFilters: supportsMultipleFilters(nc.info?.version),
        namespace,
        deploymentId: connected.id,
      };
      await checkConsumers(config, logger, common).catch(async (err: unknown) => {
        await nc?.close().catch(() => undefined);
        throw err;
      });
      streams = config.sinks.map((sinkConfig) =>
        createSinkStream({
          ctx: { sink: createSink(sinkConfig), pool: options.pool, resolver, metrics: metrics.get(sinkConfig.name)!, logger },
          ...common,
          guard: guards.get(sinkConfig.name)!,
          onFatal,
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
      for (const guard of guards.values()) guard.close();
      await nc?.drain().catch(() => undefined);
    },
  };
}

/** One tenant guard per sink, each counting the events it sets aside. */
function createSinkGuards({ config, pool, logger }: BillingWorkerOptions) {
  const unknownTenantEvents = new Map<string, number>(config.sinks.map((s) => [s.name, 0]));
  const guards = new Map<string, TenantGuard>(
    config.sinks.map((s) => [
      s.name,
      createTenantGuard({
        pool,
        logger,
        consumer: `billing:${s.name}`,
        onUnknown: (count) => unknownTenantEvents.set(s.name, (unknownTenantEvents.get(s.name) ?? 0) + count),
      }),
    ]),
  );
  return { guards, unknownTenantEvents };
}

/**
 * Connects and checks the stream, retrying until NATS answers; the stream of another
 * deployment is refused at once (DeploymentConflictError), never retried.
 */
async function connectChecked(
  options: BillingWorkerOptions,
  deploymentId: () => Promise<string>,
  stopping: AbortSignal,
): Promise<{ nc: NatsConnection; jsm: JetStreamManager; id: string }> {
  const { logger } = options;
  const namespace = options.stream.namespace ?? NAMESPACE_DEFAULT;
  for (;;) {
    try {
      const id = await deploymentId();
      const conn = await connectNats(options.natsUrl, connectionNameOf(namespace), logger, options.natsTls ?? null);
      const jsm = await ensureStream(conn, options.stream, id, logger).catch(async (err: unknown) => {
        await conn.close().catch(() => undefined);
        throw err;
      });
      return { nc: conn, jsm, id };
    } catch (err) {
      if (stopping.aborted || err instanceof DeploymentConflictError) throw err;
      logRepeated(logger, "warn", { err }, "billing: cannot reach NATS; retrying");
      await sleep(CONNECT_RETRY_MS, undefined, { signal: stopping }).catch(() => undefined);
    }
  }
}

/** Creates or checks every sink's consumer once, so that a conflict stops the start itself. */
async function checkConsumers(config: BillingConfig, logger: Logger, common: Parameters<typeof ensureConsumer>[0]): Promise<void> {
  for (const sink of config.sinks) {
    try {
      await ensureConsumer(common, sink);
    } catch (err) {
      if (err instanceof DeploymentConflictError) throw err;
      // Anything else the sink's own loop retries.
      logger.warn({ err, sink: sink.name }, "billing: cannot set up the sink's consumer yet; retrying in its loop");
    }
  }
}

/** The NATS connection's name, which monitoring shows: the namespace's billing-stream worker. */
function connectionNameOf(namespace: string): string {
  return `${namespace}-billing-stream`;
}

/** Several filter subjects per consumer need nats-server 2.10 or later. */
export function supportsMultipleFilters(version: string | undefined): boolean {
  const match = /^v?(\d+)\.(\d+)/.exec(version ?? "");
  if (match === null) return false;
  const [major, minor] = [Number(match[1]), Number(match[2])];
  return major > 2 || (major === 2 && minor >= 10);
}
