/** Small TCP helpers: a free port for a child server, and a probe for a listening one. */
import { connect, createServer } from "node:net";

/** How long a probe waits for a connection before it calls the port closed. */
const PROBE_TIMEOUT_MS = 1000;

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
