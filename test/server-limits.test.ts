// Goal: a caller without a key cannot exhaust the server (issue 12, findings 2 and 3). Health
// calls stay outside the command budget and their Watch streams are capped per connection and
// overall; every server stream ends at its maximum lifetime; an HTTP/2 body that trickles is
// reset; one connection cannot open more than the stream cap nor buffer more than its body
// bytes; one address cannot open more than its connections; credentials are checked before a
// body is read; a malformed protobuf body is INVALID_ARGUMENT in every protocol.
// Method: createServer on port 0 with the health service and a stub LedgerService, driven by
// connect-es clients, node:http2 requests written by hand (partial bodies, garbage messages) and,
// for the stream cap, HTTP/2 frames written on a raw socket; then the real ledger app on a fresh
// database for the reader's GetWallet under a flood of health watchers and the key check.
import http from "node:http";
import http2 from "node:http2";
import net from "node:net";
import { networkInterfaces } from "node:os";
import { once } from "node:events";
import { setTimeout as sleep } from "node:timers/promises";
import { Code, ConnectError, createClient, type ConnectRouter } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { errorFromJsonBytes } from "@connectrpc/connect/protocol-connect";
import { findTrailerError } from "@connectrpc/connect/protocol-grpc";
import { trailerParse } from "@connectrpc/connect/protocol-grpc-web";
import { afterEach, describe, expect, it } from "vitest";
import { Health, HealthCheckResponse_ServingStatus } from "@holdfast/gen/grpc/health/v1/health_pb";
import { ErrorDetailSchema } from "@holdfast/gen/holdfast/v1/errors_pb";
import { LedgerService } from "@holdfast/gen/holdfast/v1/ledger_pb";
import { ledgerError } from "@holdfast/common/errors";
import { registerHealth } from "@holdfast/common/health";
import {
  createServer,
  HEALTH_WATCHERS_PER_CONNECTION_MAX_DEFAULT,
  HTTP2_STREAMS_PER_CONNECTION_MAX_DEFAULT,
  type Server,
  type ServerOptions,
} from "@holdfast/common/server";
import { quietLogger } from "./support/ledger.js";
import { startTestServer } from "./support/server.js";

/** Field 1, length-delimited, 5 bytes long, but only 1 byte follows: no protobuf parser accepts it. */
const MALFORMED_MESSAGE = Uint8Array.from([0x0a, 0x05, 0x61]);
const GET_WALLET_PATH = "/holdfast.v1.LedgerService/GetWallet";
const WATCH_PATH = "/grpc.health.v1.Health/Watch";

let server: Server | null = null;
const cleanups: (() => unknown)[] = [];

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) {
    await cleanup();
  }
  await server?.drain();
  server = null;
});

/** Calls into the stub LedgerService, so a test can tell which calls reached a handler. */
const served = { getWallet: 0 };

async function start(options: Partial<ServerOptions> = {}) {
  served.getWallet = 0;
  const routes = (router: ConnectRouter) => {
    registerHealth(router, { isServing: () => true, services: [LedgerService.typeName] });
    router.service(LedgerService, {
      getWallet() {
        served.getWallet += 1;
        return { wallet: { walletId: "w" } };
      },
      // Yields once, then waits forever without looking at its signal.
      async *watchWallet() {
        yield { walletId: "w", eventType: "snapshot" };
        await new Promise(() => undefined);
      },
    });
  };
  server = createServer({
    routes,
    host: "127.0.0.1",
    port: 0,
    corsOrigins: [],
    readMaxBytes: 1024 * 1024,
    maxTimeoutMs: 30_000,
    defaultTimeoutMs: 10_000,
    maxInFlight: 100,
    logger: quietLogger,
    readiness: async () => ({ ready: true, detail: {} }),
    drainTimeoutMs: 2000,
    ...options,
  });
  const address = await server.listen();
  return { url: `http://127.0.0.1:${address.port}`, port: address.port };
}

function codeOf(err: unknown): string {
  return Code[ConnectError.from(err).code];
}

