// Goal: the process plumbing every Holdfast service runs on: one port for HTTP/2 and HTTP/1.1
// clients, health endpoints, CORS for the allow-list only, bounded in-flight calls and request
// size, and a graceful drain that lets running calls finish.
// Method: createServer on port 0 with the health service and a LedgerService whose GetWallet
// waits on a gate the test opens, called over gRPC (HTTP/2), Connect JSON and gRPC-Web
// (HTTP/1.1) and with plain fetch.
import { networkInterfaces } from "node:os";
import { createClient, Code, ConnectError, type ConnectRouter } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import { afterEach, describe, expect, it } from "vitest";
import { Health, HealthCheckResponse_ServingStatus } from "@holdfast/gen/grpc/health/v1/health_pb";
import { ErrorDetailSchema } from "@holdfast/gen/holdfast/v1/errors_pb";
import { LedgerService } from "@holdfast/gen/holdfast/v1/ledger_pb";
import { registerHealth } from "@holdfast/common/health";
import { createServer, type Server } from "@holdfast/common/server";
import { quietLogger } from "./support/ledger.js";

let server: Server | null = null;

afterEach(async () => {
  await server?.drain();
  server = null;
});

function gate() {
  let open!: () => void;
  const opened = new Promise<void>((resolve) => (open = resolve));
  return { open, opened };
}

async function start(options: { maxInFlight?: number; ready?: boolean; readMaxBytes?: number; defaultTimeoutMs?: number } = {}) {
  const slow = gate();
  /** The signal each GetWallet handler was given, in call order. */
  const signals: AbortSignal[] = [];
  const routes = (router: ConnectRouter) => {
    registerHealth(router, { isServing: () => !(server?.isDraining() ?? false), services: [LedgerService.typeName] });
    router.service(LedgerService, {
      async getWallet(_req, ctx) {
        signals.push(ctx.signal);
        await slow.opened;
        return { wallet: { walletId: "w" } };
      },
    });
  };
  server = createServer({
    routes,
    host: "127.0.0.1",
    port: 0,
    corsOrigins: ["https://app.example.com"],
    readMaxBytes: options.readMaxBytes ?? 1024 * 1024,
    maxTimeoutMs: 30_000,
    defaultTimeoutMs: options.defaultTimeoutMs ?? 10_000,
    maxInFlight: options.maxInFlight ?? 100,
    logger: quietLogger,
    readiness: async () => ({ ready: options.ready ?? true, detail: { database: options.ready === false ? "unreachable" : "ok" } }),
    drainTimeoutMs: 5_000,
  });
  const address = await server.listen();
  return { url: `http://127.0.0.1:${address.port}`, slow, signals };
}

function reasonOf(err: unknown): string | undefined {
  return ConnectError.from(err).findDetails(ErrorDetailSchema)[0]?.reason;
}

describe("one port for every protocol", () => {
  it("answers gRPC over HTTP/2, and Connect JSON and gRPC-Web over HTTP/1.1", async () => {
    const { url } = await start();
    const transports = [
      createGrpcTransport({ baseUrl: url }),
      createConnectTransport({ baseUrl: url, httpVersion: "1.1" }),
      createGrpcWebTransport({ baseUrl: url, httpVersion: "1.1" }),
      createConnectTransport({ baseUrl: url, httpVersion: "2" }),
    ];
    for (const transport of transports) {
      const res = await createClient(Health, transport).check({});
      expect(res.status).toBe(HealthCheckResponse_ServingStatus.SERVING);
    }
  });
});

describe("health endpoints", () => {
  it("reports liveness and readiness with its detail", async () => {
    const { url } = await start();
    expect((await fetch(`${url}/healthz`)).status).toBe(200);
    const ready = await fetch(`${url}/readyz`);
    expect(ready.status).toBe(200);
    expect(JSON.stringify(await ready.json())).toContain('"database":"ok"');
  });

  it("answers 503 on /readyz when a dependency is down", async () => {
    const { url } = await start({ ready: false });
    const res = await fetch(`${url}/readyz`);
    expect(res.status).toBe(503);
    expect(JSON.stringify(await res.json())).toContain("unreachable");
  });
});

describe("CORS", () => {
  it("allows only the configured origins", async () => {
    const { url } = await start();
    const preflight = (origin: string) =>
      fetch(`${url}/grpc.health.v1.Health/Check`, {
        method: "OPTIONS",
        headers: { origin, "access-control-request-method": "POST", "access-control-request-headers": "content-type" },
      });
    const allowed = await preflight("https://app.example.com");
    expect(allowed.headers.get("access-control-allow-origin")).toBe("https://app.example.com");
    const refused = await preflight("https://evil.example.com");
    expect(refused.headers.get("access-control-allow-origin")).toBeNull();
  });
});

describe("limits", () => {
  it("refuses calls beyond the in-flight bound with RESOURCE_EXHAUSTED", async () => {
    const { url, slow } = await start({ maxInFlight: 2 });
    const client = createClient(LedgerService, createGrpcTransport({ baseUrl: url }));
    const running = [client.getWallet({ walletId: "a" }), client.getWallet({ walletId: "b" })];
    await new Promise((r) => setTimeout(r, 100));
    const third = await client.getWallet({ walletId: "c" }).catch((e: unknown) => e);
    expect(ConnectError.from(third).code).toBe(Code.ResourceExhausted);
    expect(reasonOf(third)).toBe("OVERLOADED");
    slow.open();
    await Promise.all(running);
  });

  it("refuses a request larger than the read limit", async () => {
    const { url } = await start({ readMaxBytes: 1024 });
    const client = createClient(Health, createGrpcTransport({ baseUrl: url }));
    const err = await client.check({ service: "x".repeat(4096) }).catch((e: unknown) => e);
    expect(ConnectError.from(err).code).toBe(Code.ResourceExhausted);
  });
});

