// Test receivers and a test worker for the webhook suites. A receiver is a real HTTP server on
// 127.0.0.1 that records every request and checks its signature with the `standardwebhooks`
// library, as a customer's receiver would; what it answers is up to each test.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo, Socket } from "node:net";
import { setTimeout as sleep } from "node:timers/promises";
import type pg from "pg";
import type { Logger } from "pino";
import { Webhook } from "standardwebhooks";
import { readWebhookSettings } from "@holdfast/webhooks/config";
import { createWebhookWorker } from "@holdfast/webhooks/worker";
import { quietLogger } from "./ledger.js";

/** One request as a receiver saw it. */
export interface Received {
  webhookId: string;
  timestamp: string;
  signature: string;
  body: string;
  /** The parsed body, when some secret verified it. */
  payload: { type: string; timestamp: string; data: Record<string, unknown> } | null;
  /** For each of the receiver's secrets (in order), whether it verified the request. */
  verifiedBy: boolean[];
  at: number;
}

/** What a receiver answers: a status (and headers), or nothing for `hangMs`. */
export type Answer = { status: number; headers?: Record<string, string>; hangMs?: number };

export interface Receiver {
  readonly url: string;
  readonly port: number;
  /** Secrets to verify with; set after CreateEndpoint answered. */
  secrets: string[];
  /** Every request answered or still open, in arrival order. */
  readonly received: Received[];
  /** Requests whose answer has not been sent yet. */
  open(): number;
  /** The most requests that were ever open at once. */
  openMax(): number;
  /** Distinct webhook ids answered with a 2xx. */
  delivered(): Set<string>;
  /** Changes the answer for the requests to come. */
  answer(fn: (request: Received, n: number) => Answer): void;
  stop(): Promise<void>;
  /** Listens again on the same port. */
  start(): Promise<void>;
}

/** Starts a receiver on 127.0.0.1, on `port` or a free one. It answers 200 until told otherwise. */
export async function startReceiver(port = 0): Promise<Receiver> {
  const received: Received[] = [];
  const ok = new Set<string>();
  const sockets = new Set<Socket>();
  let answer: (request: Received, n: number) => Answer = () => ({ status: 200 });
  let openCount = 0;
  let openMax = 0;
  let server: Server | null = null;
  // Ends every hanging answer when the receiver stops, so no timer outlives the test.
  let hangs = new AbortController();
  const receiver = {
    url: "",
    port,
    secrets: [] as string[],
    received,
    open: () => openCount,
    openMax: () => openMax,
    delivered: () => new Set(ok),
    answer(fn: (request: Received, n: number) => Answer) {
      answer = fn;
    },
    async stop() {
      const running = server;
      server = null;
      if (running === null) return;
      hangs.abort();
      hangs = new AbortController();
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => running.close(() => resolve()));
    },
    async start() {
      server = createServer((req, res) => void handle(req, res));
      server.on("connection", (socket) => {
        sockets.add(socket);
        socket.on("close", () => sockets.delete(socket));
      });
      await new Promise<void>((resolve) => server!.listen(receiver.port, "127.0.0.1", () => resolve()));
      receiver.port = (server.address() as AddressInfo).port;
      receiver.url = `http://127.0.0.1:${receiver.port}/hooks`;
    },
  };

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const body = Buffer.concat(chunks).toString("utf8");
    const headers = {
      "webhook-id": String(req.headers["webhook-id"] ?? ""),
      "webhook-timestamp": String(req.headers["webhook-timestamp"] ?? ""),
      "webhook-signature": String(req.headers["webhook-signature"] ?? ""),
    };
    const verifiedBy = receiver.secrets.map((secret) => {
      try {
        new Webhook(secret).verify(body, headers);
        return true;
      } catch {
        return false;
      }
    });
    const request: Received = {
      webhookId: headers["webhook-id"],
      timestamp: headers["webhook-timestamp"],
      signature: headers["webhook-signature"],
      body,
      payload: verifiedBy.some(Boolean) ? (JSON.parse(body) as Received["payload"]) : null,
      verifiedBy,
      at: Date.now(),
    };
    received.push(request);
    const reply = answer(request, received.length);
    openCount++;
    openMax = Math.max(openMax, openCount);
    try {
      if (reply.hangMs !== undefined) {
        const signal = hangs.signal;
        await sleep(reply.hangMs, undefined, { signal }).catch(() => undefined);
        if (signal.aborted) return;
      }
      if (reply.status >= 200 && reply.status <= 299) ok.add(request.webhookId);
      res.writeHead(reply.status, reply.headers).end(reply.status >= 300 ? "nope" : "ok");
    } finally {
      openCount--;
    }
  }

  await receiver.start();
  return receiver;
}

