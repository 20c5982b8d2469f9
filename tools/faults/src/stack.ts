/**
 * The servers and processes a battery run owns: a private PostgreSQL (a temporary embedded
 * cluster on a free port, never the machine's 5432), a private nats-server or a three-node
 * cluster on loopback (never the machine's 4222), and the ledger and the three workers as
 * processes. Everything listens on 127.0.0.1 and is stopped by the run that started it.
 *
 * @module
 */
import path from "node:path";

import pg from "pg";
import { connect } from "@nats-io/transport-node";
import { jetstreamManager } from "@nats-io/jetstream";
import { restartablePort } from "@holdfast/common/net";
import { restartEmbeddedPostgresImmediately, type EmbeddedPostgres } from "@holdfast/dev-servers/embedded-postgres";
import { startTemporaryPostgres } from "@holdfast/dev-servers/temporary-postgres";
import { startNatsCluster } from "@holdfast/testing/nats-cluster";
import { startNatsServer } from "@holdfast/testing/nats-server";

import { assertBuilt, createManagedProcess, type ManagedProcess, type UnexpectedExit } from "./processes.js";

const LEDGER_SCRIPT = "services/ledger/dist/main.js";
const WORKER_SCRIPTS = {
  webhooks: "workers/webhooks/dist/main.js",
  "billing-stream": "workers/billing-stream/dist/main.js",
  "hold-expiry": "workers/hold-expiry/dist/main.js",
} as const;

/** Loopback, where every receiver and engine of the run listens. */
export const LOOPBACK_NETWORKS = "127.0.0.0/8,::1/128";
const ADMIN_CONNECT_TIMEOUT_MS = 10_000;
/** Crash recovery after an immediate stop, on a loaded machine, with room to spare. */
const POSTGRES_START_TIMEOUT_MS = 120_000;
const LEDGER_READY_TIMEOUT_MS = 90_000;
const WORKER_READY_TIMEOUT_MS = 60_000;
const READY_PROBE_TIMEOUT_MS = 2000;
/** A process that died by itself is started again after this, as a supervisor would. */
const CRASH_RESTART_DELAY_MS = 1000;
const NATS_PROBE_TIMEOUT_MS = 3000;
/** A cluster node's start, JetStream quorum included, on a loaded machine. */
const NATS_START_TIMEOUT_MS = 60_000;
/** Connections per process: enough for the load, far below PostgreSQL's 100. */
const LEDGER_POOL_MAX = 12;
const WORKER_POOL_MAX = 6;
/**
 * The webhook worker's retries, in seconds rather than hours: a delivery interrupted by a kill
 * must come back within the run, and every attempt is logged in the deliveries table anyway.
 */
const WEBHOOK_RETRY_SCHEDULE = "100ms,250ms,500ms,1s,2s,2s,3s,3s,3s,3s,3s,3s";
const WEBHOOK_TIMEOUT_MS = 5000;

/** The run's PostgreSQL; `restartImmediately` is the fault, `stop` removes the cluster. */
export interface PrivatePostgres {
  readonly adminUrl: string;
  /** Creates an empty database and returns its URL. */
  createDatabase(name: string): Promise<string>;
  /** `pg_ctl stop -m immediate`, down for `downMs`, then a start with crash recovery. */
  restartImmediately(downMs: number): Promise<void>;
  stop(): Promise<void>;
}

/** A fresh embedded PostgreSQL cluster in a temporary folder, on a free loopback port. */
export async function startPrivatePostgres(): Promise<PrivatePostgres> {
  const temporary = await startTemporaryPostgres();
  let current: EmbeddedPostgres = temporary;
  return {
    adminUrl: temporary.adminUrl,
    async createDatabase(name) {
      if (!/^[a-z_][a-z0-9_]{0,62}$/.test(name)) throw new Error(`not a plain database name: ${name}`);
      const admin = new pg.Client({ connectionString: temporary.adminUrl, connectionTimeoutMillis: ADMIN_CONNECT_TIMEOUT_MS });
      await admin.connect();
      try {
        await admin.query(`create database ${name}`);
      } finally {
        await admin.end();
      }
      const url = new URL(temporary.adminUrl);
      url.pathname = `/${name}`;
      return url.toString();
    },
    async restartImmediately(downMs) {
      current = await restartEmbeddedPostgresImmediately(current, { downMs, startTimeoutMs: POSTGRES_START_TIMEOUT_MS });
    },
    async stop() {
      await current.stop();
      // The temporary server's stop removes the cluster's folder (its own server is long gone).
      await temporary.stop();
    },
  };
}

/** The run's NATS: one server, or a cluster whose nodes the battery can kill one at a time. */
export interface NatsTopology {
  /** NATS_URL of the processes (the variable takes one URL; a client learns a cluster's other nodes from it). */
  readonly processUrl: string;
  /** Every server, for the battery's own connections. */
  readonly urls: readonly string[];
  /** HOLDFAST_STREAM_REPLICAS of the processes. */
  readonly replicas: number;
  /**
   * Kills a server with SIGKILL and starts it again after `downMs`: the only server, or the
   * node leading `streamName` (the node whose loss costs the most). Resolves with its name.
   */
  killAndRestart(downMs: number, streamName: string): Promise<string>;
  close(): Promise<void>;
}

/** One nats-server with JetStream on a free port. */
export async function startSingleNats(): Promise<NatsTopology> {
  const server = await startNatsServer();
  return {
    processUrl: server.url,
    urls: [server.url],
    replicas: 1,
    async killAndRestart(downMs) {
      await server.stop("SIGKILL");
      await sleepMs(downMs);
      await server.start();
      return "nats-server";
    },
    close: () => server.close(),
  };
}