describe("deadlines", () => {
  it("gives a call without a deadline the default one: DEADLINE_EXCEEDED at it, and the handler's signal aborted", async () => {
    const { url, signals } = await start({ defaultTimeoutMs: 200 });
    const client = createClient(LedgerService, createGrpcTransport({ baseUrl: url }));
    const startedMs = Date.now();
    const err = await client.getWallet({ walletId: "a" }).catch((e: unknown) => e);
    expect(ConnectError.from(err).code).toBe(Code.DeadlineExceeded);
    expect(ConnectError.from(err).rawMessage).toBe("deadline of 200 ms exceeded");
    expect(Date.now() - startedMs).toBeGreaterThanOrEqual(150);
    expect(signals[0]?.aborted).toBe(true);
  });

  it("keeps a client's own deadline over the default, and aborts the handler's signal when the client cancels", async () => {
    const { url, slow, signals } = await start({ defaultTimeoutMs: 200 });
    const client = createClient(LedgerService, createGrpcTransport({ baseUrl: url }));
    const stop = new AbortController();
    const canceled = client.getWallet({ walletId: "a" }, { signal: stop.signal, timeoutMs: 5000 }).catch((e: unknown) => e);
    await new Promise((r) => setTimeout(r, 50));
    expect(signals[0]?.aborted).toBe(false);
    stop.abort();
    expect(ConnectError.from(await canceled).code).toBe(Code.Canceled);
    await new Promise((r) => setTimeout(r, 50));
    expect(signals[0]?.aborted).toBe(true);

    const longer = client.getWallet({ walletId: "b" }, { timeoutMs: 5000 });
    await new Promise((r) => setTimeout(r, 400));
    slow.open();
    expect((await longer).wallet?.walletId).toBe("w");
  });

  it("aborts the handler's signal when a client without a deadline cancels", async () => {
    const { url, signals } = await start({ defaultTimeoutMs: 5000 });
    const client = createClient(LedgerService, createGrpcTransport({ baseUrl: url }));
    const stop = new AbortController();
    const canceled = client.getWallet({ walletId: "a" }, { signal: stop.signal }).catch((e: unknown) => e);
    await new Promise((r) => setTimeout(r, 50));
    stop.abort();
    expect(ConnectError.from(await canceled).code).toBe(Code.Canceled);
    await new Promise((r) => setTimeout(r, 50));
    expect(signals[0]?.aborted).toBe(true);
  });
});

describe("drain", () => {
  it("lets a running call finish, refuses new ones, then closes", async () => {
    const { url, slow } = await start();
    const client = createClient(LedgerService, createGrpcTransport({ baseUrl: url }));
    const running = client.getWallet({ walletId: "a" });
    await new Promise((r) => setTimeout(r, 100));
    const drained = server!.drain();
    expect((await fetch(`${url}/readyz`).catch(() => null))?.status ?? 503).toBe(503);
    const late = await createClient(Health, createConnectTransport({ baseUrl: url, httpVersion: "1.1" }))
      .check({})
      .then(() => "served", () => "refused");
    expect(late).toBe("refused");
    slow.open();
    expect((await running).wallet?.walletId).toBe("w");
    await drained;
    server = null;
  });
});

describe("readiness detail", () => {
  // A caller from another host: the server binds every interface and is called on this host's
  // first non-loopback address, so the peer address the server sees is not loopback.
  const outside = Object.values(networkInterfaces())
    .flat()
    .find((info) => info !== undefined && !info.internal && info.family === "IPv4")?.address;

  async function startOutside(ready: boolean) {
    server = createServer({
      routes: (router: ConnectRouter) => registerHealth(router, { isServing: () => true, services: [] }),
      host: "0.0.0.0",
      port: 0,
      corsOrigins: [],
      readMaxBytes: 1024 * 1024,
      maxTimeoutMs: 30_000,
      defaultTimeoutMs: 10_000,
      maxInFlight: 100,
      logger: quietLogger,
      readiness: async () => ({ ready, detail: { outbox: { backlog: 7, lagMs: 1200 } } }),
      readinessDetailAllowed: async (authorization) => authorization === "Bearer admin-key",
      drainTimeoutMs: 5_000,
    });
    const { port } = await server.listen();
    return { outsideUrl: `http://${outside}:${port}`, loopbackUrl: `http://127.0.0.1:${port}` };
  }

  it.skipIf(outside === undefined)("shows backlog and lag only to loopback and admitted callers, with the same status codes", async () => {
    const { outsideUrl, loopbackUrl } = await startOutside(true);
    const anonymous = await fetch(`${outsideUrl}/readyz`);
    expect({ status: anonymous.status, body: await anonymous.json() }).toEqual({ status: 200, body: { status: "ready" } });
    const reader = await fetch(`${outsideUrl}/readyz`, { headers: { authorization: "Bearer reader-key" } });
    expect(await reader.json()).toEqual({ status: "ready" });
    const admin = await fetch(`${outsideUrl}/readyz`, { headers: { authorization: "Bearer admin-key" } });
    expect(await admin.json()).toEqual({ status: "ready", detail: { outbox: { backlog: 7, lagMs: 1200 } } });
    const local = await fetch(`${loopbackUrl}/readyz`);
    expect(await local.json()).toEqual({ status: "ready", detail: { outbox: { backlog: 7, lagMs: 1200 } } });
  });

  it.skipIf(outside === undefined)("keeps 503 for a caller without the detail when not ready", async () => {
    const { outsideUrl } = await startOutside(false);
    const res = await fetch(`${outsideUrl}/readyz`);
    expect({ status: res.status, body: await res.json() }).toEqual({ status: 503, body: { status: "not_ready" } });
  });
});
