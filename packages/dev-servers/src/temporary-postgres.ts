/**
 * A throwaway embedded PostgreSQL for one test or benchmark run: a fresh cluster in a new
 * temporary folder, on a free loopback port, removed again by `stop`. It never touches port
 * 5432 or the `npm start` cluster in .holdfast/pg.
 *
 * A run that is killed outright cannot stop its server. So each folder records the process
 * that owns it, and every start first removes the folders whose owner is gone, stopping their
 * server when it still runs.
 *
 * @module
 */
import { readFileSync } from "node:fs";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";

import { restartablePort } from "@holdfast/common/net";

import { startEmbeddedPostgres, type EmbeddedPostgres, type EmbeddedPostgresOptions } from "./embedded-postgres.js";

/** Temporary cluster folders are named this, then random characters. */
export const TEMPORARY_PG_DIR_PREFIX = "holdfast-pg-";
/** The file in a cluster folder that holds the owning process's pid. */
const OWNER_FILE = "owner.pid";
/** How long a leftover server may take to stop before its folder is left for next time. */
const LEFTOVER_STOP_TIMEOUT_MS = 10_000;
const LEFTOVER_POLL_MS = 100;
/** Most leftover folders examined per start, so a cluttered temp folder cannot stall a run. */
const LEFTOVER_DIRS_MAX = 50;

/** What {@link startTemporaryPostgres} takes; everything is optional. */
export interface TemporaryPostgresOptions {
  /** Where the cluster folder is created; the system's temporary folder by default. */
  readonly parentDir?: string;
  readonly onProgress?: EmbeddedPostgresOptions["onProgress"];
}

/**
 * Starts a fresh cluster for this process; `stop` shuts the server down and deletes the folder.
 * The server stays in this process's group, so a terminal's Ctrl-C ends it with its owner.
 */
export async function startTemporaryPostgres(options: TemporaryPostgresOptions = {}): Promise<EmbeddedPostgres> {
  const parentDir = options.parentDir ?? os.tmpdir();
  await removeLeftovers(parentDir);
  const baseDir = await fs.mkdtemp(path.join(parentDir, TEMPORARY_PG_DIR_PREFIX));
  await fs.writeFile(path.join(baseDir, OWNER_FILE), `${process.pid}\n`);
  const server = await startEmbeddedPostgres({
    baseDir,
    // The fault battery restarts it on this port.
    port: await restartablePort(),
    detached: false,
    ...(options.onProgress === undefined ? {} : { onProgress: options.onProgress }),
  }).catch(async (err: unknown) => {
    await fs.rm(baseDir, { recursive: true, force: true });
    throw err;
  });
  return {
    ...server,
    async stop(timeoutMs?: number) {
      await server.stop(timeoutMs);
      await fs.rm(baseDir, { recursive: true, force: true });
    },
  };
}

/** Removes the cluster folders of runs that ended without stopping their server. */
async function removeLeftovers(parentDir: string): Promise<void> {
  const names = (await fs.readdir(parentDir).catch(() => [] as string[]))
    .filter((name) => name.startsWith(TEMPORARY_PG_DIR_PREFIX))
    .slice(0, LEFTOVER_DIRS_MAX);
  for (const name of names) {
    const baseDir = path.join(parentDir, name);
    const ownerPid = await readPid(path.join(baseDir, OWNER_FILE));
    if (ownerPid !== undefined && isAlive(ownerPid)) continue;
    const dataDir = path.join(baseDir, "data");
    const serverPid = await readPid(path.join(dataDir, "postmaster.pid"));
    if (serverPid !== undefined && isOurPostmaster(serverPid, dataDir) && !(await stopLeftover(serverPid))) continue;
    await fs.rm(baseDir, { recursive: true, force: true });
  }
}

/** The number on the first line of `file`, if any. */
async function readPid(file: string): Promise<number | undefined> {
  const text = await fs.readFile(file, "utf8").catch(() => "");
  const pid = Number.parseInt(text.split("\n")[0] ?? "", 10);
  return Number.isSafeInteger(pid) && pid > 0 ? pid : undefined;
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    // EPERM: it exists but belongs to another user (the server runs as nobody under root).
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

/**
 * True only when `pid` is a postgres started on `dataDir`: a pid from an old file may belong to
 * an unrelated process by now. Where /proc is missing the answer is no, and the folder stays.
 */
function isOurPostmaster(pid: number, dataDir: string): boolean {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").includes(dataDir);
  } catch {
    return false;
  }
}

/** Asks a leftover server for a fast shutdown; true once it is gone. */
async function stopLeftover(pid: number): Promise<boolean> {
  try {
    process.kill(pid, "SIGINT");
  } catch {
    return !isAlive(pid);
  }
  const deadlineMs = Date.now() + LEFTOVER_STOP_TIMEOUT_MS;
  while (Date.now() < deadlineMs) {
    if (!isAlive(pid)) return true;
    await new Promise((resolve) => setTimeout(resolve, LEFTOVER_POLL_MS));
  }
  return false;
}