function reasonOf(err: unknown): string | undefined {
  return ConnectError.from(err).findDetails(ErrorDetailSchema)[0]?.reason;
}

/** A Health.Watch stream: resolves "open" on its first message, or with the error that ended it. */
function openWatch(transport: ReturnType<typeof createGrpcTransport>, signal: AbortSignal) {
  const messages = createClient(Health, transport).watch({}, { signal })[Symbol.asyncIterator]();
  return messages.next().then(
    () => ({ open: true as const, messages }),
    (err: unknown) => ({ open: false as const, err }),
  );
}

/** A gRPC frame: flags, big-endian length, message. */
function grpcFrame(message: Uint8Array, flags = 0): Buffer {
  const header = Buffer.alloc(5);
  header[0] = flags;
  header.writeUInt32BE(message.byteLength, 1);
  return Buffer.concat([header, message]);
}

async function connectH2(url: string): Promise<http2.ClientHttp2Session> {
  const session = http2.connect(url);
  session.on("error", () => undefined);
  cleanups.push(() => session.destroy());
  await once(session, "connect");
  return session;
}

/** What came back on an HTTP/2 stream: status, trailers and the reset code, once it closed. */
interface H2Outcome {
  readonly status: number | undefined;
  readonly trailers: Headers;
  readonly rstCode: number;
  readonly closedAtMs: number;
}

function grpcRequest(session: http2.ClientHttp2Session, path: string, header: Record<string, string> = {}) {
  const stream = session.request(
    { ":method": "POST", ":path": path, "content-type": "application/grpc", te: "trailers", ...header },
    { endStream: false },
  );
  stream.on("error", () => undefined);
  const outcome = new Promise<H2Outcome>((resolve) => {
    let status: number | undefined;
    const trailers = new Headers();
    stream.on("response", (headers) => {
      status = Number(headers[":status"]);
      // A trailers-only answer carries grpc-status in the headers.
      copyGrpcFields(headers, trailers);
    });
    stream.on("trailers", (headers) => copyGrpcFields(headers, trailers));
    stream.on("data", () => undefined);
    stream.on("close", () => resolve({ status, trailers, rstCode: stream.rstCode ?? 0, closedAtMs: Date.now() }));
  });
  return { stream, outcome };
}

function copyGrpcFields(from: http2.IncomingHttpHeaders, to: Headers): void {
  for (const [name, value] of Object.entries(from)) {
    if (name.startsWith("grpc-") && typeof value === "string") to.set(name, value);
  }
}

