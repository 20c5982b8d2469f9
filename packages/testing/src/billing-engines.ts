// Local HTTP servers standing in for the billing engines. Each checks the request the way the
// engine documents it (path, content type, auth header, body shape, batch limit), dedupes on
// the engine's idempotency key the way the engine does, and answers duplicates the way the
// engine does (Stripe: 400 "already exists"; Lago: 422 value_already_exist; Metronome,
// OpenMeter and the HTTP sink: accepted and ignored). Tests can stop and restart a server on
// the same port, script answers (429 + Retry-After), and name customers the engine refuses.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";

export type EngineType = "stripe" | "openmeter" | "lago" | "metronome" | "http";

/** One usage record as the engine stored it, normalised across engines. */
export interface StoredUsage {
  key: string;
  customer: string;
  eventName: string;
  value: bigint;
  properties: Record<string, string>;
  timestamp: string;
}

/** One request as it arrived, with the answer it got. */
export interface Received {
  at: number;
  keys: string[];
  status: number;
}

interface Scripted {
  status: number;
  headers?: Record<string, string>;
  body?: string;
}

type Reply = { status: number; headers?: Record<string, string>; body?: unknown };

const RFC3339_PATTERN = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$/;
const INTEGER_PATTERN = /^-?\d+$/;

/** The API key a fake engine of `type` accepts. */
export function engineSecret(type: EngineType): string {
  return `test-${type}-secret`;
}

/**
 * What an engine's request handler reads and records: the usage stored so far, the customers
 * it refuses, and the protocol violations it saw (a test fails on any).
 */
interface EngineBook {
  readonly type: EngineType;
  readonly stored: Map<string, StoredUsage>;
  /** Arrivals of each key that the engine stored (not counting deduplicated re-sends). */
  readonly storedCount: Map<string, number>;
  readonly violations: string[];
  readonly refusedCustomers: Set<string>;
}

type Handled = { reply: Reply; keys: string[] };
type Handler = (book: EngineBook, req: IncomingMessage, body: string, keys: string[]) => Handled;

/** Notes a request that breaks the engine's documented protocol, and answers it 400. */
function violation(book: EngineBook, message: string): Reply {
  book.violations.push(message);
  return { status: 400, body: { error: message } };
}

/** Stores a usage record unless its key is already stored; true when it was new. */
function store(book: EngineBook, usage: StoredUsage): boolean {
  if (book.stored.has(usage.key)) return false;
  book.stored.set(usage.key, usage);
  book.storedCount.set(usage.key, (book.storedCount.get(usage.key) ?? 0) + 1);
  return true;
}

function stripe(book: EngineBook, req: IncomingMessage, body: string, keys: string[]): Handled {
  if (req.url !== "/v1/billing/meter_events") return { reply: violation(book, `path ${req.url}`), keys };
  if (req.headers["content-type"] !== "application/x-www-form-urlencoded") return { reply: violation(book, "content type"), keys };
  const form = new URLSearchParams(body);
  const [name, identifier, timestamp, customer, value] = ["event_name", "identifier", "timestamp", "payload[stripe_customer_id]", "payload[value]"].map((k) => form.get(k));
  if (!name || !identifier || !customer || !timestamp || !/^\d+$/.test(timestamp) || !value || !INTEGER_PATTERN.test(value)) {
    return { reply: violation(book, `stripe form ${body}`), keys };
  }
  keys.push(identifier);
  if (book.refusedCustomers.has(customer)) {
    return { reply: { status: 400, body: { error: { type: "invalid_request_error", message: `No such customer: '${customer}'` } } }, keys };
  }
  const properties: Record<string, string> = {};
  for (const [k, v] of form) {
    const m = /^payload\[(.+)\]$/.exec(k);
    if (m && m[1] !== "stripe_customer_id" && m[1] !== "value") properties[m[1]!] = v;
  }
  const fresh = store(book, { key: identifier, customer, eventName: name, value: BigInt(value), properties, timestamp });
  if (!fresh) {
    return { reply: { status: 400, body: { error: { type: "invalid_request_error", message: `An event already exists with identifier ${identifier}.` } } }, keys };
  }
  return { reply: { status: 200, body: { object: "billing.meter_event", identifier, event_name: name } }, keys };
}

