/**
 * One RPC server on one TCP port for every client Holdfast has: gRPC clients over HTTP/2
 * cleartext (h2c), Connect over HTTP/2, and browsers over HTTP/1.1 (Connect JSON, gRPC-Web).
 *
 * Node has no server that speaks both h2c and HTTP/1.1 on one port, so a plain TCP server
 * accepts each connection, reads just enough bytes to see whether they start with the HTTP/2
 * connection preface, puts them back, and hands the socket to an HTTP/2 or an HTTP/1.1 server
 * that never listens on its own. Both run the same Connect handler, so every protocol sees the
 * same routes, limits and interceptors. With a certificate configured the port speaks TLS instead,
 * and ALPN picks the server (tls.ts).
 *
 * What a caller without a key can hold is bounded: connections per address, streams per
 * connection, request-body bytes per connection and the time to send a body; credentials are
 * checked before a body is read (rpc-adapter.ts); health calls stay outside the command budget
 * and every stream has a maximum lifetime (call-admission.ts). See docs/security.md.
 *
 * @module
 */
import { setMaxListeners } from "node:events";
import http from "node:http";
import http2 from "node:http2";
import net from "node:net";
import { setTimeout as sleep } from "node:timers/promises";

import type tls from "node:tls";

import { Code, ConnectError, cors } from "@connectrpc/connect";
import type { ConnectRouter, Interceptor } from "@connectrpc/connect";
import { compressionBrotli, compressionGzip } from "@connectrpc/connect-node";
import type { Logger } from "pino";

import { admissionInterceptor, onAbort, type AdmissionState } from "./call-admission.js";
import { ledgerError } from "./errors.js";
import { malformedBodyInterceptor } from "./malformed-body.js";
import {
  answerMetrics,
  createRpcMetrics,
  gaugeOf,
  recordRefusal,
  rpcMetricsInterceptor,
  type MetricsEndpoint,
  type RpcMetrics,
} from "./metrics.js";
import { createRpcAdapter, type Authenticate } from "./rpc-adapter.js";
import { resolveServerLimits, type ServerLimitOptions, type ServerLimits } from "./server-limits.js";
import type { StaticFiles } from "./static-files.js";
import { createTlsTerminator, type SecureProtocol, type TlsOptions, type TlsTerminator } from "./tls.js";

export type { Authenticate, AuthenticationRequest } from "./rpc-adapter.js";
export * from "./server-limits.js";
export {
  TLS_ALPN_PROTOCOLS,
  TLS_RELOAD_SIGNAL_DEFAULT,
  TLS_WATCH_INTERVAL_MS_DEFAULT,
  TLS_WATCH_INTERVAL_MS_MAX,
  TLS_WATCH_INTERVAL_MS_MIN,
  type TlsOptions,
} from "./tls.js";

/** What `/readyz` reports: whether the process can serve, and why (shown to operators). */
export interface Readiness {
  readonly ready: boolean;
  readonly detail: Record<string, unknown>;
}

/**
 * Options for {@link createServer}. The transport limits ({@link ServerLimitOptions}) are
 * optional; each left out takes its named default from server-limits.ts.
 */