describe("health calls stay outside the command budget (finding 2)", () => {
  it("admits more health Watch streams than the in-flight bound, caps them per connection and overall, and a command still runs", async () => {
    const { url } = await start({ maxInFlight: 2, healthWatchersMax: 6, healthWatchersPerConnectionMax: 4 });
    const stop = new AbortController();
    cleanups.push(() => stop.abort());
    // One transport is one HTTP/2 connection.
    const first = createGrpcTransport({ baseUrl: url });
    const second = createGrpcTransport({ baseUrl: url });
    const onFirst = await Promise.all(Array.from({ length: 5 }, () => openWatch(first, stop.signal)));
    const onSecond = await Promise.all(Array.from({ length: 3 }, () => openWatch(second, stop.signal)));
    // The first connection hits its own cap at 4; the second the overall cap at 6 in all.
    expect(onFirst.filter((w) => w.open)).toHaveLength(4);
    expect(onSecond.filter((w) => w.open)).toHaveLength(2);
    for (const refused of [...onFirst, ...onSecond].filter((w) => !w.open)) {
      expect(refused.open ? "" : codeOf(refused.err)).toBe("ResourceExhausted");
      expect(refused.open ? "" : reasonOf(refused.err)).toBe("OVERLOADED");
    }
    // Six open streams, an in-flight bound of two: commands are not starved, nor are checks.
    const ledger = createClient(LedgerService, createGrpcTransport({ baseUrl: url }));
    expect((await ledger.getWallet({ walletId: "w" })).wallet?.walletId).toBe("w");
    const check = await createClient(Health, second).check({});
    expect(check.status).toBe(HealthCheckResponse_ServingStatus.SERVING);
  });

  it("gives back a health watcher's slot when its stream ends", async () => {
    const { url } = await start({ healthWatchersMax: 1 });
    const transport = createGrpcTransport({ baseUrl: url });
    const first = new AbortController();
    expect((await openWatch(transport, first.signal)).open).toBe(true);
    const refused = await openWatch(transport, new AbortController().signal);
    expect(refused.open ? "" : codeOf(refused.err)).toBe("ResourceExhausted");
    first.abort();
    await sleep(200);
    const again = new AbortController();
    cleanups.push(() => again.abort());
    expect((await openWatch(transport, again.signal)).open).toBe(true);
  });

  it("ends every server stream cleanly at its maximum lifetime, even one whose handler ignores its signal", async () => {
    const lifetimeMs = 1000;
    const { url } = await start({ streamLifetimeMsMax: lifetimeMs });
    const transport = createConnectTransport({ baseUrl: url, httpVersion: "2" });
    const started = Date.now();
    const ended = async (messages: AsyncIterable<unknown>) => {
      let count = 0;
      for await (const _ of messages) count += 1;
      return { count, afterMs: Date.now() - started };
    };
    const [health, wallet] = await Promise.all([
      ended(createClient(Health, transport).watch({})),
      ended(createClient(LedgerService, transport).watchWallet({ walletId: "w" })),
    ]);
    for (const stream of [health, wallet]) {
      expect(stream.count).toBe(1);
      expect(stream.afterMs).toBeGreaterThanOrEqual(0.9 * lifetimeMs - 50);
      expect(stream.afterMs).toBeLessThan(lifetimeMs + 1500);
    }
  });
});

