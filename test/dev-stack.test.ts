// Goal: `npm start` never claims to run what does not, and stops everything it started:
// Ctrl-C (SIGINT to the whole foreground group), SIGINT and SIGTERM to the npm process each
// drain and stop the ledger, the workers and the nats-server it started, leaving no process
// of the stack alive; a port in use is reported before anything starts; without nats-server
// the stack says so once and does not start (or list) the webhook worker.
// Method: the real `npm start` (the compiled tools/dev-stack/dist/start.js, which
// `npm run build` produces), in a process group of its own, on a database of its own (cloned
// from the migrated template), a free ledger port, a state folder of its own, and NATS_URL on
// a free loopback port, where it starts its own nats-server. The banner lists each process
// with its pid; after the signal the test checks that npm exited and that every listed
// process, and every process in its group, is gone. Only those pids and groups are checked
// and signalled: the machine's shared PostgreSQL and NATS are never touched.
import { spawn, type ChildProcess } from "node:child_process";
import { readFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createLogger, logRepeated, prefersPrettyLogs, REPEAT_WINDOW_MS_DEFAULT } from "@holdfast/common/logger";
import { freePort, portAccepts } from "@holdfast/common/net";
import { findNatsServer } from "@holdfast/dev-servers/nats-server";
import { createTestDatabase, type TestDatabase } from "./support/db.js";

/** Start-up on a busy machine: the ledger, its readiness, the workers' grace period. */
const BANNER_TIMEOUT_MS = 60_000;
/** Workers, then the ledger's drain (HOLDFAST_DRAIN_TIMEOUT_MS below), then nats-server. */
const STOP_TIMEOUT_MS = 30_000;
const TEST_TIMEOUT_MS = 120_000;
const POLL_MS = 100;
/** Long enough for the relay's backoff (200 ms, doubling) to retry several times. */
const RELAY_RETRIES_MS = 3000;

let db: TestDatabase;
let stateDir: string;
const started = new Set<ChildProcess>();
/** Every process a banner listed: each leads a process group of its own. */
const listed = new Set<number>();

beforeAll(async () => {
  db = await createTestDatabase();
  stateDir = await mkdtemp(join(tmpdir(), "holdfast-dev-stack-"));
});
afterAll(async () => {
  // A failed test may leave its stack running: stop it, by its own group only.
  for (const npm of started) signalGroup(npm.pid, "SIGKILL");
  // Only a pid that still runs one of this stack's programs: a pid may be reused once it exited.
  for (const pid of listed) if (isOurs(pid)) signalGroup(pid, "SIGKILL");
  await db?.drop();
  await rm(stateDir, { recursive: true, force: true });
});

/** A running `npm start`, its output so far, and the processes its banner listed. */
interface Stack {
  readonly npm: ChildProcess;
  readonly exited: Promise<number | null>;
  stdout(): string;
  stderr(): string;
}

/** Runs `npm start` in a new process group with `env` on top of this file's settings. */
async function startStack(env: Record<string, string>): Promise<Stack> {
  let stdout = "";
  let stderr = "";
  const npm = spawn("npm", ["start"], {
    cwd: process.cwd(),
    detached: true,
    stdio: ["ignore", "pipe", "pipe"],
    env: {
      PATH: process.env["PATH"],
      HOME: process.env["HOME"],
      DATABASE_URL: db.url,
      HOLDFAST_PORT: String(await freePort()),
      NATS_URL: `nats://127.0.0.1:${await freePort()}`,
      HOLDFAST_STATE_DIR: stateDir,
      HOLDFAST_DRAIN_TIMEOUT_MS: "2000",
      LOG_LEVEL: "warn",
      ...env,
    },
  });
  started.add(npm);
  npm.stdout?.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
  npm.stderr?.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
  const exited = new Promise<number | null>((resolve) => {
    npm.once("exit", (code) => {
      started.delete(npm);
      resolve(code);
    });
  });
  return { npm, exited, stdout: () => stdout, stderr: () => stderr };
}

async function waitForBanner(stack: Stack): Promise<void> {
  const deadline = Date.now() + BANNER_TIMEOUT_MS;
  let hasExited = false;
  void stack.exited.then(() => (hasExited = true));
  while (!stack.stdout().includes("Press Ctrl-C to stop.")) {
    if (hasExited || Date.now() > deadline) {
      throw new Error(`no banner from npm start:\n${stack.stdout()}\n${stack.stderr()}`);
    }
    await new Promise((r) => setTimeout(r, POLL_MS));
  }
}

/** The processes the banner lists, by name, with their pids. */
function listedProcesses(stdout: string): Map<string, number> {
  const line = stdout.split("\n").find((l) => l.trimStart().startsWith("processes")) ?? "";
  const processes = new Map([...line.matchAll(/([a-z-]+) \(pid (\d+)\)/g)].map((m) => [m[1]!, Number(m[2])]));
  for (const pid of processes.values()) listed.add(pid);
  return processes;
}

