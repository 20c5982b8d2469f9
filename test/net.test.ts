// Goal: a server that a fault test stops and starts again gets a port that nothing else on the
// machine is handed while it is down: restartablePort draws from below the kernel's ephemeral
// range, which port-0 listeners and outgoing connections take from.
// Method: read the range's start as the kernel has it (Linux), draw ports, and listen on each.
import { readFileSync } from "node:fs";
import { createServer } from "node:net";
import { describe, expect, it } from "vitest";
import { freePort, restartablePort } from "@holdfast/common/net";

const RANGE_FILE = "/proc/sys/net/ipv4/ip_local_port_range";

function ephemeralStart(): number {
  try {
    return Number(readFileSync(RANGE_FILE, "utf8").trim().split(/\s+/)[0]);
  } catch {
    return 32768;
  }
}

function listen(port: number): Promise<() => Promise<void>> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(port, "127.0.0.1", () => resolve(() => new Promise((done) => server.close(() => done()))));
  });
}

describe("restartablePort", () => {
  it("gives free ports below the ephemeral range, unlike a port-0 pick", async () => {
    const start = ephemeralStart();
    const ports = await Promise.all(Array.from({ length: 5 }, () => restartablePort()));
    for (const port of ports) {
      expect(port).toBeGreaterThanOrEqual(1024);
      expect(port).toBeLessThan(start);
      const close = await listen(port);
      await close();
    }
    expect(await freePort()).toBeGreaterThanOrEqual(start);
  });
});
