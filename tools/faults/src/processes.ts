/**
 * The Holdfast processes of a battery run, each started from its compiled entry point exactly as
 * deployed (`services/ledger/dist/main.js`, `workers/<name>/dist/main.js`), configured only by
 * environment variables, with its output in a log file of the run. The battery kills them with
 * SIGKILL and starts them again; a process that exits when nobody killed it is recorded, because
 * surviving a fault without a restart (PostgreSQL's, NATS's) is part of what is tested.
 *
 * @module
 */
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, openSync, closeSync } from "node:fs";
import { fileURLToPath } from "node:url";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";

/** The repository root: this file runs from tools/faults/dist/ (or src/ under vitest). */
export const REPO_ROOT = fileURLToPath(new URL("../../../", import.meta.url));

const READY_POLL_MS = 100;
/** Restarts after crashes per process and run; a crash loop beyond it is left alone. */
const CRASH_RESTARTS_MAX = 10;
/** How long a SIGTERM'd process may drain before it is killed. */
const STOP_TIMEOUT_MS = 15_000;

/** How to run one process. */
export interface ProcessSpec {
  readonly name: string;
  /** The entry point, relative to the repository root. */
  readonly script: string;
  /** The whole environment of the process: nothing is inherited but what is given here. */
  readonly env: Readonly<Record<string, string>>;
  readonly logFile: string;
  /** Resolves true once the process serves (its /readyz or /healthz answers). */
  readonly ready: () => Promise<boolean>;
  readonly readyTimeoutMs: number;
}

/** An exit that the battery did not cause. */
export interface UnexpectedExit {
  readonly name: string;
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly atMs: number;
}

/** A process the battery starts, kills and starts again. */
export interface ManagedProcess {
  readonly name: string;
  readonly logFile: string;
  /** Starts the process and resolves once it is ready; fails when it exits first or takes too long. */
  start(): Promise<void>;
  /** Sends `signal` (SIGKILL by default) and resolves once the process is gone. */
  kill(signal?: NodeJS.Signals): Promise<void>;
  /** SIGTERM, then SIGKILL after {@link STOP_TIMEOUT_MS}; the process is not restarted after this. */
  stop(): Promise<void>;
  running(): boolean;
}

/** Fails early, with the fix, when the entry point has not been compiled. */
export function assertBuilt(script: string): void {
  if (!existsSync(path.join(REPO_ROOT, script))) {
    throw new Error(`${script} is missing: run \`npx tsc -b\` (or npm run build) first`);
  }
}

/** One run of a process: the child, its exit, and whether the battery asked for that exit. */
interface Incarnation {
  readonly child: ChildProcess;
  readonly exited: Promise<void>;
  /** Marks the coming exit as the battery's doing, so it is not reported as a crash. */
  expectExit(): void;
}

/**
 * Creates a process handle; nothing runs until `start`. Like a supervisor (systemd, a
 * Kubernetes restart policy), it starts a process that exited by itself again after
 * `restartDelayMs`, until `stop`; `onUnexpectedExit` hears of every such exit, which the
 * battery reports as a problem of its own.
 */
export function createManagedProcess(
  spec: ProcessSpec,
  hooks: { onUnexpectedExit(exit: UnexpectedExit): void; restartDelayMs: number },
): ManagedProcess {
  let current: Incarnation | null = null;
  let supervising = true;
  const isRunning = (c: Incarnation | null): c is Incarnation => c !== null && c.child.exitCode === null && c.child.signalCode === null;

  let crashes = 0;
  function onCrash(exit: UnexpectedExit): void {
    hooks.onUnexpectedExit(exit);
    // A process that keeps dying is left dead after a few restarts: the checker reports the rest.
    if (++crashes > CRASH_RESTARTS_MAX) return;
    setTimeout(() => {
      if (supervising) void handle.start().catch(() => undefined);
    }, hooks.restartDelayMs);
  }

  async function signalAndWait(signal: NodeJS.Signals, timeoutMs: number): Promise<void> {
    const running = current;
    if (!isRunning(running)) return;
    running.expectExit();
    running.child.kill(signal);
    const timedOut = await Promise.race([running.exited.then(() => false), sleep(timeoutMs, true, { ref: false })]);
    if (timedOut) {
      running.child.kill("SIGKILL");
      await running.exited;
    }
  }

  const handle: ManagedProcess = {
    name: spec.name,
    logFile: spec.logFile,
    running: () => isRunning(current),
    async start() {
      if (isRunning(current)) return;
      current = spawnIncarnation(spec, onCrash);
      await waitReady(spec, current.child);
    },
    kill: (signal: NodeJS.Signals = "SIGKILL") => signalAndWait(signal, STOP_TIMEOUT_MS),
    async stop() {
      supervising = false;
      await signalAndWait("SIGTERM", STOP_TIMEOUT_MS);
    },
  };
  return handle;
}

/** Every child still running, killed when this process exits however it exits (a test timeout included). */
const LIVE_CHILDREN = new Set<ChildProcess>();
process.once("exit", () => {
  for (const child of LIVE_CHILDREN) child.kill("SIGKILL");
});

function spawnIncarnation(spec: ProcessSpec, onUnexpectedExit: (exit: UnexpectedExit) => void): Incarnation {
  const log = openSync(spec.logFile, "a");
  try {
    const child = spawn(process.execPath, [path.join(REPO_ROOT, spec.script)], { env: { ...spec.env }, stdio: ["ignore", log, log] });
    let expected = false;
    LIVE_CHILDREN.add(child);
    const exited = new Promise<void>((resolve) => {
      child.once("exit", (code, signal) => {
        LIVE_CHILDREN.delete(child);
        if (!expected) onUnexpectedExit({ name: spec.name, code, signal, atMs: Date.now() });
        resolve();
      });
      // A spawn failure is followed by no exit event: count it as one.
      child.once("error", () => resolve());
    });
    return {
      child,
      exited,
      expectExit() {
        expected = true;
      },
    };
  } finally {
    // The child holds its own copy of the descriptor.
    closeSync(log);
  }
}

async function waitReady(spec: ProcessSpec, child: ChildProcess): Promise<void> {
  const gone = () => child.exitCode !== null || child.signalCode !== null;
  const deadlineMs = Date.now() + spec.readyTimeoutMs;
  while (Date.now() < deadlineMs) {
    if (gone()) throw new Error(`${spec.name} exited while starting; see ${spec.logFile}`);
    if (await spec.ready()) return;
    await sleep(READY_POLL_MS);
  }
  throw new Error(`${spec.name} was not ready within ${spec.readyTimeoutMs} ms; see ${spec.logFile}`);
}