/** Polls `check` every 25 ms until it holds; fails naming `what` after `timeoutMs`. */
export async function waitFor(what: string, check: () => boolean | Promise<boolean>, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) {
      throw new Error(`timed out waiting for ${what}`);
    }
    await sleep(25);
  }
}

/** Loopback is where the receivers live; the RPC layer and the worker must both allow it. */
export const loopback_networks = "127.0.0.0/8,::1/128";

/**
 * Webhook settings for tests: loopback allowed, a retry schedule in milliseconds, short
 * timeouts. `env` overrides any HOLDFAST_WEBHOOK_* variable.
 */
export function testWebhookSettings(env: Record<string, string> = {}) {
  return readWebhookSettings({
    HOLDFAST_WEBHOOK_ALLOWED_NETWORKS: loopback_networks,
    HOLDFAST_WEBHOOK_RETRY_SCHEDULE: "20ms,40ms,80ms,160ms,320ms,500ms,500ms,500ms,500ms,500ms,500ms,500ms",
    HOLDFAST_WEBHOOK_TIMEOUT_MS: "2000",
    HOLDFAST_WEBHOOK_CONCURRENCY: "32",
    HOLDFAST_WEBHOOK_ENDPOINT_CONCURRENCY: "4",
    ...env,
  });
}

/** A worker in this process on the test's NATS server and database. */
export function startTestWorker(pool: pg.Pool, natsUrl: string, env: Record<string, string> = {}, logger: Logger = quietLogger) {
  const worker = createWebhookWorker({
    pool,
    logger,
    natsUrl,
    stream: { name: "HOLDFAST_EVENTS", maxAgeMs: 3_600_000, duplicateWindowMs: 600_000, replicas: 1 },
    settings: testWebhookSettings(env),
    pollIdleMs: 50,
  });
  worker.start();
  return worker;
}

/**
 * Rows of webhook_deliveries read so far (by sequential scans plus through indexes), as
 * PostgreSQL's table counters have them. `measured` is the pool whose statements are counted (of
 * one connection): its counters are flushed first. `observer` reads them.
 */
export async function deliveryRowsRead(measured: pg.Pool, observer: pg.Pool): Promise<number> {
  // Flushes that backend's counters when the statement ends, before its answer arrives.
  await measured.query("select pg_stat_force_next_flush()");
  const { rows } = await observer.query<{ n: string }>(
    `select pg_stat_clear_snapshot(), (coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0))::text as n
       from pg_stat_user_tables where relname = 'webhook_deliveries'`,
  );
  return Number(rows[0]!.n);
}

/** A tenant named `name` and one enabled endpoint of it, written straight into the tables. */
export async function insertTenantEndpoint(db: pg.Pool, tenantId: string, endpointId: string, name: string): Promise<void> {
  await db.query("insert into tenants (id, name) values ($1, $2)", [tenantId, name]);
  await db.query(
    `insert into webhook_endpoints (tenant_id, endpoint_id, url, secret, created_at, updated_at)
     values ($1, $2, 'https://example.com/hooks', $3, now(), now())`,
    [tenantId, endpointId, `whsec_${name.replace(/-/g, "_")}`],
  );
}
