import { spawn, type ChildProcess } from "node:child_process";
import { rmSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { portAccepts, restartablePort } from "@holdfast/common/net";

/** How long a started nats-server may take to accept connections. */
const START_TIMEOUT_MS = 10_000;
/** Pause between probes of a starting nats-server. */
const START_POLL_MS = 50;

/** Every server started here and still running, stopped when this process exits. */
const running = new Set<ChildProcess>();
/** The store directories not removed yet, removed when this process exits. */
const storeDirs = new Set<string>();
// A test or benchmark process that dies (an uncaught error, a failed assertion in a hook) must
// not leave its nats-servers or their stores behind: one listener for all of them.
process.once("exit", () => {
  for (const child of running) child.kill("SIGKILL");
  for (const dir of storeDirs) rmSync(dir, { recursive: true, force: true });
});

/** What {@link startNatsServer} takes; everything is optional. */
export interface NatsServerOptions {
  /**
   * More nats-server arguments, such as `--tls --tlscert <file> --tlskey <file>` (and
   * `--tlsverify --tlscacert <file>` to require client certificates).
   */
  readonly args?: readonly string[];
}

/**
 * A nats-server with JetStream of its own (from PATH, as the machines of this project have it),
 * on a free port with its own store directory, so a test or a benchmark can stop and restart it
 * without touching anyone else's server.
 */
export async function startNatsServer(options: NatsServerOptions = {}) {
  const port = await restartablePort();
  const storeDir = await mkdtemp(join(tmpdir(), "holdfast-nats-"));
  storeDirs.add(storeDir);
  let child: ChildProcess | null = null;

  async function start(): Promise<void> {
    const started = spawn("nats-server", ["-js", "-a", "127.0.0.1", "-p", String(port), "-sd", storeDir, ...(options.args ?? [])], { stdio: "ignore" });
    running.add(started);
    started.once("exit", () => running.delete(started));
    child = started;
    const deadline = Date.now() + START_TIMEOUT_MS;
    while (!(await portAccepts(port))) {
      if (Date.now() > deadline) {
        throw new Error(`nats-server did not start on port ${port}`);
      }
      await sleep(START_POLL_MS);
    }
  }

  /**
   * Stops the server: SIGTERM by default (a clean shutdown), or SIGKILL for a fault test that
   * wants the server to die without flushing or telling its clients.
   */
  async function stop(signal: NodeJS.Signals = "SIGTERM"): Promise<void> {
    const running = child;
    child = null;
    if (!running || running.exitCode !== null || running.signalCode !== null) {
      return;
    }
    await new Promise<void>((resolve) => {
      running.once("exit", () => resolve());
      running.kill(signal);
    });
  }

  await start();
  return {
    url: `nats://127.0.0.1:${port}`,
    port,
    start,
    stop,
    async close() {
      await stop();
      await rm(storeDir, { recursive: true, force: true });
      storeDirs.delete(storeDir);
    },
  };
}
