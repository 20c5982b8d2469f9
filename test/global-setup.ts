// Builds, once per set of migrations, the template database every test database is cloned
// from, and hands its name to the test files through vitest's provide/inject.
//
// Several test runs may share one PostgreSQL server (two checkouts, or a developer and CI).
// Two advisory locks keep them apart: a setup lock serialises template building and cleanup,
// and every run holds a shared "run" lock until it ends. Leftover databases of earlier runs
// are dropped only when the exclusive form of the run lock can be taken, that is, when no
// other run is alive to be using them.
import { createHash } from "node:crypto";
import pg from "pg";
import type { TestProject } from "vitest/node";
import { defaultMigrationsDir, migrate, readMigrationFiles } from "@holdfast/db/migrate";
// Type-only: brings in the ProvidedContext declaration without loading vitest's runtime here.
import type {} from "./support/db.js";

/** The server's maintenance database, from which test databases are created and dropped. */
export const ADMIN_DATABASE_URL =
  process.env["HOLDFAST_TEST_DATABASE_URL"] ?? "postgres://postgres@127.0.0.1:5432/postgres";
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

/** Vitest calls this once per run; the returned function runs when the run ends. */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const template = `${TEMPLATE_DATABASE_PREFIX}${await migrationsHash()}`;
  const admin = new pg.Client({
    connectionString: ADMIN_DATABASE_URL,
    connectionTimeoutMillis: CONNECT_TIMEOUT_MS,
    application_name: "holdfast-test-setup",
  });
  await admin.connect().catch((error: unknown) => {
    throw new Error(`cannot connect to PostgreSQL at ${ADMIN_DATABASE_URL} (set HOLDFAST_TEST_DATABASE_URL): ${String(error)}`);
  });
  await admin.query("select pg_advisory_lock($1)", [SETUP_LOCK_KEY.toString()]);
  try {
    await dropLeftoversIfAlone(admin, template);
    await admin.query("select pg_advisory_lock_shared($1)", [RUN_LOCK_KEY.toString()]);
    await ensureTemplate(admin, template);
  } finally {
    await admin.query("select pg_advisory_unlock($1)", [SETUP_LOCK_KEY.toString()]);
  }
  project.provide("templateDatabase", template);
  project.provide("adminDatabaseUrl", ADMIN_DATABASE_URL);
  // Closing the session releases the shared run lock.
  return async () => {
    await admin.end();
  };
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
async function ensureTemplate(admin: pg.Client, template: string): Promise<void> {
  const existing = await admin.query("select 1 from pg_database where datname = $1", [template]);
  if (existing.rowCount !== 0) return;
  const building = `${template}_building`;
  await dropDatabase(admin, building);
  await admin.query(`create database ${pg.escapeIdentifier(building)} template template0`);
  const pool = new pg.Pool({
    connectionString: databaseUrl(ADMIN_DATABASE_URL, building),
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