/** Three nats-servers routed on loopback; the stream runs at three replicas. */
export async function startClusterNats(): Promise<NatsTopology> {
  const cluster = await startNatsCluster({ size: 3, startTimeoutMs: NATS_START_TIMEOUT_MS });
  return {
    processUrl: cluster.urls[0]!,
    urls: cluster.urls,
    replicas: 3,
    async killAndRestart(downMs, streamName) {
      const leader = (await streamLeader(cluster.urls, streamName)) ?? cluster.nodes[1]!.name;
      const node = cluster.node(leader) ?? cluster.nodes[1]!;
      await node.stop("SIGKILL");
      await sleepMs(downMs);
      await node.start();
      return node.name;
    },
    close: () => cluster.close(),
  };
}

/** The name of the node that leads `streamName`, or undefined when nobody answers. */
async function streamLeader(urls: readonly string[], streamName: string): Promise<string | undefined> {
  const nc = await connect({ servers: [...urls], timeout: NATS_PROBE_TIMEOUT_MS }).catch(() => null);
  if (nc === null) return undefined;
  try {
    const jsm = await jetstreamManager(nc, { timeout: NATS_PROBE_TIMEOUT_MS });
    return (await jsm.streams.info(streamName)).cluster?.leader;
  } catch {
    return undefined;
  } finally {
    await nc.close().catch(() => undefined);
  }
}

/** Where the processes of a scenario find everything. */
export interface ProcessEnvironment {
  readonly databaseUrl: string;
  readonly nats: NatsTopology;
  readonly billingConfigPath: string;
  /** The environment variables the billing sinks' `secret_env` names. */
  readonly sinkSecrets: Readonly<Record<string, string>>;
  readonly logDir: string;
  readonly logLevel: string;
}

/** The ledger and the three workers of a scenario, not started yet. */
export interface HoldfastProcesses {
  readonly ledger: ManagedProcess;
  readonly ledgerUrl: string;
  readonly workers: Readonly<Record<keyof typeof WORKER_SCRIPTS, ManagedProcess>>;
  readonly all: readonly ManagedProcess[];
}

/**
 * Describes the four processes of a scenario. Each gets only the variables below (and PATH):
 * nothing of the caller's environment leaks in, so the run is the same from a shell and from
 * the test suite.
 */
export async function createHoldfastProcesses(env: ProcessEnvironment, onUnexpectedExit: (exit: UnexpectedExit) => void): Promise<HoldfastProcesses> {
  const hooks = { onUnexpectedExit, restartDelayMs: CRASH_RESTART_DELAY_MS };
  for (const script of [LEDGER_SCRIPT, ...Object.values(WORKER_SCRIPTS)]) assertBuilt(script);
  const port = await restartablePort();
  const common = {
    PATH: process.env["PATH"] ?? "",
    DATABASE_URL: env.databaseUrl,
    NATS_URL: env.nats.processUrl,
    HOLDFAST_STREAM_REPLICAS: String(env.nats.replicas),
    HOLDFAST_HOST: "127.0.0.1",
    LOG_LEVEL: env.logLevel,
  };
  const logFile = (name: string) => path.join(env.logDir, `${name}.log`);
  const ledger = createManagedProcess({
    name: "ledger",
    script: LEDGER_SCRIPT,
    env: { ...common, HOLDFAST_PORT: String(port), HOLDFAST_PG_POOL_MAX: String(LEDGER_POOL_MAX), HOLDFAST_WEBHOOK_ALLOWED_NETWORKS: LOOPBACK_NETWORKS },
    logFile: logFile("ledger"),
    ready: () => answersOk(`http://127.0.0.1:${port}/readyz`),
    readyTimeoutMs: LEDGER_READY_TIMEOUT_MS,
  }, hooks);
  // Each worker serves /healthz on its metrics port (HOLDFAST_METRICS_PORT) once it runs.
  const worker = async (name: keyof typeof WORKER_SCRIPTS, extra: Record<string, string>) => {
    const metricsPort = await restartablePort();
    return createManagedProcess({
      name,
      script: WORKER_SCRIPTS[name],
      env: { ...common, HOLDFAST_PG_POOL_MAX: String(WORKER_POOL_MAX), HOLDFAST_METRICS_PORT: String(metricsPort), ...extra },
      logFile: logFile(name),
      ready: () => answersOk(`http://127.0.0.1:${metricsPort}/healthz`),
      readyTimeoutMs: WORKER_READY_TIMEOUT_MS,
    }, hooks);
  };
  const workers = {
    webhooks: await worker("webhooks", {
      HOLDFAST_WEBHOOK_ALLOWED_NETWORKS: LOOPBACK_NETWORKS,
      HOLDFAST_WEBHOOK_RETRY_SCHEDULE: WEBHOOK_RETRY_SCHEDULE,
      HOLDFAST_WEBHOOK_TIMEOUT_MS: String(WEBHOOK_TIMEOUT_MS),
    }),
    "billing-stream": await worker("billing-stream", { HOLDFAST_BILLING_CONFIG: env.billingConfigPath, ...env.sinkSecrets }),
    "hold-expiry": await worker("hold-expiry", {}),
  };
  return { ledger, ledgerUrl: `http://127.0.0.1:${port}`, workers, all: [ledger, ...Object.values(workers)] };
}

/** True when `url` answers 2xx within the probe timeout. */
export function answersOk(url: string): Promise<boolean> {
  return fetch(url, { signal: AbortSignal.timeout(READY_PROBE_TIMEOUT_MS) }).then((r) => r.ok, () => false);
}

function sleepMs(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