describe("HTTP/2 and body limits (finding 3)", () => {
  it("resets an HTTP/2 stream whose body has not arrived within the body read timeout", async () => {
    const { url } = await start({ bodyReadTimeoutMs: 300 });
    const session = await connectH2(url);
    const { stream, outcome } = grpcRequest(session, GET_WALLET_PATH);
    const sentAt = Date.now();
    // Announce a 100-byte message, send 10 bytes of it, then nothing.
    stream.write(grpcFrame(new Uint8Array(100)).subarray(0, 15));
    const result = await outcome;
    expect(result.rstCode).toBe(http2.constants.NGHTTP2_CANCEL);
    expect(result.closedAtMs - sentAt).toBeGreaterThanOrEqual(250);
    expect(result.closedAtMs - sentAt).toBeLessThan(3000);
    expect(served.getWallet).toBe(0);
  });

  it("refuses streams beyond the per-connection cap (about 100) on one connection", async () => {
    let admitted = 0;
    // The key check runs when a call's headers arrive, so it counts the streams the server took.
    const { port } = await start({
      authenticate: async () => {
        admitted += 1;
      },
    });
    const cap = HTTP2_STREAMS_PER_CONNECTION_MAX_DEFAULT;
    const client = await rawH2Client(port);
    const opened = cap + 2;
    client.openStreams(opened, GET_WALLET_PATH);
    await sleep(500);
    expect(admitted).toBe(cap);
    // The streams past the cap were refused: reset, or cut off by GOAWAY.
    const lastServed = client.goawayLastStreamId ?? Number.MAX_SAFE_INTEGER;
    const beyond = Array.from({ length: opened - cap }, (_, i) => 2 * (cap + i) + 1);
    for (const id of beyond) {
      expect(client.resets.has(id) || id > lastServed, `stream ${id} refused`).toBe(true);
    }
  });

  it("refuses a call whose body would pass the connection's buffered-bytes cap", async () => {
    const { url } = await start({ connectionBodyBytesMax: 64 * 1024, readMaxBytes: 40 * 1024 });
    const session = await connectH2(url);
    const chunk = grpcFrame(new Uint8Array(40 * 1024 - 5)).subarray(0, 30 * 1024);
    const calls = [];
    for (let i = 0; i < 3; i += 1) {
      const call = grpcRequest(session, GET_WALLET_PATH);
      call.stream.write(chunk);
      calls.push(call);
      await sleep(100);
    }
    // Two half-sent bodies hold 60 KiB of the 64 KiB; the third cannot fit.
    const third = await calls[2]!.outcome;
    expect(third.trailers.get("grpc-status")).toBe(String(Code.ResourceExhausted));
    expect(findTrailerError(third.trailers)?.findDetails(ErrorDetailSchema)[0]?.reason).toBe("OVERLOADED");
    // Once the first two are cancelled, their bytes are given back and a call fits again.
    for (const call of calls.slice(0, 2)) call.stream.close(http2.constants.NGHTTP2_CANCEL);
    await Promise.all(calls.slice(0, 2).map((call) => call.outcome));
    await sleep(100);
    const fourth = grpcRequest(session, GET_WALLET_PATH);
    fourth.stream.end(grpcFrame(new Uint8Array(0)));
    expect((await fourth.outcome).trailers.get("grpc-status")).toBe("0");
  });

  it("closes connections from one address beyond its cap", async () => {
    const { port } = await start({ connectionsPerAddressMax: 3 });
    const sockets = await Promise.all(Array.from({ length: 4 }, () => openSocket(port)));
    const closed = sockets.map((socket) => once(socket, "close").then(() => true));
    const state = await Promise.race([Promise.all(closed.slice(3)), sleep(2000).then(() => [false])]);
    expect(state).toEqual([true]);
    expect(sockets.slice(0, 3).map((socket) => socket.destroyed)).toEqual([false, false, false]);
    sockets[0]!.destroy();
    await closed[0];
    await sleep(100);
    const again = await openSocket(port);
    await sleep(200);
    expect(again.destroyed).toBe(false);
  });

  it("answers a malformed protobuf body with INVALID_ARGUMENT in gRPC, gRPC-Web and Connect, unary and streaming", async () => {
    const { url } = await start();
    const session = await connectH2(url);
    const outcomes: Record<string, { code: string; reason: string | undefined }> = {};
    for (const path of [GET_WALLET_PATH, WATCH_PATH]) {
      const { stream, outcome } = grpcRequest(session, path);
      stream.end(grpcFrame(MALFORMED_MESSAGE));
      const error = findTrailerError((await outcome).trailers);
      outcomes[`grpc ${path}`] = { code: codeOf(error), reason: reasonOf(error) };
    }
    const web = await fetch(url + GET_WALLET_PATH, {
      method: "POST",
      headers: { "content-type": "application/grpc-web+proto" },
      body: grpcFrame(MALFORMED_MESSAGE),
    });
    const webTrailer = trailerParse(new Uint8Array(await web.arrayBuffer()).subarray(5));
    const webError = findTrailerError(webTrailer);
    outcomes["grpc-web"] = { code: codeOf(webError), reason: reasonOf(webError) };
    const connect = await fetch(url + GET_WALLET_PATH, {
      method: "POST",
      headers: { "content-type": "application/proto" },
      body: MALFORMED_MESSAGE,
    });
    expect(connect.status).toBe(400);
    const connectError = errorFromJsonBytes(new Uint8Array(await connect.arrayBuffer()), undefined, new ConnectError("none"));
    outcomes["connect"] = { code: codeOf(connectError), reason: reasonOf(connectError) };
    const expected = { code: "InvalidArgument", reason: "INVALID_FIELD" };
    expect(outcomes).toEqual({
      [`grpc ${GET_WALLET_PATH}`]: expected,
      [`grpc ${WATCH_PATH}`]: expected,
      "grpc-web": expected,
      connect: expected,
    });
    expect(served.getWallet).toBe(0);
  });

  it("refuses a call without a key before reading its body, whatever size it declares", async () => {
    const { url, port } = await start({
      authenticate: async ({ header }) => {
        if (!header.has("authorization")) {
          throw ledgerError(Code.Unauthenticated, "UNAUTHENTICATED", "missing header authorization: Bearer <api key>");
        }
      },
    });
    // gRPC over HTTP/2: a 900 KB message of which 64 KB are sent, then the client waits.
    const session = await connectH2(url);
    const { stream, outcome } = grpcRequest(session, GET_WALLET_PATH);
    const sentAt = Date.now();
    stream.write(grpcFrame(new Uint8Array(900 * 1024)).subarray(0, 64 * 1024));
    const refused = await outcome;
    expect(refused.trailers.get("grpc-status")).toBe(String(Code.Unauthenticated));
    // The stream is answered and reset at once (NO_ERROR), not left open for the rest.
    expect(refused.closedAtMs - sentAt).toBeLessThan(5000);
    expect(refused.rstCode).toBe(http2.constants.NGHTTP2_NO_ERROR);
    expect(findTrailerError(refused.trailers)?.findDetails(ErrorDetailSchema)[0]?.reason).toBe("UNAUTHENTICATED");
    // Connect JSON over HTTP/1.1, with a content-length above the read limit.
    const answer = await partialHttp1Post(port, GET_WALLET_PATH, 2 * 1024 * 1024, 64 * 1024);
    expect(answer.status).toBe(401);
    expect(JSON.parse(answer.body)).toMatchObject({ code: "unauthenticated" });
    expect(served.getWallet).toBe(0);
  });
});