export interface ServerOptions extends ServerLimitOptions {
  /** Registers the services, e.g. `(router) => { registerHealth(router, ...); }`. */
  readonly routes: (router: ConnectRouter) => void;
  readonly host: string;
  /** The TCP port; 0 picks a free one, which `listen()` reports. */
  readonly port: number;
  /** Browser origins allowed by CORS; `*` allows any; empty allows none. */
  readonly corsOrigins: readonly string[];
  /** Largest request message accepted, in bytes. */
  readonly readMaxBytes: number;
  /** Longest deadline a client may ask for; longer ones are refused with INVALID_ARGUMENT. */
  readonly maxTimeoutMs: number;
  /** Deadline for unary calls that send none. Streams get none: they are meant to last. */
  readonly defaultTimeoutMs: number;
  /** Most concurrent calls; more get RESOURCE_EXHAUSTED with reason OVERLOADED. */
  readonly maxInFlight: number;
  /** Interceptors run inside the server's own admission and deadline interceptors. */
  readonly interceptors?: readonly Interceptor[];
  readonly logger: Logger;
  /** Asked on every `/readyz`, bounded by {@link READINESS_TIMEOUT_MS}. */
  readonly readiness: () => Promise<Readiness>;
  /** How long `drain()` lets in-flight calls finish before it closes connections. */
  readonly drainTimeoutMs: number;
  /**
   * Checks credentials from the headers before the body of any call outside the health service
   * is read; without it, bodies are read before the interceptors run.
   */
  readonly authenticate?: Authenticate;
  /**
   * Whether a `/readyz` caller from outside this host may see the readiness detail (backlog,
   * lag), given its `authorization` header. Loopback callers always see it; without this
   * option, nobody else does.
   */
  readonly readinessDetailAllowed?: (authorization: string) => Promise<boolean>;
  /** Serve TLS instead of cleartext on the port (docs/security.md, "TLS and mTLS"). */
  readonly tls?: TlsOptions | null;
  /**
   * Prometheus metrics: `/metrics` on this port (behind the endpoint's token, if it has one),
   * and the RPC and in-flight metrics of this server in the endpoint's registry
   * (docs/operations.md). Without it, `/metrics` is not served.
   */
  readonly metrics?: ServerMetricsOptions;
  /** Static files served on this port without a key (the web console, docs/console.md). */
  readonly staticFiles?: StaticFiles;
}

/** The server's metrics: where they go, and who may read them. */
export interface ServerMetricsOptions extends MetricsEndpoint {
  /**
   * Interceptors that record metrics of the calls that passed every other check (the ledger's
   * commands by outcome); they run innermost, after {@link ServerOptions.interceptors}.
   */
  readonly interceptors?: readonly Interceptor[];
}

/** The address a server is bound to. */
export interface BoundAddress {
  readonly host: string;
  readonly port: number;
}

/** A server made by {@link createServer}. */
export interface Server {
  /** Binds and starts accepting; resolves with the bound address (the real port for port 0). */
  listen(): Promise<BoundAddress>;
  /**
   * Stops gracefully: not ready, no new connections or calls, in-flight unary calls finish
   * (up to `drainTimeoutMs`), streams are ended with UNAVAILABLE (reason DRAINING), then every
   * remaining connection is closed. Resolves when nothing is left open; calling it again
   * returns the same promise.
   */
  drain(): Promise<void>;
  /** The bound address, or undefined before `listen()` has resolved. */
  address(): BoundAddress | undefined;
  /** Whether `drain()` has started; health checks report NOT_SERVING from then on. */
  isDraining(): boolean;
  /**
   * Reads the TLS files again for new connections (SIGHUP and file changes do the same). Rejects,
   * keeping the current certificate, if they do not load; a server without TLS resolves at once.
   */
  reloadTls(): Promise<void>;
}

/** The bytes every HTTP/2 client sends first (RFC 9113 section 3.4). */
export const HTTP2_PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "latin1");

/** A connection that has not shown its protocol within this time is closed. */
export const PREFACE_WAIT_MS = 10_000;
/** The longest `/readyz` waits for the readiness callback before answering 503. */
export const READINESS_TIMEOUT_MS = 2000;
const CONNECTIONS_MAX = 10_000;
const LISTEN_BACKLOG = 511;
const HEADER_BYTES_MAX = 16 * 1024;
// Responses are bounded by page sizes in the API; this only stops a runaway response.
const WRITE_MAX_BYTES = 16 * 1024 * 1024;
// Compressing small messages costs more CPU than it saves on the wire.
const COMPRESS_MIN_BYTES = 1024;
const HTTP1_HEADERS_TIMEOUT_MS = 10_000;
const HTTP1_KEEP_ALIVE_TIMEOUT_MS = 5000;
const HTTP1_TIMEOUT_CHECK_INTERVAL_MS = 1000;
const HTTP2_SESSION_MEMORY_MB = 10;
const HTTP2_SESSION_IDLE_TIMEOUT_MS = 5 * 60_000;
const CORS_MAX_AGE_SECONDS = 7200;
// Part of the drain budget kept back for ended streams to send their final status.
const STREAM_END_GRACE_MS = 1000;
const DRAIN_POLL_MS = 50;

