/** Small TCP helpers: a free port for a child server, and a probe for a listening one. */
import { readFileSync } from "node:fs";
import { connect, createServer } from "node:net";

/** How long a probe waits for a connection before it calls the port closed. */
const PROBE_TIMEOUT_MS = 1000;
/** Where Linux keeps the range it takes ports from for port 0 and outgoing connections. */
const EPHEMERAL_RANGE_FILE = "/proc/sys/net/ipv4/ip_local_port_range";
/** The start of that range when the file is absent (Linux's default). */
const EPHEMERAL_START_DEFAULT = 32768;
/** How many ports below the ephemeral range a restartable server may take, and tries to find one. */
const RESTARTABLE_SPAN = 10_000;
const RESTARTABLE_TRIES = 50;

/** A TCP port on `host` that nobody listens on right now (the kernel picks it). */
export function freePort(host = "127.0.0.1"): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, host, () => {
      const address = server.address();
      server.close(() => resolve(typeof address === "object" && address !== null ? address.port : 0));
    });
  });
}

/** True when something accepts TCP connections on `host:port` within the probe timeout. */
export function portAccepts(port: number, host = "127.0.0.1", timeoutMs = PROBE_TIMEOUT_MS): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host, port, timeout: timeoutMs });
    const finish = (open: boolean) => {
      socket.destroy();
      resolve(open);
    };
    socket.once("connect", () => finish(true));
    socket.once("timeout", () => finish(false));
    socket.once("error", () => finish(false));
  });
}

/**
 * A free port for a server that is stopped and started again on the same port (a fault test's
 * ledger, workers and nats-server). It is drawn below the kernel's ephemeral range: a port from
 * {@link freePort}, once its server is down, may be handed by the kernel to another process's
 * outgoing connection or port-0 listener, and the restart then fails with EADDRINUSE for as long
 * as that holder lives. The kernel hands out no port below the range on its own.
 */
export async function restartablePort(host = "127.0.0.1"): Promise<number> {
  const start = ephemeralRangeStart();
  const low = Math.max(1024, start - RESTARTABLE_SPAN);
  for (let i = 0; i < RESTARTABLE_TRIES; i++) {
    const port = low + Math.floor(Math.random() * (start - low));
    if (await canListen(port, host)) return port;
  }
  throw new Error(`no free port between ${low} and ${start - 1} after ${RESTARTABLE_TRIES} tries`);
}

function ephemeralRangeStart(): number {
  try {
    const start = Number(readFileSync(EPHEMERAL_RANGE_FILE, "utf8").trim().split(/\s+/)[0]);
    return Number.isInteger(start) && start > 1024 ? start : EPHEMERAL_START_DEFAULT;
  } catch {
    return EPHEMERAL_START_DEFAULT;
  }
}

function canListen(port: number, host: string): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once("error", () => resolve(false));
    server.listen(port, host, () => server.close(() => resolve(true)));
  });
}