function cloudEvents(book: EngineBook, req: IncomingMessage, body: string, keys: string[], path: string, describe: (e: Record<string, unknown>) => StoredUsage | string): Handled {
  if (req.url !== path) return { reply: violation(book, `path ${req.url}`), keys };
  if (req.headers["content-type"] !== "application/cloudevents-batch+json") return { reply: violation(book, "content type"), keys };
  const events = JSON.parse(body) as Record<string, unknown>[];
  if (!Array.isArray(events) || events.length === 0) return { reply: violation(book, "not a batch"), keys };
  const usages: StoredUsage[] = [];
  for (const e of events) {
    if (e["specversion"] !== "1.0" || typeof e["id"] !== "string" || typeof e["source"] !== "string" || typeof e["type"] !== "string" || typeof e["subject"] !== "string" || !RFC3339_PATTERN.test(String(e["time"]))) {
      return { reply: violation(book, `cloudevent ${JSON.stringify(e)}`), keys };
    }
    keys.push(e["id"]);
    const usage = describe(e);
    if (typeof usage === "string") return { reply: violation(book, usage), keys };
    if (book.refusedCustomers.has(usage.customer)) return { reply: { status: 400, body: { title: "Bad Request", detail: `unknown subject ${usage.customer}` } }, keys };
    usages.push(usage);
  }
  for (const usage of usages) store(book, usage);
  return { reply: { status: book.type === "openmeter" ? 204 : 202 }, keys };
}

function openMeter(book: EngineBook, req: IncomingMessage, body: string, keys: string[]): Handled {
  return cloudEvents(book, req, body, keys, "/api/v1/events", (e) => {
    const data = e["data"] as Record<string, string>;
    if (!INTEGER_PATTERN.test(String(data["value"]))) return "data.value";
    const { value, ...properties } = data;
    // OpenMeter dedupes on id + source.
    return { key: String(e["id"]), customer: String(e["subject"]), eventName: String(e["type"]), value: BigInt(value!), properties: { ...properties, source: String(e["source"]) }, timestamp: String(e["time"]) };
  });
}

function httpSink(book: EngineBook, req: IncomingMessage, body: string, keys: string[]): Handled {
  return cloudEvents(book, req, body, keys, "/hooks/usage", (e) => {
    const data = e["data"] as Record<string, unknown>;
    if (!INTEGER_PATTERN.test(String(data["value"])) || data["transfer_id"] !== e["id"]) return "data";
    return { key: String(e["id"]), customer: String(e["subject"]), eventName: String(e["type"]), value: BigInt(String(data["value"])), properties: data["properties"] as Record<string, string>, timestamp: String(e["time"]) };
  });
}

function lago(book: EngineBook, req: IncomingMessage, body: string, keys: string[]): Handled {
  if (req.url !== "/api/v1/events/batch") return { reply: violation(book, `path ${req.url}`), keys };
  if (req.headers["content-type"] !== "application/json") return { reply: violation(book, "content type"), keys };
  const events = (JSON.parse(body) as { events?: Record<string, unknown>[] }).events;
  if (!Array.isArray(events) || events.length === 0 || events.length > 100) return { reply: violation(book, "lago batch size"), keys };
  const errors: Record<string, Record<string, string[]>> = {};
  const usages: StoredUsage[] = [];
  events.forEach((e, index) => {
    const props = e["properties"] as Record<string, string>;
    if (typeof e["transaction_id"] !== "string" || typeof e["external_subscription_id"] !== "string" || typeof e["code"] !== "string" || !Number.isInteger(e["timestamp"]) || !INTEGER_PATTERN.test(String(props?.["value"]))) {
      violation(book, `lago event ${JSON.stringify(e)}`);
      errors[index] = { event: ["invalid"] };
      return;
    }
    keys.push(e["transaction_id"]);
    if (book.stored.has(e["transaction_id"])) errors[index] = { transaction_id: ["value_already_exist"] };
    else if (book.refusedCustomers.has(e["external_subscription_id"])) errors[index] = { external_subscription_id: ["subscription_not_found"] };
    const { value, ...properties } = props;
    usages.push({ key: e["transaction_id"], customer: e["external_subscription_id"], eventName: e["code"], value: BigInt(value!), properties, timestamp: String(e["timestamp"]) });
  });
  // Like Lago (getlago/lago-api#4772): one bad event refuses the batch and stores none of it.
  if (Object.keys(errors).length > 0) {
    return { reply: { status: 422, body: { status: 422, error: "Unprocessable Entity", code: "validation_errors", error_details: errors } }, keys };
  }
  for (const usage of usages) store(book, usage);
  return { reply: { status: 200, body: { events: usages.map((u) => ({ transaction_id: u.key })) } }, keys };
}