// The API key travels in `authorization`, which Connect's list leaves to the application.
const CORS_ALLOWED_HEADERS = [...cors.allowedHeaders, "Authorization"].join(", ");
const CORS_ALLOWED_METHODS = cors.allowedMethods.join(", ");
const CORS_EXPOSED_HEADERS = cors.exposedHeaders.join(", ");

type NodeRequest = http.IncomingMessage | http2.Http2ServerRequest;
type NodeResponse = http.ServerResponse | http2.Http2ServerResponse;

/** Mutable state shared by the connection router, the interceptors and `drain()`. */
interface ServerState extends AdmissionState {
  readonly limits: ServerLimits;
  readonly sockets: Set<net.Socket>;
  /** Sockets not yet handed to the HTTP/1.1 or HTTP/2 server (sniffing or in a TLS handshake). */
  readonly sniffing: Set<net.Socket>;
  readonly sessions: Set<http2.ServerHttp2Session>;
  /** Open connections per remote address. */
  readonly addresses: Map<string, number>;
  readonly shutdown: AbortController;
}

/** The HTTP servers connections are handed to once their protocol is known. */
interface ProtocolServers {
  readonly h1: http.Server;
  readonly h2: http2.Http2Server;
}

/**
 * Creates the server; nothing is bound until `listen()`. The caller owns the process signals
 * and calls `drain()` on SIGTERM.
 */
export function createServer(options: ServerOptions): Server {
  const limits = resolveServerLimits(options, options.readMaxBytes);
  const state: ServerState = {
    draining: false,
    unaryInFlight: 0,
    streamsInFlight: 0,
    healthWatchers: 0,
    limits,
    sockets: new Set(),
    sniffing: new Set(),
    sessions: new Set(),
    addresses: new Map(),
    shutdown: new AbortController(),
  };
  // Connect links every call's signal to the shutdown signal, so it has one listener per call in
  // flight; Node warns of a leak past 10. Calls beyond the bounds are refused, but they too are
  // linked until refused, hence the headroom.
  setMaxListeners(2 * (options.maxInFlight + limits.healthWatchersMax), state.shutdown.signal);
  const rpcMetrics = options.metrics === undefined ? undefined : registerServerMetrics(options.metrics, state);
  const handler = createHttpHandler(options, state, rpcMetrics);
  const servers: ProtocolServers = { h1: createHttp1Server(handler, limits), h2: createHttp2Server(handler, state) };
  const terminator = options.tls ? createTerminator(options.tls, state, servers, options.logger) : undefined;
  const tcp = net.createServer({ allowHalfOpen: true, pauseOnConnect: false, noDelay: true });
  tcp.maxConnections = CONNECTIONS_MAX;
  tcp.on("connection", (socket) => acceptConnection(socket, state, servers, terminator, options.logger));
  tcp.on("error", (err) => options.logger.error({ err }, "server socket failed"));
  let drained: Promise<void> | undefined;
  const address = (): BoundAddress | undefined => boundAddress(tcp);
  return {
    listen: async () => {
      await terminator?.start();
      return listen(tcp, options);
    },
    drain: () => (drained ??= drain(options, state, { tcp, ...servers }, terminator)),
    address,
    isDraining: () => state.draining,
    reloadTls: async () => terminator?.reload(),
  };
}

