import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { readdir, readFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import type { Pool, PoolClient } from "pg";
import type { Logger } from "pino";

/**
 * The advisory lock every migrator takes before it reads or writes `schema_migrations`.
 * The value is "Holdfast" in ASCII, so it is easy to recognise in `pg_locks`.
 */
export const MIGRATION_LOCK_KEY = "5219509671615886196"; // 0x486f6c6466617374

/**
 * How long a migrator waits for another one to finish before it gives up. A second process
 * waiting this long means the first one is stuck, and failing loudly beats hanging forever.
 */
export const MIGRATION_LOCK_WAIT_MS_MAX = 10 * 60 * 1000;

/** Migration files are named `<number>_<snake_case_name>.sql`, e.g. `0001_tenants_and_keys.sql`. */
const MIGRATION_FILE_PATTERN = /^(\d{1,9})_([a-z0-9_]+)\.sql$/;


/** One migration file on disk. */
export interface MigrationFile {
  readonly version: number;
  /** The file name, e.g. `0001_tenants_and_keys.sql`; this is what errors and results name. */
  readonly name: string;
  /** Hex SHA-256 of the file's bytes. */
  readonly checksum: string;
  readonly sql: string;
}

/** A row of `schema_migrations`. */
interface AppliedMigration {
  readonly version: number;
  readonly name: string;
  readonly checksum: string;
}

/**
 * Thrown when the migrations on disk and in the database disagree, or when the files
 * themselves are malformed. The message always names the offending file.
 */
export class MigrationError extends Error {
  override readonly name = "MigrationError";
}

/**
 * The package's `migrations/` folder. This module runs from `db/src` (tsx, vitest) and from
 * `db/dist` (after tsc, which does not copy `.sql` files); both sit one level below the
 * package root, beside `migrations/`.
 */
export function defaultMigrationsDir(): string {
  return fileURLToPath(new URL("../migrations", import.meta.url));
}

/**
 * Reads, checksums and orders the migration files in `dir`. Numbering must run 1, 2, 3, …
 * without gaps or duplicates: a gap usually means a file was lost in a merge, and applying
 * around it would leave the schema in a state no developer has ever tested.
 */
export async function readMigrationFiles(dir: string): Promise<MigrationFile[]> {
  const names = (await readdir(dir)).filter((name) => name.endsWith(".sql"));
  const files: MigrationFile[] = [];
  for (const name of names) {
    const match = MIGRATION_FILE_PATTERN.exec(name);
    if (match === null) {
      throw new MigrationError(`migration file ${name} does not match <number>_<name>.sql`);
    }
    const bytes = await readFile(path.join(dir, name));
    files.push({
      version: Number(match[1]),
      name,
      checksum: createHash("sha256").update(bytes).digest("hex"),
      sql: bytes.toString("utf8"),
    });
  }
  files.sort((a, b) => a.version - b.version);
  files.forEach((file, index) => {
    if (file.version !== index + 1) {
      throw new MigrationError(`migration file ${file.name} has number ${file.version}, expected ${index + 1}`);
    }
  });
  return files;
}

/**
 * Applies every pending migration in `dir`, oldest first, and returns the file names it
 * applied (empty when the database was already up to date).
 *
 * Each migration runs in its own transaction under a transaction-level advisory lock, so a
 * second process migrating at the same time waits and then finds nothing left to do. The
 * migration's row is inserted before its SQL runs: even a migrator that skipped the lock
 * would hit the primary key instead of applying the file twice. Migrations therefore cannot
 * use statements that refuse to run in a transaction (`CREATE INDEX CONCURRENTLY`).
 *
 * Refuses to run (throws {@link MigrationError} naming the file) when an applied migration's
 * file is missing or has changed since it was applied: roll forward with a new file instead.
 */
export async function migrate(
  pool: Pool,
  logger?: Logger,
  dir: string = defaultMigrationsDir(),
): Promise<{ applied: string[] }> {
  const files = await readMigrationFiles(dir);
  const client = await pool.connect();
  try {
    await inLockedTransaction(client, () => ensureMigrationsTable(client));
    const applied: string[] = [];
    for (;;) {
      const name = await inLockedTransaction(client, () => applyNext(client, files));
      if (name === null) break;
      logger?.info({ migration: name }, "applied migration");
      applied.push(name);
    }
    return { applied };
  } finally {
    client.release();
  }
}

/** Runs `work` in a transaction that first takes the migration lock; rolls back on error. */
async function inLockedTransaction<T>(client: PoolClient, work: () => Promise<T>): Promise<T> {
  await client.query("begin");
  try {
    await client.query(`set local lock_timeout = ${MIGRATION_LOCK_WAIT_MS_MAX}`);
    await client.query("select pg_advisory_xact_lock($1::bigint)", [MIGRATION_LOCK_KEY]);
    // Migrations wait for application locks as long as they must; only the wait for the
    // migration lock itself is bounded.
    await client.query("set local lock_timeout = default");
    const result = await work();
    await client.query("commit");
    return result;
  } catch (error) {
    await client.query("rollback").catch(() => undefined);
    throw error;
  }
}

/** Creates `schema_migrations` when missing; the caller holds the migration lock. */
async function ensureMigrationsTable(client: PoolClient): Promise<void> {
  const { rows } = await client.query<{ exists: boolean }>(
    "select to_regclass('schema_migrations') is not null as exists",
  );
  if (rows[0]?.exists === true) return;
  await client.query(`
    create table schema_migrations (
      version int primary key,
      name text not null,
      checksum text not null,
      applied_at timestamptz not null default now()
    )`);
}

/**
 * Checks what is applied against the files, then applies the first pending file. Returns its
 * name, or null when nothing is pending. The caller holds the migration lock.
 */
async function applyNext(client: PoolClient, files: readonly MigrationFile[]): Promise<string | null> {
  const { rows } = await client.query<AppliedMigration>(
    "select version, name, checksum from schema_migrations order by version",
  );
  verifyApplied(rows, files);
  const next = files[rows.length];
  if (next === undefined) return null;
  await client.query("insert into schema_migrations (version, name, checksum) values ($1, $2, $3)", [
    next.version,
    next.name,
    next.checksum,
  ]);
  await client.query(next.sql);
  return next.name;
}

/** Throws when an applied migration's file is missing or differs from what was applied. */
function verifyApplied(applied: readonly AppliedMigration[], files: readonly MigrationFile[]): void {
  for (const row of applied) {
    const file = files[row.version - 1];
    if (file === undefined || file.name !== row.name) {
      throw new MigrationError(`migration ${row.name} was applied but its file is missing`);
    }
    if (file.checksum !== row.checksum) {
      throw new MigrationError(
        `migration ${row.name} was edited after it was applied (checksum differs); add a new migration instead`,
      );
    }
  }
}

/**
 * Whether the connected role may apply migrations: it owns `schema_migrations` (or is a member
 * of the role that does, or a superuser), or, on a database never migrated, it may create
 * objects in the current schema. The processes connect as the runtime role, which may not: it
 * must never own the tables, or it could alter or disable the journal's triggers.
 */
export async function mayMigrate(pool: Pool): Promise<boolean> {
  const { rows } = await pool.query<{ may: boolean }>(`
    select case when to_regclass('schema_migrations') is null
                then has_schema_privilege(current_schema(), 'CREATE')
                else pg_has_role((select relowner from pg_class where oid = to_regclass('schema_migrations')), 'USAGE')
           end as may`);
  return rows[0]?.may === true;
}

/** The migration files in `dir` that the database has not applied yet, oldest first. */
export async function pendingMigrations(pool: Pool, dir: string = defaultMigrationsDir()): Promise<string[]> {
  const files = await readMigrationFiles(dir);
  const applied = pool.query<AppliedMigration>("select version, name, checksum from schema_migrations order by version");
  const { rows } = await applied.catch((error: unknown) => {
    // undefined_table: nothing was ever applied.
    if ((error as { code?: unknown }).code === "42P01") return { rows: [] as AppliedMigration[] };
    throw error;
  });
  verifyApplied(rows, files);
  return files.slice(rows.length).map((file) => file.name);
}

/**
 * What a process does at start: migrate when its role may (development, where one URL serves
 * both), and otherwise only check that nothing is pending. A runtime role facing pending
 * migrations refuses to start, naming the first one, rather than run code against an older
 * schema.
 */
export async function migrateIfPermitted(
  pool: Pool,
  logger?: Logger,
  dir: string = defaultMigrationsDir(),
): Promise<{ applied: string[]; permitted: boolean }> {
  if (await mayMigrate(pool)) {
    return { ...(await migrate(pool, logger, dir)), permitted: true };
  }
  const pending = await pendingMigrations(pool, dir);
  if (pending.length > 0) {
    throw new MigrationError(
      `${pending.length} migration(s) pending, first ${pending[0]}, and this database role may not apply them: ` +
        "run `holdfast migrate` with the owner's URL (HOLDFAST_MIGRATE_DATABASE_URL) first",
    );
  }
  logger?.info("database is up to date; migrations are the owner role's job");
  return { applied: [], permitted: false };
}