/** The parent pid of a live process, from /proc. */
function parentOf(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  return Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
}

/** True while the process exists and is not a zombie waiting for its parent. */
function isAlive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2)[0] !== "Z";
  } catch {
    return false;
  }
}

/** True when `pid` runs a program of this checkout or a nats-server on this file's state folder. */
function isOurs(pid: number): boolean {
  try {
    const command = readFileSync(`/proc/${pid}/cmdline`, "utf8");
    return command.includes(process.cwd()) || command.includes(stateDir);
  } catch {
    return false;
  }
}

/** True while any process is in the group `pgid` (each child of the stack leads its own). */
function groupAlive(pgid: number): boolean {
  try {
    process.kill(-pgid, 0);
    return true;
  } catch {
    return false;
  }
}

function signalGroup(pgid: number | undefined, signal: NodeJS.Signals): void {
  if (pgid === undefined) return;
  try {
    process.kill(-pgid, signal);
  } catch {
    // Already gone.
  }
}

/** Waits for npm to exit and then for every listed process and its group to be gone. */
async function expectAllStopped(stack: Stack, pids: readonly number[]): Promise<number | null> {
  const code = await Promise.race([
    stack.exited,
    new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`npm start did not exit:\n${stack.stderr()}`)), STOP_TIMEOUT_MS)),
  ]);
  const deadline = Date.now() + STOP_TIMEOUT_MS;
  const alive = () => pids.filter((pid) => isAlive(pid) || groupAlive(pid));
  while (alive().length > 0 && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, POLL_MS));
  }
  expect(alive(), "processes of the stack still alive").toEqual([]);
  return code;
}

/** Starts a stack, checks what its banner says, and returns it with the pids to watch. */
async function startAndCheckBanner(): Promise<{ stack: Stack; pids: number[] }> {
  const stack = await startStack({});
  await waitForBanner(stack);
  const processes = listedProcesses(stack.stdout());
  expect([...processes.keys()]).toEqual(["nats-server", "ledger", "hold-expiry", "webhooks"]);
  const ledgerPid = processes.get("ledger")!;
  // start.js: npm ran it through `sh -c exec ...`, so it is npm's own child.
  const startPid = parentOf(ledgerPid);
  expect(parentOf(startPid)).toBe(stack.npm.pid);
  return { stack, pids: [startPid, ...processes.values()] };
}

