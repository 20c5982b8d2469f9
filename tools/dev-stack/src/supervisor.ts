/**
 * The processes `npm start` runs, and how they stop: in reverse start order (the workers, then
 * the ledger, which drains, then the servers it needs), on Ctrl-C, SIGINT, SIGTERM or SIGHUP,
 * and also when the process that started `npm start` goes away without a signal.
 *
 * Why signals need care here:
 * - npm runs a script through `sh -c`, and forwards SIGINT and SIGTERM only to that shell. A
 *   shell such as dash does not pass them on to its child; SIGTERM kills the shell and
 *   orphans everything, and a shell started in the background ignores SIGINT altogether. The
 *   `start` script therefore `exec`s node, so that npm's forwarded signal reaches this process.
 * - A Ctrl-C on a terminal reaches every process of the foreground group: npm (which forwards
 *   it once more) and this process. The copy that arrives right after the first is the same
 *   Ctrl-C and is ignored; a second Ctrl-C later means "now" and kills what still runs.
 * - The children run in process groups of their own, so that the terminal's Ctrl-C does not
 *   hit the database before the ledger has drained: only this process stops them.
 * - When npm is killed outright (SIGKILL), no signal arrives; the parent process id changes,
 *   which a timer notices.
 *
 * @module
 */
import { spawn } from "node:child_process";
import type { ChildProcess, SpawnOptions } from "node:child_process";
import { setTimeout as sleep } from "node:timers/promises";

/** How one child is stopped gracefully. */
export interface StopPolicy {
  /** The signal that stops it (PostgreSQL: SIGINT is its "fast" shutdown). */
  readonly stopSignal: NodeJS.Signals;
  readonly stopTimeoutMs: number;
}

/** A child process the supervisor started, or adopted, and must stop. */
export interface Managed extends StopPolicy {
  readonly name: string;
  readonly child: ChildProcess;
  /** Resolves with the exit code, or null when a signal ended it. */
  readonly exited: Promise<number | null>;
  hasExited: boolean;
}

/** The signals that stop the stack. SIGHUP: the terminal that ran it was closed. */
const STOP_SIGNALS = ["SIGINT", "SIGTERM", "SIGHUP"] as const;
/**
 * A second signal within this time is the same request delivered twice (by the terminal and
 * by npm forwarding it), not an impatient second Ctrl-C.
 */
const SIGNAL_REPEAT_GRACE_MS = 1000;
/** How often the parent process id is checked. */
const PARENT_CHECK_INTERVAL_MS = 500;

/** What {@link createSupervisor} needs. */
export interface SupervisorOptions {
  /** Where one-line notices go (stderr): which signal arrived, what did not stop in time. */
  readonly notice: (line: string) => void;
}

/**
 * Creates the registry of the stack's children. Call `installStopHandlers()` once, before the
 * first child starts, so that no signal finds a child it does not know.
 */
export function createSupervisor(options: SupervisorOptions) {
  const children: Managed[] = [];
  let stopping: Promise<void> | undefined;
  let firstSignalAtMs = 0;

  /**
   * Starts a child in a process group of its own. Refused once a stop was asked for, so that a
   * signal during start-up does not leave behind a child started after it.
   */
  function start(name: string, command: string, args: readonly string[], spawnOptions: SpawnOptions, stop: StopPolicy): Managed {
    if (stopping !== undefined) {
      throw new Error(`not starting ${name}: the stack is stopping`);
    }
    const child = spawn(command, [...args], { ...spawnOptions, detached: true });
    const exited = new Promise<number | null>((resolve) => {
      child.once("exit", (code) => resolve(code));
      child.once("error", () => resolve(null));
    });
    return adopt(name, child, exited, stop);
  }

  /**
   * Adds a child someone else spawned (the embedded PostgreSQL) to the ones stopped, newest
   * first. One spawned while the stack stops is stopped at once.
   */
  function adopt(name: string, child: ChildProcess, exited: Promise<number | null>, stop: StopPolicy): Managed {
    const managed: Managed = { name, child, exited, hasExited: false, ...stop };
    void exited.then(() => {
      managed.hasExited = true;
    });
    children.push(managed);
    if (stopping !== undefined) {
      stopping = stopping.then(() => stopChild(managed, options.notice));
    }
    return managed;
  }

  /** Stops every child, newest first; safe to call more than once. */
  function stopAll(): Promise<void> {
    stopping ??= (async () => {
      for (const managed of [...children].reverse()) {
        await stopChild(managed, options.notice);
      }
    })();
    return stopping;
  }

  function killAll(signal: NodeJS.Signals): void {
    for (const managed of children) {
      if (!managed.hasExited) managed.child.kill(signal);
    }
  }

  function onSignal(signal: NodeJS.Signals): void {
    if (stopping === undefined) {
      firstSignalAtMs = Date.now();
      options.notice(`\n${signal}: stopping the stack`);
      void stopAll();
      return;
    }
    if (Date.now() - firstSignalAtMs < SIGNAL_REPEAT_GRACE_MS) {
      return;
    }
    options.notice(`${signal} again: killing what still runs`);
    killAll("SIGKILL");
    process.exit(1);
  }

  function installStopHandlers(): void {
    for (const signal of STOP_SIGNALS) {
      process.on(signal, () => onSignal(signal));
    }
    const parentPid = process.ppid;
    const timer = setInterval(() => {
      if (process.ppid !== parentPid && stopping === undefined) {
        options.notice(`\nthe process that started npm start (pid ${parentPid}) is gone: stopping the stack`);
        void stopAll();
      }
    }, PARENT_CHECK_INTERVAL_MS);
    timer.unref();
    // If this process dies unexpectedly, its children must not outlive it.
    process.on("exit", () => killAll("SIGTERM"));
  }

  return {
    start,
    adopt,
    stopAll,
    installStopHandlers,
    /** True once a stop was asked for, by a signal or by the code. */
    isStopping: (): boolean => stopping !== undefined,
    /** The children alive now, in start order. */
    running: (): readonly Managed[] => children.filter((managed) => !managed.hasExited),
  };
}

/** A supervisor, as {@link createSupervisor} makes it. */
export type Supervisor = ReturnType<typeof createSupervisor>;

async function stopChild(managed: Managed, notice: (line: string) => void): Promise<void> {
  if (managed.hasExited) {
    return;
  }
  managed.child.kill(managed.stopSignal);
  const timedOut = await Promise.race([
    managed.exited.then(() => false),
    // Unreferenced, so that a child which stops in time does not leave the script waiting.
    sleep(managed.stopTimeoutMs, undefined, { ref: false }).then(() => true),
  ]);
  if (timedOut) {
    notice(`${managed.name} did not stop within ${managed.stopTimeoutMs} ms; killing it`);
    managed.child.kill("SIGKILL");
    await managed.exited;
  }
}