function metronome(book: EngineBook, req: IncomingMessage, body: string, keys: string[]): Handled {
  if (req.url !== "/v1/ingest") return { reply: violation(book, `path ${req.url}`), keys };
  if (req.headers["content-type"] !== "application/json") return { reply: violation(book, "content type"), keys };
  const events = JSON.parse(body) as Record<string, unknown>[];
  if (!Array.isArray(events) || events.length === 0 || events.length > 100) return { reply: violation(book, "metronome batch size"), keys };
  const usages: StoredUsage[] = [];
  for (const e of events) {
    const props = e["properties"] as Record<string, unknown>;
    if (typeof e["transaction_id"] !== "string" || typeof e["customer_id"] !== "string" || typeof e["event_type"] !== "string" || !RFC3339_PATTERN.test(String(e["timestamp"])) || !Object.values(props).every((v) => typeof v === "string") || !INTEGER_PATTERN.test(String(props["value"]))) {
      return { reply: violation(book, `metronome event ${JSON.stringify(e)}`), keys };
    }
    keys.push(e["transaction_id"]);
    // A whole-request 400 that names no event, so the worker has to find it by splitting.
    if (book.refusedCustomers.has(e["customer_id"])) return { reply: { status: 400, body: { message: "invalid customer in request" } }, keys };
    const { value, ...properties } = props as Record<string, string>;
    usages.push({ key: e["transaction_id"], customer: e["customer_id"], eventName: e["event_type"], value: BigInt(value!), properties, timestamp: String(e["timestamp"]) });
  }
  // Duplicates (34-day window) are accepted and ignored.
  for (const usage of usages) store(book, usage);
  return { reply: { status: 200 }, keys };
}

const HANDLERS: Readonly<Record<EngineType, Handler>> = { stripe, openmeter: openMeter, lago, metronome, http: httpSink };

/** Checks the method and the engine's auth header, then hands the request to the engine's handler. */
function handle(book: EngineBook, req: IncomingMessage, body: string): Handled {
  const keys: string[] = [];
  if (req.method !== "POST") return { reply: violation(book, `method ${req.method}`), keys };
  if (req.headers["authorization"] !== `Bearer ${engineSecret(book.type)}`) return { reply: { status: 401, body: { error: "bad auth" } }, keys };
  return HANDLERS[book.type](book, req, body, keys);
}