/** The TLS side of the port: each secured connection goes to the server ALPN chose. */
function createTerminator(settings: TlsOptions, state: ServerState, servers: ProtocolServers, logger: Logger): TlsTerminator {
  return createTlsTerminator({
    tls: settings,
    handshakeTimeoutMs: PREFACE_WAIT_MS,
    logger,
    onSecure: (secure: tls.TLSSocket, plain: net.Socket | undefined, protocol: SecureProtocol) => {
      if (plain !== undefined) {
        state.sniffing.delete(plain);
      }
      secure.on("error", (err) => logger.debug({ err }, "client connection failed"));
      handOver(secure, protocol, servers);
    },
  });
}

function boundAddress(tcp: net.Server): BoundAddress | undefined {
  const info = tcp.address();
  return info !== null && typeof info === "object" ? { host: info.address, port: info.port } : undefined;
}

function listen(tcp: net.Server, options: ServerOptions): Promise<BoundAddress> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error): void => reject(err);
    tcp.once("error", onError);
    tcp.listen({ host: options.host, port: options.port, backlog: LISTEN_BACKLOG, exclusive: true }, () => {
      tcp.off("error", onError);
      const bound = boundAddress(tcp);
      const transport = options.tls ? "TLS" : "cleartext";
      options.logger.info({ address: bound, transport }, "listening for gRPC, gRPC-Web and Connect");
      resolve(bound ?? { host: options.host, port: options.port });
    });
  });
}

/** An HTTP/1.1 server that is only ever handed sockets, never bound. */
function createHttp1Server(handler: (req: NodeRequest, res: NodeResponse) => void, limits: ServerLimits): http.Server {
  const server = http.createServer(
    {
      headersTimeout: HTTP1_HEADERS_TIMEOUT_MS,
      requestTimeout: Math.max(limits.bodyReadTimeoutMs, HTTP1_HEADERS_TIMEOUT_MS),
      keepAliveTimeout: HTTP1_KEEP_ALIVE_TIMEOUT_MS,
      connectionsCheckingInterval: HTTP1_TIMEOUT_CHECK_INTERVAL_MS,
      maxHeaderSize: HEADER_BYTES_MAX,
      requireHostHeader: true,
      noDelay: true,
    },
    handler,
  );
  // Node's HTTP server starts tracking connections (for headersTimeout, requestTimeout and
  // closeIdleConnections) only on 'listening', which an unbound server never emits by itself.
  server.emit("listening");
  return server;
}

/** An HTTP/2 server that is only ever handed sockets; it records its sessions for drain. */
function createHttp2Server(
  handler: (req: NodeRequest, res: NodeResponse) => void,
  state: ServerState,
): http2.Http2Server {
  const server = http2.createServer(
    {
      maxSessionMemory: HTTP2_SESSION_MEMORY_MB,
      settings: {
        maxConcurrentStreams: state.limits.http2StreamsPerConnectionMax,
        maxHeaderListSize: HEADER_BYTES_MAX,
      },
    },
    handler,
  );
  server.on("session", (session) => {
    state.sessions.add(session);
    session.once("close", () => state.sessions.delete(session));
    // An idle session gets GOAWAY; streams still open on it may finish.
    session.setTimeout(HTTP2_SESSION_IDLE_TIMEOUT_MS, () => session.close());
    if (state.draining) {
      session.close();
    }
  });
  return server;
}

/**
 * Tracks a new connection and routes it: through the TLS handshake when TLS is on, else once
 * its first bytes show the protocol. A connection past its address's cap is closed at once.
 */
function acceptConnection(
  socket: net.Socket,
  state: ServerState,
  servers: ProtocolServers,
  terminator: TlsTerminator | undefined,
  logger: Logger,
): void {
  // Resets and half-written requests are routine on the internet; they are not our failures.
  socket.on("error", (err) => logger.debug({ err }, "client connection failed"));
  if (!admitAddress(socket, state)) {
    logger.debug({ address: socket.remoteAddress }, "too many connections from one address; closed");
    socket.destroy();
    return;
  }
  state.sockets.add(socket);
  state.sniffing.add(socket);
  socket.once("close", () => {
    state.sockets.delete(socket);
    state.sniffing.delete(socket);
  });
  if (terminator !== undefined) {
    terminator.accept(socket);
    return;
  }
  sniffProtocol(socket, state, servers);
}

