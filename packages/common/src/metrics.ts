/**
 * Prometheus metrics for every Holdfast process, with prom-client: one registry per process
 * (per app in tests, so that several in one process never share a counter), the RPC metrics
 * every RPC server records, the `/metrics` answer with its optional bearer token, and a small
 * server for the workers' metrics port. docs/operations.md lists every metric.
 *
 * Names follow the Prometheus conventions: `holdfast_` first, base units (`_seconds`,
 * `_bytes`), `_total` for counters, and labels only with bounded values (method names, codes,
 * reasons, sink names; never tenant or wallet ids).
 *
 * @module
 */
import { timingSafeEqual } from "node:crypto";
import http from "node:http";
import type http2 from "node:http2";
import { Code, ConnectError, createContextKey, type ContextValues, type Interceptor } from "@connectrpc/connect";
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from "prom-client";
import type { Logger } from "pino";
import { readInteger, type Env, type IntegerSpec } from "./env.js";

export { Counter, Gauge, Histogram, Registry };

/** HOLDFAST_METRICS_PORT: 0 (the default) serves no metrics port. */
const METRICS_PORT: IntegerSpec = { fallback: 0, min: 0, max: 65_535 };

/** Where a worker serves its metrics. */
export interface MetricsPortConfig {
  /** The port of `/metrics` and `/healthz`; null serves none. */
  readonly metricsPort: number | null;
}

/**
 * HOLDFAST_METRICS_PORT, which every worker reads: the port of its `/metrics` and `/healthz`,
 * bound on HOLDFAST_HOST; unset or `0` serves none. Throws naming the variable when bad.
 */
export function readMetricsPortConfig(env: Env): MetricsPortConfig {
  const port = readInteger(env, "HOLDFAST_METRICS_PORT", METRICS_PORT);
  return { metricsPort: port === 0 ? null : port };
}

/** Latency buckets of an RPC, in seconds: a millisecond to ten seconds. */
export const RPC_DURATION_SECONDS_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
const NS_PER_SECOND = 1e9;

/**
 * How often the event-loop lag histogram samples (prom-client's default is 10 ms). Each sample
 * is a timer that wakes the process: at 10 ms that alone kept an idle process at about 0.45% of
 * a core (200 wake-ups a second); at 100 ms it is a third of that, and ten samples a second
 * still fill the lag percentiles between two scrapes.
 */
const EVENT_LOOP_MONITORING_PRECISION_MS = 100;

/**
 * A registry for one process or app. `defaultMetrics` adds prom-client's process metrics
 * (CPU, memory, event-loop lag, GC): a process's main turns it on; apps built by tests, many to
 * a process, leave it off (the process metrics observe the whole process and cannot be stopped).
 */
export function createMetricsRegistry(options: { defaultMetrics?: boolean } = {}): Registry {
  const registry = new Registry();
  if (options.defaultMetrics === true) {
    collectDefaultMetrics({ register: registry, eventLoopMonitoringPrecision: EVENT_LOOP_MONITORING_PRECISION_MS });
  }
  return registry;
}

/** A counter whose value is read from `read` at each scrape (a running total kept elsewhere). */
export function counterOf(registry: Registry, name: string, help: string, read: () => number): Counter {
  return new Counter({
    name,
    help,
    registers: [registry],
    collect() {
      this.reset();
      this.inc(read());
    },
  });
}

/** A counter with labels whose values are read from `read` at each scrape, one per label set. */
export function labelledCounterOf<L extends string>(
  registry: Registry,
  spec: { name: string; help: string; labelNames: readonly L[] },
  read: () => Iterable<[Partial<Record<L, string>>, number]>,
): Counter<L> {
  return new Counter<L>({
    ...spec,
    registers: [registry],
    collect() {
      this.reset();
      for (const [labels, value] of read()) this.inc(labels, value);
    },
  });
}

/** A gauge whose value is read (or awaited) from `read` at each scrape. */
export function gaugeOf(registry: Registry, name: string, help: string, read: () => number | Promise<number>): Gauge {
  return new Gauge({
    name,
    help,
    registers: [registry],
    async collect() {
      this.set(await read());
    },
  });
}

/** The canonical gRPC name of a code: `OK`, `INVALID_ARGUMENT`, `RESOURCE_EXHAUSTED`. */
export function codeName(code: Code | null): string {
  if (code === null) return "OK";
  return Code[code].replace(/([a-z])([A-Z])/g, "$1_$2").toUpperCase();
}

/** The RPC metrics of a server: how many calls, how they ended, how long unary calls took. */
export interface RpcMetrics {
  readonly requests: Counter<"service" | "method" | "code">;
  readonly duration: Histogram<"service" | "method" | "code">;
}

/**
 * Registers the RPC metrics: `holdfast_rpc_requests_total` (every call, by method and code;
 * a stream counts when it ends) and `holdfast_rpc_request_duration_seconds` (unary calls).
 */
export function createRpcMetrics(registry: Registry): RpcMetrics {
  const labelNames = ["service", "method", "code"] as const;
  return {
    requests: new Counter({
      name: "holdfast_rpc_requests_total",
      help: "RPCs finished, by service, method and gRPC status code (streams count when they end)",
      labelNames,
      registers: [registry],
    }),
    duration: new Histogram({
      name: "holdfast_rpc_request_duration_seconds",
      help: "Time from a unary RPC's arrival to its answer, by service, method and gRPC status code",
      labelNames,
      buckets: RPC_DURATION_SECONDS_BUCKETS,
      registers: [registry],
    }),
  };
}

/** Set on a call refused before its body was read; the interceptor then leaves it uncounted. */
const COUNTED_KEY = createContextKey<boolean>(false, { description: "holdfast rpc metrics: already counted" });