describe("npm start", () => {
  it("shows the dev tenant, the CORS origins and where each server came from", async () => {
    const stack = await startStack({ HOLDFAST_CORS_ORIGINS: "http://localhost:3000" });
    try {
      await waitForBanner(stack);
      const out = stack.stdout();
      const { rows } = await db.pool.query<{ id: string }>("select id from tenants where name = 'dev'");
      expect(out).toMatch(new RegExp(`tenant +dev +\\(id ${rows[0]!.id}\\)`));
      expect(out).toMatch(/cors +browsers may call the API from http:\/\/localhost:3000/);
      expect(out).toMatch(/database +postgres:\/\/\S+ +\(as configured\)/);
      expect(out).toMatch(/nats +nats:\/\/127\.0\.0\.1:\d+ +\(started by npm start, data in /);
      expect(out).toMatch(/billing-stream: not started by npm start/);
      expect(out).toContain('-H "authorization: Bearer $HOLDFAST_API_KEY"');
      const key = readFileSync(join(stateDir, "dev-admin-key"), "utf8").trim();
      expect(out).toContain(`admin key    ${key}`);
    } finally {
      stack.npm.kill("SIGTERM");
      await stack.exited;
    }
  }, TEST_TIMEOUT_MS);

  for (const [how, send] of [
    ["SIGINT to the npm process", (npm: ChildProcess) => npm.kill("SIGINT")],
    ["SIGTERM to the npm process", (npm: ChildProcess) => npm.kill("SIGTERM")],
    // A terminal's Ctrl-C: SIGINT to every process of the foreground group, npm and start.js.
    ["Ctrl-C (SIGINT to the foreground process group)", (npm: ChildProcess) => signalGroup(npm.pid, "SIGINT")],
  ] as const) {
    it(`stops every process of the stack on ${how}`, async () => {
      const { stack, pids } = await startAndCheckBanner();
      send(stack.npm);
      const code = await expectAllStopped(stack, pids);
      expect(code).toBe(0);
      expect(stack.stderr()).toMatch(/SIG(INT|TERM): stopping the stack/);
      // A graceful stop, not the "second Ctrl-C" kill: npm's forwarded copy of the same Ctrl-C is ignored.
      expect(stack.stderr()).not.toContain("killing");
    }, TEST_TIMEOUT_MS);
  }

  it("reports a port in use before anything starts", async () => {
    const blocker: Server = createServer();
    await new Promise<void>((resolve) => blocker.listen(0, "127.0.0.1", resolve));
    const port = (blocker.address() as { port: number }).port;
    const natsPort = await freePort();
    try {
      const stack = await startStack({ HOLDFAST_PORT: String(port), NATS_URL: `nats://127.0.0.1:${natsPort}` });
      const code = await stack.exited;
      expect(code).not.toBe(0);
      expect(stack.stderr()).toContain(`port ${port} is in use; set HOLDFAST_PORT`);
      expect(stack.stdout()).not.toContain("Holdfast is running");
      // Nothing was started: not even the nats-server it would have run.
      expect(await portAccepts(natsPort)).toBe(false);
    } finally {
      blocker.close();
    }
  }, TEST_TIMEOUT_MS);

  it("says once that NATS is missing, and neither starts nor lists the webhook worker", async () => {
    // PATH without the folders that hold nats-server (/sbin may be a link to /usr/sbin).
    const path: string[] = [];
    for (const dir of (process.env["PATH"] ?? "").split(":")) {
      if ((await findNatsServer(dir)) === undefined) path.push(dir);
    }
    expect(path, "node shares a folder with nats-server").toContain(dirname(process.execPath));
    const stack = await startStack({ PATH: path.join(":") });
    try {
      await waitForBanner(stack);
      const out = stack.stdout();
      expect([...listedProcesses(out).keys()]).toEqual(["ledger", "hold-expiry"]);
      expect(out).toMatch(/nats +not running/);
      expect(out).toMatch(/webhooks: not started: it needs NATS/);
      expect(stack.stderr().match(/NATS is not running/g)).toHaveLength(1);
      // The relay keeps failing to reach NATS, and says so once (logRepeated), not every retry.
      await new Promise((r) => setTimeout(r, RELAY_RETRIES_MS));
      expect(stack.stdout().match(/outbox relay: publish failed/g)?.length ?? 0).toBeLessThanOrEqual(1);
    } finally {
      stack.npm.kill("SIGTERM");
      await stack.exited;
    }
  }, TEST_TIMEOUT_MS);
});

describe("logRepeated", () => {
  /** A logger that keeps its lines, parsed. */
  function capture() {
    const lines: Record<string, unknown>[] = [];
    const logger = createLogger("test", "info", { write: (line: string) => void lines.push(JSON.parse(line) as Record<string, unknown>) });
    return { lines, logger };
  }

  it("logs the first failure whole, then one line per window with the count and no stack", () => {
    const { lines, logger } = capture();
    const err = Object.assign(new Error("connect ECONNREFUSED 127.0.0.1:4222"), { code: "ECONNREFUSED" });
    for (let second = 0; second <= 120; second += 5) {
      logRepeated(logger, "warn", { err, retryInMs: 5000 }, "relay: publish failed", { nowMs: second * 1000 });
    }
    expect(lines.map((l) => l["msg"])).toEqual(["relay: publish failed", "relay: publish failed (still failing)", "relay: publish failed (still failing)"]);
    expect((lines[0]!["err"] as { stack: string }).stack).toContain("ECONNREFUSED");
    expect(lines[1]).toMatchObject({ repeated: 12, failures: 13, error: "connect ECONNREFUSED 127.0.0.1:4222", retryInMs: 5000 });
    expect(lines[1]).not.toHaveProperty("err");
    expect(lines[2]).toMatchObject({ repeated: 12, failures: 25 });
  });

  it("starts over for a different error or after a quiet window", () => {
    const { lines, logger } = capture();
    logRepeated(logger, "warn", { err: new Error("a") }, "m", { nowMs: 0 });
    logRepeated(logger, "warn", { err: new Error("a") }, "m", { nowMs: 1000 });
    logRepeated(logger, "warn", { err: new Error("b") }, "m", { nowMs: 2000 });
    logRepeated(logger, "warn", { err: new Error("b") }, "m", { nowMs: 2000 + REPEAT_WINDOW_MS_DEFAULT + 1 });
    expect(lines.map((l) => (l["err"] as { message: string }).message)).toEqual(["a", "b", "b"]);
  });

  it("takes errors with the same code as the same failure, whatever their message says", () => {
    const { lines, logger } = capture();
    const pgError = (message: string) => Object.assign(new Error(message), { code: "57P03" });
    logRepeated(logger, "warn", { err: pgError("the database system is starting up") }, "m", { nowMs: 0 });
    logRepeated(logger, "warn", { err: pgError("the database system is not yet accepting connections") }, "m", { nowMs: 1000 });
    expect(lines).toHaveLength(1);
  });

  it("pretty-prints only on a terminal outside production", () => {
    expect(prefersPrettyLogs({}, true)).toBe(true);
    expect(prefersPrettyLogs({ NODE_ENV: "production" }, true)).toBe(false);
    expect(prefersPrettyLogs({}, false)).toBe(false);
  });
});