/** Counts the connection against its remote address, or returns false when that is full. */
function admitAddress(socket: net.Socket, state: ServerState): boolean {
  const address = normaliseAddress(socket.remoteAddress);
  const open = state.addresses.get(address) ?? 0;
  if (open >= state.limits.connectionsPerAddressMax) {
    return false;
  }
  state.addresses.set(address, open + 1);
  socket.once("close", () => {
    const left = (state.addresses.get(address) ?? 1) - 1;
    if (left > 0) {
      state.addresses.set(address, left);
    } else {
      state.addresses.delete(address);
    }
  });
  return true;
}

/** An IPv4 peer on a dual-stack socket shows as `::ffff:a.b.c.d`; count it as `a.b.c.d`. */
function normaliseAddress(address: string | undefined): string {
  return address?.startsWith("::ffff:") === true && address.includes(".") ? address.slice("::ffff:".length) : address ?? "";
}

/** Waits for enough first bytes to tell HTTP/2 from HTTP/1.1, then hands the socket over. */
function sniffProtocol(socket: net.Socket, state: ServerState, servers: ProtocolServers): void {
  const timer = setTimeout(() => socket.destroy(), PREFACE_WAIT_MS);
  socket.once("close", () => clearTimeout(timer));
  // A client that hangs up before showing its protocol is gone; its half-open socket must not
  // keep counting against its address until the timer.
  const onEnd = (): void => {
    socket.destroy();
  };
  socket.once("end", onEnd);
  let head = Buffer.alloc(0);
  const onData = (chunk: Buffer): void => {
    head = Buffer.concat([head, chunk]);
    const protocol = detectProtocol(head);
    if (protocol === undefined) {
      return;
    }
    // Pause before unlistening so that no chunk is emitted while nobody listens.
    socket.pause();
    socket.off("data", onData);
    socket.off("end", onEnd);
    clearTimeout(timer);
    state.sniffing.delete(socket);
    socket.unshift(head);
    handOver(socket, protocol, servers);
  };
  socket.on("data", onData);
}

function handOver(socket: net.Socket, protocol: "h2" | "http1", servers: ProtocolServers): void {
  if (protocol === "h2") {
    // The HTTP/2 session reads what is already buffered (the unshifted preface) itself, on
    // the next tick; resuming the socket here would emit those bytes to no one.
    servers.h2.emit("connection", socket);
    return;
  }
  // The HTTP/1.1 server consumes the socket natively from now on but finds the unshifted bytes
  // only as 'data' events, which flow once the socket is resumed.
  servers.h1.emit("connection", socket);
  socket.resume();
}

/**
 * Decides from a connection's first bytes whether it speaks HTTP/2 (the preface) or HTTP/1.1
 * (anything else); undefined means the bytes so far are a prefix of the preface and more are
 * needed. Exported for tests.
 */
export function detectProtocol(head: Buffer): "h2" | "http1" | undefined {
  const compared = Math.min(head.length, HTTP2_PREFACE.length);
  if (!head.subarray(0, compared).equals(HTTP2_PREFACE.subarray(0, compared))) {
    return "http1";
  }
  return head.length >= HTTP2_PREFACE.length ? "h2" : undefined;
}

/** The RPC metrics of the server, and gauges of what it holds open, in the endpoint's registry. */
function registerServerMetrics(endpoint: MetricsEndpoint, state: ServerState): RpcMetrics {
  const { registry } = endpoint;
  gaugeOf(registry, "holdfast_rpc_unary_in_flight", "Unary RPCs being served", () => state.unaryInFlight);
  gaugeOf(registry, "holdfast_rpc_streams_open", "Server streams open (WatchWallet and others), health watches aside", () => state.streamsInFlight);
  gaugeOf(registry, "holdfast_health_watchers", "Open grpc.health.v1.Health/Watch streams", () => state.healthWatchers);
  gaugeOf(registry, "holdfast_connections_open", "Open client connections", () => state.sockets.size);
  return createRpcMetrics(registry);
}

