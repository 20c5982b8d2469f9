// Goal: the migration runner applies every migration exactly once, is safe when two
// processes migrate at the same time, and refuses to run when the files on disk no longer
// match what the database applied (edited, missing or misnumbered files).
// Method: real PostgreSQL. Each test gets an empty database; the refusal tests run the real
// migrations from a temporary copy of the migrations folder and then tamper with the copy.
import { appendFile, copyFile, mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import pg from "pg";
import { afterEach, beforeEach, describe, expect, test } from "vitest";
import { defaultMigrationsDir, migrate } from "@holdfast/db/migrate";
import { createTestDatabase } from "./support/db.js";
import type { TestDatabase } from "./support/db.js";

let db: TestDatabase;
let tempDirs: string[] = [];

beforeEach(async () => {
  db = await createTestDatabase({ empty: true });
});

afterEach(async () => {
  await db.drop();
  await Promise.all(tempDirs.map((dir) => rm(dir, { recursive: true, force: true })));
  tempDirs = [];
});

async function migrationNames(dir: string): Promise<string[]> {
  return (await readdir(dir)).filter((name) => name.endsWith(".sql")).sort();
}

async function appliedRows(pool: pg.Pool): Promise<{ version: number; name: string }[]> {
  const { rows } = await pool.query<{ version: number; name: string }>(
    "select version, name from schema_migrations order by version",
  );
  return rows;
}

/** A temporary copy of the real migrations folder, removed after the test. */
async function copyOfMigrations(): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), "holdfast-migrations-"));
  tempDirs.push(dir);
  const source = defaultMigrationsDir();
  for (const name of await migrationNames(source)) {
    await copyFile(path.join(source, name), path.join(dir, name));
  }
  return dir;
}

describe("migrate", () => {
  test("applies every migration to an empty database, in order", async () => {
    const expected = await migrationNames(defaultMigrationsDir());
    expect(expected[0]).toBe("0001_tenants_and_keys.sql");

    const { applied } = await migrate(db.pool);

    expect(applied).toEqual(expected);
    expect((await appliedRows(db.pool)).map((row) => row.name)).toEqual(expected);
    const tables = await db.pool.query("select to_regclass('tenants') as t, to_regclass('api_keys') as k");
    expect(tables.rows[0]).toEqual({ t: "tenants", k: "api_keys" });
  });

  test("a second run applies nothing", async () => {
    await migrate(db.pool);
    const second = await migrate(db.pool);
    expect(second.applied).toEqual([]);
  });

  test("two concurrent migrators both succeed and apply each migration once", async () => {
    const expected = await migrationNames(defaultMigrationsDir());
    // Two pools stand in for two processes: separate sessions, racing for the same lock.
    const pools = [0, 1].map(() => new pg.Pool({ connectionString: db.url, max: 1, connectionTimeoutMillis: 10_000 }));
    try {
      const results = await Promise.all(pools.map((pool) => migrate(pool)));
      const all = results.flatMap((result) => result.applied).sort();
      expect(all).toEqual(expected);
      expect((await appliedRows(db.pool)).map((row) => row.name)).toEqual(expected);
    } finally {
      await Promise.all(pools.map((pool) => pool.end()));
    }
  });

  test("refuses an applied migration that was edited, naming the file", async () => {
    const dir = await copyOfMigrations();
    await migrate(db.pool, undefined, dir);
    await appendFile(path.join(dir, "0001_tenants_and_keys.sql"), "\n-- an innocent-looking edit\n");

    await expect(migrate(db.pool, undefined, dir)).rejects.toThrow(/0001_tenants_and_keys\.sql.*edited/);
  });

  test("refuses when an applied migration's file is missing, naming the file", async () => {
    const dir = await copyOfMigrations();
    await migrate(db.pool, undefined, dir);
    const names = await migrationNames(dir);
    const last = names[names.length - 1] ?? "";
    await rm(path.join(dir, last));

    await expect(migrate(db.pool, undefined, dir)).rejects.toThrow(new RegExp(`${last.replace(".", "\\.")}.*missing`));
  });

  test("refuses a gap in the numbering before applying anything", async () => {
    const dir = await copyOfMigrations();
    const names = await migrationNames(dir);
    const gap = String(names.length + 2).padStart(4, "0");
    await writeFile(path.join(dir, `${gap}_after_a_gap.sql`), "select 1;\n");

    await expect(migrate(db.pool, undefined, dir)).rejects.toThrow(`${gap}_after_a_gap.sql`);
    const exists = await db.pool.query("select to_regclass('schema_migrations') as t");
    expect(exists.rows[0]).toEqual({ t: null });
  });

  test("refuses a file whose name does not follow <number>_<name>.sql", async () => {
    const dir = await copyOfMigrations();
    await writeFile(path.join(dir, "add-wallets.sql"), "select 1;\n");

    await expect(migrate(db.pool, undefined, dir)).rejects.toThrow("add-wallets.sql");
  });

  test("a failing migration leaves no trace, and the ones before it stay applied", async () => {
    const dir = await copyOfMigrations();
    const names = await migrationNames(dir);
    const broken = `${String(names.length + 1).padStart(4, "0")}_broken.sql`;
    await writeFile(path.join(dir, broken), "create table half_done (id int);\nselect no_such_function();\n");

    await expect(migrate(db.pool, undefined, dir)).rejects.toThrow(/no_such_function/);
    expect((await appliedRows(db.pool)).map((row) => row.name)).toEqual(names);
    const halfDone = await db.pool.query("select to_regclass('half_done') as t");
    expect(halfDone.rows[0]).toEqual({ t: null });
  });
});
