import { spawn, type ChildProcess } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { createServer, connect as tcpConnect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";

/** How long a started nats-server may take to accept connections. */
const start_timeout_ms = 10_000;

/** A TCP port nobody listens on right now. */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      server.close(() => resolve(typeof address === "object" && address ? address.port : 0));
    });
  });
}

async function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = tcpConnect({ host: "127.0.0.1", port });
    socket.once("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", () => resolve(false));
  });
}

/**
 * A nats-server with JetStream of its own (from PATH, as the machines of this project have it),
 * on a free port with its own store directory, so a test or a benchmark can stop and restart it
 * without touching anyone else's server.
 */
export async function startNatsServer() {
  const port = await freePort();
  const storeDir = await mkdtemp(join(tmpdir(), "holdfast-nats-"));
  let child: ChildProcess | null = null;

  async function start(): Promise<void> {
    child = spawn("nats-server", ["-js", "-a", "127.0.0.1", "-p", String(port), "-sd", storeDir], { stdio: "ignore" });
    const deadline = Date.now() + start_timeout_ms;
    while (!(await accepts(port))) {
      if (Date.now() > deadline) {
        throw new Error(`nats-server did not start on port ${port}`);
      }
      await sleep(50);
    }
  }

  async function stop(): Promise<void> {
    const running = child;
    child = null;
    if (!running || running.exitCode !== null) {
      return;
    }
    await new Promise<void>((resolve) => {
      running.once("exit", () => resolve());
      running.kill("SIGTERM");
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
    },
  };
}