describe("the ledger app (findings 2 and 3)", () => {
  it("serves a reader's GetWallet while more health watchers than the in-flight bound are open without a key", async () => {
    const s = await startTestServer({ HOLDFAST_MAX_IN_FLIGHT: "4" });
    cleanups.push(() => s.close());
    const writer = s.client(LedgerService, "grpc", s.keys.writer);
    await writer.deposit({ walletId: "alice", asset: "USD", amount: 100n, idempotencyKey: "d-1" });
    const stop = new AbortController();
    cleanups.push(() => stop.abort());
    const perConnection = HEALTH_WATCHERS_PER_CONNECTION_MAX_DEFAULT;
    const transports = Array.from({ length: 3 }, () => createGrpcTransport({ baseUrl: s.app.url }));
    const watches = await Promise.all(
      transports.flatMap((transport) => Array.from({ length: perConnection + 1 }, () => openWatch(transport, stop.signal))),
    );
    expect(watches.filter((w) => w.open)).toHaveLength(3 * perConnection);
    const refused = watches.filter((w) => !w.open);
    expect(refused.map((w) => (w.open ? "" : codeOf(w.err)))).toEqual(["ResourceExhausted", "ResourceExhausted", "ResourceExhausted"]);
    const reader = s.client(LedgerService, "grpc", s.keys.reader);
    const wallet = await reader.getWallet({ walletId: "alice" });
    expect(wallet.wallet?.walletId).toBe("alice");
  });

  it("refuses a large body without a key as UNAUTHENTICATED before it has been sent whole", async () => {
    const s = await startTestServer();
    cleanups.push(() => s.close());
    const session = await connectH2(s.app.url);
    const { stream, outcome } = grpcRequest(session, "/holdfast.v1.LedgerService/Deposit");
    stream.write(grpcFrame(new Uint8Array(900 * 1024)).subarray(0, 64 * 1024));
    const refused = await outcome;
    expect(refused.trailers.get("grpc-status")).toBe(String(Code.Unauthenticated));
    expect(findTrailerError(refused.trailers)?.findDetails(ErrorDetailSchema)[0]?.reason).toBe("UNAUTHENTICATED");
  });
});

describe("the ledger's /readyz from another host (issue 12, Low)", () => {
  const outside = Object.values(networkInterfaces())
    .flat()
    .find((info) => info !== undefined && !info.internal && info.family === "IPv4")?.address;

  it.skipIf(outside === undefined)("shows the readiness detail to an admin key only", async () => {
    const s = await startTestServer({ HOLDFAST_HOST: "0.0.0.0" });
    cleanups.push(() => s.close());
    const readyz = async (key: string | null) => {
      const res = await fetch(`http://${outside}:${s.app.address.port}/readyz`, {
        headers: key === null ? {} : { authorization: `Bearer ${key}` },
      });
      return { status: res.status, body: (await res.json()) as Record<string, unknown> };
    };
    expect(await readyz(null)).toEqual({ status: 200, body: { status: "ready" } });
    expect(await readyz(s.keys.reader)).toEqual({ status: 200, body: { status: "ready" } });
    expect(await readyz(s.keys.admin)).toEqual({ status: 200, body: { status: "ready", detail: { database: "ok", outbox: "disabled" } } });
  });
});

