// Fresh databases for tests: each one is a clone of the migrated template that
// test/global-setup.ts builds, so a test file never sees another file's rows and never pays
// for running the migrations itself.
import { randomBytes } from "node:crypto";
import pg from "pg";
import type { Pool } from "pg";
import { inject } from "vitest";
import { databaseUrl, TEST_DATABASE_PREFIX } from "../global-setup.js";

declare module "vitest" {
  export interface ProvidedContext {
    /** The migrated template database to clone. */
    templateDatabase: string;
    /** The server's maintenance database, used to create and drop test databases. */
    adminDatabaseUrl: string;
  }
}

/** A database of one's own; `drop` closes the pool and removes the database. */
export interface TestDatabase {
  readonly url: string;
  readonly pool: Pool;
  drop(): Promise<void>;
}

/** Enough connections for the concurrency tests without exhausting a shared server. */
const TEST_POOL_SIZE_MAX = 10;
const CONNECT_TIMEOUT_MS = 10_000;
const IDLE_TIMEOUT_MS = 10_000;
/** 8 random bytes make name collisions between concurrent runs practically impossible. */
const NAME_RANDOM_BYTES = 8;

/**
 * Creates a database cloned from the migrated template, or, with `empty`, a database with no
 * schema at all (for testing the migrations themselves).
 */
export async function createTestDatabase(options: { empty?: boolean } = {}): Promise<TestDatabase> {
  const adminUrl = inject("adminDatabaseUrl");
  const template = options.empty === true ? "template0" : inject("templateDatabase");
  const name = `${TEST_DATABASE_PREFIX}${randomBytes(NAME_RANDOM_BYTES).toString("hex")}`;
  await withAdmin(adminUrl, (admin) =>
    admin.query(`create database ${pg.escapeIdentifier(name)} template ${pg.escapeIdentifier(template)}`),
  );
  const url = databaseUrl(adminUrl, name);
  const pool = new pg.Pool({
    connectionString: url,
    max: TEST_POOL_SIZE_MAX,
    connectionTimeoutMillis: CONNECT_TIMEOUT_MS,
    idleTimeoutMillis: IDLE_TIMEOUT_MS,
    application_name: "holdfast-test",
  });
  let dropped = false;
  return {
    url,
    pool,
    async drop() {
      if (dropped) return;
      dropped = true;
      await pool.end();
      await withAdmin(adminUrl, (admin) => dropWhenIdle(admin, name));
    },
  };
}

/** Attempts to drop a database politely before forcing it. */
const DROP_ATTEMPTS_MAX = 40;
const DROP_RETRY_MS = 50;

/**
 * Drops a test database once its sessions have closed. pg's pool.end() can resolve while a
 * client's socket is still closing; forcing the drop at that moment terminates the session and
 * the client reports an error nobody listens for any more. So wait for it (55006: in use), and
 * force only as a last resort.
 */
async function dropWhenIdle(admin: pg.Client, name: string): Promise<void> {
  const quoted = pg.escapeIdentifier(name);
  for (let attempt = 1; attempt <= DROP_ATTEMPTS_MAX; attempt++) {
    try {
      await admin.query(`drop database if exists ${quoted}`);
      return;
    } catch (err) {
      if ((err as { code?: string }).code !== "55006") throw err;
      await new Promise((resolve) => setTimeout(resolve, DROP_RETRY_MS));
    }
  }
  await admin.query(`drop database if exists ${quoted} with (force)`);
}

async function withAdmin<T>(adminUrl: string, work: (admin: pg.Client) => Promise<T>): Promise<T> {
  const admin = new pg.Client({
    connectionString: adminUrl,
    connectionTimeoutMillis: CONNECT_TIMEOUT_MS,
    application_name: "holdfast-test",
  });
  await admin.connect();
  try {
    return await work(admin);
  } finally {
    await admin.end();
  }
}