/** The credential check, counting each call it refuses (those never reach the interceptors). */
function countingRefusals(authenticate: Authenticate, rpc: RpcMetrics): Authenticate {
  return async (request) => {
    const startNs = process.hrtime.bigint();
    try {
      await authenticate(request);
    } catch (err) {
      recordRefusal(rpc, request, err, startNs);
      throw err;
    }
  };
}

/** The request listener both HTTP servers share: CORS, then probes and metrics, then Connect. */
function createHttpHandler(
  options: ServerOptions,
  state: ServerState,
  rpcMetrics: RpcMetrics | undefined,
): (req: NodeRequest, res: NodeResponse) => void {
  const authenticate = rpcMetrics !== undefined && options.authenticate !== undefined
    ? countingRefusals(options.authenticate, rpcMetrics)
    : options.authenticate;
  const connectHandler = createRpcAdapter({
    routes: options.routes,
    authenticate,
    connectionBodyBytesMax: state.limits.connectionBodyBytesMax,
    logger: options.logger,
    connect: true,
    grpc: true,
    grpcWeb: true,
    readMaxBytes: options.readMaxBytes,
    writeMaxBytes: WRITE_MAX_BYTES,
    maxTimeoutMs: options.maxTimeoutMs,
    shutdownSignal: state.shutdown.signal,
    acceptCompression: [compressionGzip, compressionBrotli],
    compressMinBytes: COMPRESS_MIN_BYTES,
    // Plain curl and fetch calls do not send Connect-Protocol-Version; they are welcome.
    requireConnectProtocolHeader: false,
    // Newer clients may send fields this server does not know yet (docs/architecture.md, "The public contract": fields are added freely).
    jsonOptions: { ignoreUnknownFields: true },
    interceptors: [
      // Outermost, so that what the others refuse is counted with the code it was refused with.
      ...(rpcMetrics === undefined ? [] : [rpcMetricsInterceptor(rpcMetrics)]),
      malformedBodyInterceptor,
      admissionInterceptor(options.maxInFlight, state.limits, state),
      deadlineInterceptor(options.defaultTimeoutMs),
      ...(options.interceptors ?? []),
      ...(options.metrics?.interceptors ?? []),
    ],
  });
  return (req, res) => {
    if ("stream" in req) {
      limitBodyReadTime(req, state.limits.bodyReadTimeoutMs);
    }
    if (applyCors(req, res, options.corsOrigins)) {
      return;
    }
    if (state.draining && req.httpVersionMajor === 1) {
      // Tell HTTP/1.1 clients not to reuse this connection (HTTP/2 clients got GOAWAY).
      res.setHeader("connection", "close");
    }
    const path = (req.url ?? "").split("?", 1)[0];
    if (path === "/healthz" || path === "/readyz") {
      answerProbe(path, req, res, options, state).catch((err: unknown) => {
        options.logger.error({ err }, "probe failed");
      });
      return;
    }
    if (path === "/metrics" && options.metrics !== undefined) {
      answerMetrics(req, res, options.metrics).catch((err: unknown) => {
        options.logger.error({ err }, "metrics scrape failed");
        res.destroy();
      });
      return;
    }
    if (options.staticFiles?.(req, res, path ?? "") === true) {
      return;
    }
    connectHandler(req, res);
  };
}

/**
 * Resets an HTTP/2 stream (CANCEL) whose request body has not fully arrived within the timeout,
 * as HTTP/1.1's requestTimeout does for a request. Holdfast has no client-streaming methods, so
 * every request body is one message and ends early in the call.
 */