function openSocket(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, "127.0.0.1", () => resolve(socket));
    socket.on("error", reject);
    cleanups.push(() => socket.destroy());
  });
}

/** Sends the headers and `sentBytes` of a body that declares `declaredBytes`, then waits for the answer. */
function partialHttp1Post(port: number, path: string, declaredBytes: number, sentBytes: number) {
  return new Promise<{ status: number; body: string }>((resolve, reject) => {
    const req = http.request({
      host: "127.0.0.1",
      port,
      path,
      method: "POST",
      headers: { "content-type": "application/json", "content-length": String(declaredBytes) },
    });
    req.on("response", (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (text: string) => (body += text));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on("error", reject);
    req.write(Buffer.alloc(sentBytes, " "));
    cleanups.push(() => req.destroy());
  });
}

/**
 * An HTTP/2 client on a raw socket that opens streams without waiting for the server's stream
 * limit, as a hostile client would; node's own client would queue them instead.
 */
async function rawH2Client(port: number) {
  const socket = await openSocket(port);
  const resets = new Map<number, number>();
  const client = { resets, goawayLastStreamId: undefined as number | undefined, openStreams: (_count: number, _path: string) => {} };
  const frame = (type: number, flags: number, streamId: number, payload = Buffer.alloc(0)) => {
    const header = Buffer.alloc(9);
    header.writeUIntBE(payload.length, 0, 3);
    header[3] = type;
    header[4] = flags;
    header.writeUInt32BE(streamId, 5);
    return Buffer.concat([header, payload]);
  };
  // HPACK literals without indexing, with the name from the static table (RFC 7541, appendix A).
  const literal = (nameIndex: number, value: string) => Buffer.concat([Buffer.from([nameIndex, value.length]), Buffer.from(value)]);
  const settingsReceived = new Promise<void>((resolve) => {
    let pending = Buffer.alloc(0);
    socket.on("data", (data: Buffer) => {
      pending = Buffer.concat([pending, data]);
      while (pending.length >= 9 && pending.length >= 9 + pending.readUIntBE(0, 3)) {
        const length = pending.readUIntBE(0, 3);
        const [type, flags] = [pending[3]!, pending[4]!];
        const streamId = pending.readUInt32BE(5) & 0x7fffffff;
        const payload = pending.subarray(9, 9 + length);
        pending = pending.subarray(9 + length);
        if (type === 0x4 && (flags & 0x1) === 0) {
          socket.write(frame(0x4, 0x1, 0));
          resolve();
        } else if (type === 0x3) {
          resets.set(streamId, payload.readUInt32BE(0));
        } else if (type === 0x7) {
          client.goawayLastStreamId = payload.readUInt32BE(0) & 0x7fffffff;
        }
      }
    });
  });
  socket.write(Buffer.concat([Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "latin1"), frame(0x4, 0, 0)]));
  await settingsReceived;
  await sleep(50);
  client.openStreams = (count: number, path: string) => {
    // :method POST (static 3), :scheme http (6), :path (4), :authority (1), content-type (31).
    const block = Buffer.concat([
      Buffer.from([0x83, 0x86]),
      literal(0x04, path),
      literal(0x01, "localhost"),
      Buffer.from([0x0f, 0x10, "application/grpc".length]),
      Buffer.from("application/grpc"),
    ]);
    const frames = Array.from({ length: count }, (_, i) => frame(0x1, 0x4, 2 * i + 1, block));
    socket.write(Buffer.concat(frames));
  };
  return client;
}