/** Records one finished call. */
function record(rpc: RpcMetrics, labels: { service: string; method: string }, code: string, startNs: bigint | null): void {
  rpc.requests.inc({ ...labels, code });
  if (startNs !== null) rpc.duration.observe({ ...labels, code }, Number(process.hrtime.bigint() - startNs) / NS_PER_SECOND);
}

/**
 * The interceptor that counts and times every call that reaches the interceptors; it must be
 * the outermost, so that calls the admission control refuses are counted too. A server stream
 * is counted when it ends: OK when it completes, else the code it ended with (CANCELED when the
 * client went away).
 */
export function rpcMetricsInterceptor(rpc: RpcMetrics): Interceptor {
  return (next) => async (req) => {
    if (req.contextValues.get(COUNTED_KEY)) return next(req);
    const labels = { service: req.service.typeName, method: req.method.name };
    const startNs = process.hrtime.bigint();
    let res;
    try {
      res = await next(req);
    } catch (err) {
      record(rpc, labels, codeName(ConnectError.from(err).code), req.stream ? null : startNs);
      throw err;
    }
    if (!res.stream) {
      record(rpc, labels, "OK", startNs);
      return res;
    }
    return { ...res, message: countedStream(res.message, rpc, labels, req.signal) };
  };
}

/**
 * The stream's messages, counted when it ends: OK when it completed by itself, the code of
 * the call's signal when that ended it (the client went away, the deadline, a drain), the
 * error's code when it failed.
 */
async function* countedStream<T>(
  messages: AsyncIterable<T>,
  rpc: RpcMetrics,
  labels: { service: string; method: string },
  signal: AbortSignal,
): AsyncGenerator<T> {
  let code = "CANCELED";
  try {
    yield* messages;
    code = signal.aborted ? codeName(ConnectError.from(signal.reason, Code.Canceled).code) : "OK";
  } catch (err) {
    code = codeName(ConnectError.from(err).code);
    throw err;
  } finally {
    record(rpc, labels, code, null);
  }
}

/**
 * Counts a call refused before its body was read (credentials checked from the headers): a
 * unary one never reaches the interceptors; a stream does, and is marked so that it is not
 * counted twice.
 */
export function recordRefusal(
  rpc: RpcMetrics,
  call: { readonly service: string; readonly method: string; readonly contextValues: ContextValues },
  err: unknown,
  startNs: bigint,
): void {
  call.contextValues.set(COUNTED_KEY, true);
  // The server answers anything but a ConnectError as INTERNAL (rpc-adapter.ts).
  const code = err instanceof ConnectError ? codeName(err.code) : "INTERNAL";
  record(rpc, { service: call.service, method: call.method }, code, startNs);
}

/** What `/metrics` serves, and who may read it. */
export interface MetricsEndpoint {
  readonly registry: Registry;
  /** A bearer token the scraper must send (`authorization: Bearer <token>`); null serves everyone. */
  readonly token: string | null;
}

type NodeRequest = http.IncomingMessage | http2.Http2ServerRequest;
type NodeResponse = http.ServerResponse | http2.Http2ServerResponse;

/** Whether the `authorization` header carries the token (compared in constant time). */
export function bearerMatches(authorization: string | undefined, token: string): boolean {
  const expected = Buffer.from(`Bearer ${token}`);
  const given = Buffer.from(authorization ?? "");
  return given.length === expected.length && timingSafeEqual(given, expected);
}

/** Answers a `/metrics` request: 401 without the token, 405 for anything but GET and HEAD. */
export async function answerMetrics(req: NodeRequest, res: NodeResponse, endpoint: MetricsEndpoint): Promise<void> {
  res.setHeader("cache-control", "no-store");
  if (req.method !== "GET" && req.method !== "HEAD") {
    res.setHeader("allow", "GET, HEAD");
    res.writeHead(405);
    res.end();
    return;
  }
  if (endpoint.token !== null && !bearerMatches(req.headers.authorization, endpoint.token)) {
    res.setHeader("www-authenticate", 'Bearer realm="metrics"');
    res.writeHead(401);
    res.end();
    return;
  }
  const text = await endpoint.registry.metrics();
  res.setHeader("content-type", endpoint.registry.contentType);
  res.writeHead(200);
  if (req.method === "HEAD") res.end();
  else res.end(text);
}

export interface MetricsServerOptions extends MetricsEndpoint {
  readonly port: number;
  readonly host: string;
  readonly logger: Logger;
  /** What `/healthz` answers: 200 while it returns true, else 503. Always 200 without it. */
  readonly healthy?: () => boolean;
}

/**
 * Serves `GET /metrics` and `GET /healthz` on a port of its own: the workers' metrics port
 * (HOLDFAST_METRICS_PORT). Resolves once listening; `close` stops it.
 */
export async function serveMetricsPort(options: MetricsServerOptions): Promise<http.Server> {
  const server = http.createServer((req, res) => {
    const path = (req.url ?? "").split("?", 1)[0];
    if (path === "/metrics") {
      answerMetrics(req, res, options).catch((err: unknown) => {
        options.logger.error({ err }, "metrics scrape failed");
        if (!res.headersSent) res.writeHead(500);
        res.end();
      });
    } else if (path === "/healthz") {
      const ok = options.healthy?.() ?? true;
      res.writeHead(ok ? 200 : 503, { "content-type": "application/json" }).end(JSON.stringify({ status: ok ? "ok" : "unhealthy" }));
    } else {
      res.writeHead(404).end();
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port, options.host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  options.logger.info({ address: server.address() }, "serving metrics");
  return server;
}