function limitBodyReadTime(req: http2.Http2ServerRequest, timeoutMs: number): void {
  const stream = req.stream;
  if (stream.endAfterHeaders || req.complete) {
    return;
  }
  let received = false;
  const timer = setTimeout(() => {
    if (!received) {
      stream.close(http2.constants.NGHTTP2_CANCEL);
    }
  }, timeoutMs);
  const clear = (): void => {
    received = true;
    clearTimeout(timer);
  };
  // 'end' on the stream means the client sent END_STREAM and every byte has been read.
  stream.once("end", clear);
  stream.once("close", clear);
}

/**
 * Adds CORS headers for allowed origins only and answers preflight requests. Returns true when
 * the request was a preflight and has been answered.
 */
function applyCors(req: NodeRequest, res: NodeResponse, origins: readonly string[]): boolean {
  const origin = req.headers.origin;
  const preflight = req.method === "OPTIONS" && req.headers["access-control-request-method"] !== undefined;
  const allowed = typeof origin === "string" && (origins.includes("*") || origins.includes(origin));
  // Caches must not serve one origin's answer to another.
  res.setHeader("vary", "Origin");
  if (allowed) {
    res.setHeader("access-control-allow-origin", origin);
    if (preflight) {
      res.setHeader("access-control-allow-methods", CORS_ALLOWED_METHODS);
      res.setHeader("access-control-allow-headers", CORS_ALLOWED_HEADERS);
      res.setHeader("access-control-max-age", String(CORS_MAX_AGE_SECONDS));
    } else {
      res.setHeader("access-control-expose-headers", CORS_EXPOSED_HEADERS);
    }
  }
  if (preflight) {
    res.writeHead(204);
    res.end();
  }
  return preflight;
}

/** Answers `/healthz` (the process runs) and `/readyz` (it can serve now). */
async function answerProbe(
  path: string,
  req: NodeRequest,
  res: NodeResponse,
  options: ServerOptions,
  state: ServerState,
): Promise<void> {
  if (req.method !== "GET" && req.method !== "HEAD") {
    res.setHeader("allow", "GET, HEAD");
    sendJson(req, res, 405, { status: "method_not_allowed" });
    return;
  }
  if (path === "/healthz") {
    sendJson(req, res, 200, { status: "ok" });
    return;
  }
  if (state.draining) {
    sendJson(req, res, 503, { status: "draining" });
    return;
  }
  const readiness = await withTimeout(options.readiness(), READINESS_TIMEOUT_MS).catch((err: unknown) => {
    options.logger.warn({ err }, "readiness check failed");
    return { ready: false, detail: { error: "readiness check failed" } };
  });
  const status = readiness.ready && !state.draining ? 200 : 503;
  const text = status === 200 ? "ready" : "not_ready";
  const detailed = await detailAllowed(req, options);
  sendJson(req, res, status, detailed ? { status: text, detail: readiness.detail } : { status: text });
}

/**
 * Whether the `/readyz` caller may see the detail: backlog and lag tell an outsider how busy
 * the ledger is, so only callers on this host or those the option admits see them.
 */
async function detailAllowed(req: NodeRequest, options: ServerOptions): Promise<boolean> {
  if (isLoopback(req.socket.remoteAddress)) {
    return true;
  }
  const authorization = req.headers.authorization;
  if (options.readinessDetailAllowed === undefined || authorization === undefined) {
    return false;
  }
  return withTimeout(options.readinessDetailAllowed(authorization), READINESS_TIMEOUT_MS).catch((err: unknown) => {
    options.logger.warn({ err }, "readiness detail check failed");
    return false;
  });
}

function isLoopback(address: string | undefined): boolean {
  const plain = normaliseAddress(address);
  return plain === "::1" || plain.startsWith("127.");
}