/** A fake engine of `type`; `start()` listens (on the same port after the first time). */
export function createFakeEngine(type: EngineType) {
  const book: EngineBook = { type, stored: new Map(), storedCount: new Map(), violations: [], refusedCustomers: new Set() };
  /** Arrivals of each key in any request, accepted or not. */
  const seen = new Map<string, number>();
  const received: Received[] = [];
  const script: Scripted[] = [];
  let server: Server | null = null;
  let port = 0;

  async function onRequest(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const body = Buffer.concat(chunks).toString("utf8");
    const scripted = script.shift();
    let reply: Reply;
    let keys: string[] = [];
    if (scripted !== undefined) {
      reply = { status: scripted.status, headers: scripted.headers, body: scripted.body };
    } else {
      try {
        ({ reply, keys } = handle(book, req, body));
      } catch (error) {
        reply = violation(book, `unparseable body: ${String(error)}`);
      }
    }
    for (const key of keys) seen.set(key, (seen.get(key) ?? 0) + 1);
    received.push({ at: Date.now(), keys, status: reply.status });
    const text = reply.body === undefined ? "" : typeof reply.body === "string" ? reply.body : JSON.stringify(reply.body);
    res.writeHead(reply.status, { "content-type": "application/json", ...(reply.headers ?? {}) }).end(text);
  }

  return {
    type,
    secret: engineSecret(type),
    stored: book.stored,
    storedCount: book.storedCount,
    seen,
    received,
    violations: book.violations,
    /** Customers (or subscriptions) the engine refuses with a 4xx. */
    refuse(customer: string) {
      book.refusedCustomers.add(customer);
    },
    /** The next requests get these answers instead of being handled. */
    answerNext(...answers: Scripted[]) {
      script.push(...answers);
    },
    get url(): string {
      const base = `http://127.0.0.1:${port}`;
      return type === "http" ? `${base}/hooks/usage` : base;
    },
    async start(): Promise<void> {
      const s = createServer((req, res) => void onRequest(req, res));
      await new Promise<void>((resolve, reject) => {
        s.once("error", reject);
        s.listen(port, "127.0.0.1", () => resolve());
      });
      port = (s.address() as AddressInfo).port;
      server = s;
    },
    /** Stops listening and cuts open connections: the engine is down. */
    async stop(): Promise<void> {
      const s = server;
      server = null;
      if (s === null) return;
      await new Promise<void>((resolve) => {
        s.close(() => resolve());
        s.closeAllConnections();
      });
    },
  };
}

export type FakeEngine = ReturnType<typeof createFakeEngine>;

/** All five engines, started. */
export async function startFakeEngines(): Promise<Record<EngineType, FakeEngine>> {
  const engines = {
    stripe: createFakeEngine("stripe"),
    openmeter: createFakeEngine("openmeter"),
    lago: createFakeEngine("lago"),
    metronome: createFakeEngine("metronome"),
    http: createFakeEngine("http"),
  };
  for (const engine of Object.values(engines)) await engine.start();
  return engines;
}

/** A sink configuration for every engine, pointed at the fakes, with short test delays. */
export function sinkConfigs(engines: Record<EngineType, FakeEngine>, extra: Partial<Record<EngineType, Record<string, unknown>>> = {}) {
  const fast = { flush_interval_ms: 50, attempts_max: 3, retry_delay_ms_min: 20, retry_delay_ms_max: 200, retry_after_ms_max: 5000, request_timeout_ms: 2000 };
  return {
    sinks: [
      { name: "stripe", type: "stripe", endpoint: engines.stripe.url, secret_env: "TEST_STRIPE_KEY", event_name: "llm_tokens", ...fast, ...extra.stripe },
      { name: "openmeter", type: "openmeter", endpoint: engines.openmeter.url, secret_env: "TEST_OPENMETER_KEY", event_name: "llm_usage", ...fast, ...extra.openmeter },
      { name: "lago", type: "lago", endpoint: engines.lago.url, secret_env: "TEST_LAGO_KEY", event_name: "llm_usage", ...fast, ...extra.lago },
      { name: "metronome", type: "metronome", endpoint: engines.metronome.url, secret_env: "TEST_METRONOME_KEY", event_name: "llm_usage", ...fast, ...extra.metronome },
      { name: "http", type: "http", endpoint: engines.http.url, secret_env: "TEST_HTTP_KEY", ...fast, ...extra.http },
    ],
    wallet_cache_ttl_ms: 0,
  };
}

/** The environment the sink configuration's secret_env names. */
export const SINK_ENV = {
  TEST_STRIPE_KEY: engineSecret("stripe"),
  TEST_OPENMETER_KEY: engineSecret("openmeter"),
  TEST_LAGO_KEY: engineSecret("lago"),
  TEST_METRONOME_KEY: engineSecret("metronome"),
  TEST_HTTP_KEY: engineSecret("http"),
};
