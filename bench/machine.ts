// The machine facts the report starts with: cores, the disk's flush time and the PostgreSQL
// settings that bound a hot row (a commit waits for a WAL flush when synchronous_commit is on).
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { rm } from "node:fs/promises";
import { cpus, tmpdir } from "node:os";
import { join } from "node:path";
import type pg from "pg";

const PG_TEST_FSYNC_PATHS = ["/usr/lib/postgresql/15/bin/pg_test_fsync", "/usr/lib/postgresql/16/bin/pg_test_fsync", "/usr/lib/postgresql/17/bin/pg_test_fsync"];
/** Seconds per pg_test_fsync test; only the first few tests run (see measureFdatasyncUs). */
const FSYNC_TEST_SECONDS = 1;
const FSYNC_TIMEOUT_MS = 20_000;
const REPORTED_SETTINGS = ["synchronous_commit", "shared_buffers", "max_connections", "wal_sync_method", "fsync", "commit_delay", "wal_buffers"];

/**
 * Microseconds per fdatasync of one 8 kB write, from pg_test_fsync on the machine's temporary
 * directory (the same disk as PostgreSQL's data here; elsewhere it is an estimate). The tool
 * is stopped as soon as its fdatasync line is out, after about two seconds. Null when there is
 * no pg_test_fsync.
 */
export async function measureFdatasyncUs(): Promise<number | null> {
  const tool = PG_TEST_FSYNC_PATHS.find((p) => existsSync(p));
  if (!tool) return null;
  const file = join(tmpdir(), `holdfast-bench-fsync-${process.pid}`);
  const child = spawn(tool, ["-s", String(FSYNC_TEST_SECONDS), "-f", file], { stdio: ["ignore", "pipe", "ignore"] });
  const found = await new Promise<number | null>((resolve) => {
    let out = "";
    const timer = setTimeout(() => resolve(null), FSYNC_TIMEOUT_MS);
    child.stdout.on("data", (chunk: Buffer) => {
      out += chunk.toString();
      const match = /^\s*fdatasync\s+[\d.]+ ops\/sec\s+(\d+) usecs\/op/m.exec(out);
      if (match) {
        clearTimeout(timer);
        resolve(Number(match[1]));
      }
    });
    child.on("exit", () => {
      clearTimeout(timer);
      resolve(null);
    });
  });
  child.kill("SIGTERM");
  await rm(file, { force: true });
  return found;
}

export async function machineFacts(pool: pg.Pool, fdatasyncUs: number | null): Promise<Record<string, string>> {
  // current_setting shows values with their units, as SHOW does (128MB, not 16384).
  const settings = await pool.query<{ name: string; value: string }>(
    "select name, current_setting(name) as value from unnest($1::text[]) name",
    [REPORTED_SETTINGS],
  );
  const version = await pool.query<{ v: string }>("select current_setting('server_version') as v");
  const facts: Record<string, string> = {
    cores: String(cpus().length),
    cpu: cpus()[0]?.model ?? "?",
    node: process.version,
    postgres: version.rows[0]?.v ?? "?",
    "fdatasync (pg_test_fsync, one 8 kB write)": fdatasyncUs === null ? "not measured (no pg_test_fsync)" : `${fdatasyncUs} µs`,
  };
  for (const r of settings.rows) facts[r.name] = r.value;
  return facts;
}