function sendJson(req: NodeRequest, res: NodeResponse, status: number, body: unknown): void {
  // Readiness details may hold bigint counters, which JSON.stringify refuses.
  const text = JSON.stringify(body, (_key, value: unknown) => (typeof value === "bigint" ? String(value) : value));
  res.setHeader("content-type", "application/json");
  res.setHeader("cache-control", "no-store");
  res.writeHead(status);
  if (req.method === "HEAD") {
    res.end();
  } else {
    res.end(text);
  }
}

function withTimeout<T>(promise: Promise<T>, timeoutMs: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${timeoutMs} ms`)), timeoutMs);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/**
 * Gives unary calls without a client deadline the default one, and answers every unary call at
 * its deadline even if the handler has not noticed its aborted signal yet.
 */
function deadlineInterceptor(defaultTimeoutMs: number): Interceptor {
  return (next) => async (req) => {
    if (req.stream) {
      return next(req);
    }
    const hasClientDeadline = req.header.has("grpc-timeout") || req.header.has("connect-timeout-ms");
    if (hasClientDeadline) {
      return raceAbort(next(req), req.signal);
    }
    // One controller that the timer or the call's own signal aborts, rather than
    // AbortSignal.any of the two: a composite signal per call was 1-2% of the service's CPU
    // (docs/performance.md, "The request path").
    const deadline = new AbortController();
    const timer = setTimeout(() => {
      deadline.abort(new ConnectError(`deadline of ${defaultTimeoutMs} ms exceeded`, Code.DeadlineExceeded));
    }, defaultTimeoutMs);
    const forward = (): void => deadline.abort(req.signal.reason);
    onAbort(req.signal, forward);
    try {
      return await raceAbort(next({ ...req, signal: deadline.signal }), deadline.signal);
    } finally {
      clearTimeout(timer);
      req.signal.removeEventListener("abort", forward);
    }
  };
}

/** Settles with the promise, or rejects with the signal's reason if it aborts first. */
function raceAbort<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const abort = (): void => reject(ConnectError.from(signal.reason, Code.Canceled));
    onAbort(signal, abort);
    promise.then(resolve, reject).finally(() => signal.removeEventListener("abort", abort));
  });
}

/** The listening servers `drain()` closes. */
interface Servers extends ProtocolServers {
  readonly tcp: net.Server;
}

async function drain(
  options: ServerOptions,
  state: ServerState,
  servers: Servers,
  terminator: TlsTerminator | undefined,
): Promise<void> {
  terminator?.close();
  const startMs = Date.now();
  const unaryDeadlineMs = startMs + Math.max(0, options.drainTimeoutMs - STREAM_END_GRACE_MS);
  const finalDeadlineMs = startMs + options.drainTimeoutMs;
  state.draining = true;
  options.logger.info({ drainTimeoutMs: options.drainTimeoutMs }, "draining");
  const closed = new Promise<void>((resolve) => servers.tcp.close(() => resolve()));
  for (const socket of state.sniffing) {
    socket.destroy();
  }
  for (const session of state.sessions) {
    session.close();
  }
  servers.h1.closeIdleConnections();
  await waitUntil(() => state.unaryInFlight === 0, unaryDeadlineMs);
  state.shutdown.abort(ledgerError(Code.Unavailable, "DRAINING", "server is shutting down; reconnect"));
  await waitUntil(() => {
    servers.h1.closeIdleConnections();
    return state.sockets.size === 0;
  }, finalDeadlineMs);
  const forced = state.sockets.size;
  for (const session of state.sessions) {
    session.destroy();
  }
  for (const socket of state.sockets) {
    socket.destroy();
  }
  await closed;
  servers.h1.close();
  servers.h2.close();
  options.logger.info({ forcedConnections: forced, tookMs: Date.now() - startMs }, "drained");
}

/** Polls until the condition holds or the deadline passes. */
async function waitUntil(condition: () => boolean, deadlineMs: number): Promise<void> {
  while (!condition() && Date.now() < deadlineMs) {
    await sleep(Math.min(DRAIN_POLL_MS, Math.max(1, deadlineMs - Date.now())));
  }
}
