/**
 * The faults: each kills one component (SIGKILL, no chance to clean up; PostgreSQL with an
 * immediate shutdown), keeps it down for a moment while the load goes on, starts it again and
 * waits until it serves. The window from the kill until it serves again is recorded, so the
 * report can say how many commands ran under a fault.
 *
 * @module
 */
import { setTimeout as sleep } from "node:timers/promises";

import type { FaultTarget } from "./settings.js";
import type { HoldfastProcesses, NatsTopology, PrivatePostgres } from "./stack.js";

/** After a PostgreSQL restart the ledger must find the database again on its own, within this. */
const LEDGER_RECOVERY_TIMEOUT_MS = 60_000;
const RECOVERY_POLL_MS = 100;

/** One injected fault. */
export interface FaultWindow {
  readonly target: FaultTarget;
  /** What exactly was killed: a process name, or the cluster node. */
  readonly subject: string;
  readonly startMs: number;
  /** When the component served again (for PostgreSQL: when the ledger was ready again). */
  readonly endMs: number;
  /** Set when the fault could not be injected or the component did not come back. */
  readonly error: string | null;
}

/** What the faults act on. */
export interface FaultContext {
  readonly postgres: PrivatePostgres;
  readonly nats: NatsTopology;
  readonly processes: HoldfastProcesses;
  /** True when the ledger answers /readyz (database reachable). */
  readonly ledgerReady: () => Promise<boolean>;
  readonly streamName: string;
  readonly downMs: number;
}

/** Injects one fault and waits for the component to serve again. Never throws: errors are recorded. */
export async function injectFault(target: FaultTarget, ctx: FaultContext): Promise<FaultWindow> {
  const startMs = Date.now();
  let subject: string = target;
  try {
    subject = await inject(target, ctx);
    return { target, subject, startMs, endMs: Date.now(), error: null };
  } catch (err) {
    return { target, subject, startMs, endMs: Date.now(), error: err instanceof Error ? err.message : String(err) };
  }
}

async function inject(target: FaultTarget, ctx: FaultContext): Promise<string> {
  switch (target) {
    case "ledger":
      await ctx.processes.ledger.kill("SIGKILL");
      await sleep(ctx.downMs);
      await ctx.processes.ledger.start();
      return "ledger";
    case "postgres":
      // The ledger and the workers keep running: they must reconnect by themselves.
      await ctx.postgres.restartImmediately(ctx.downMs);
      await waitUntil("the ledger to reach PostgreSQL again", ctx.ledgerReady, LEDGER_RECOVERY_TIMEOUT_MS);
      return "postgres";
    case "nats":
    case "nats-node":
      return ctx.nats.killAndRestart(ctx.downMs, ctx.streamName);
    case "webhooks":
    case "billing-stream":
    case "hold-expiry": {
      const worker = ctx.processes.workers[target];
      await worker.kill("SIGKILL");
      await sleep(ctx.downMs);
      await worker.start();
      return target;
    }
  }
}

async function waitUntil(what: string, check: () => Promise<boolean>, timeoutMs: number): Promise<void> {
  const deadlineMs = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadlineMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(RECOVERY_POLL_MS);
  }
}

/**
 * Injects `targets` one after another, the i-th at `loadStartMs + (i + 1) * loadMs / (n + 1)`
 * (or as soon as the previous one has recovered, when that is later), so the faults are spread
 * over the load and none falls in its last stretch.
 */
export async function runFaultSchedule(targets: readonly FaultTarget[], ctx: FaultContext, loadStartMs: number, loadMs: number): Promise<FaultWindow[]> {
  const windows: FaultWindow[] = [];
  const spacingMs = loadMs / (targets.length + 1);
  for (const [i, target] of targets.entries()) {
    const waitMs = loadStartMs + (i + 1) * spacingMs - Date.now();
    if (waitMs > 0) await sleep(waitMs);
    windows.push(await injectFault(target, ctx));
  }
  return windows;
}
