/**
 * Per-sink counters, logged periodically and served as Prometheus text on /metrics.
 *
 * @module
 */
import { createServer, type Server } from "node:http";

/** Counters of one sink since the process started. */
export interface SinkMetrics {
  /** Usage records the engine accepted (or already held under the same key). */
  sent: number;
  /** Records sent again after a transient failure. */
  retried: number;
  /** Records refused for good (or unmappable) and written to billing_dead_letters. */
  deadLettered: number;
  /** Events the sink does not take (other tenants, kinds, skipped refunds). */
  skipped: number;
  /** Records handed back to JetStream after exhausting in-process retries. */
  failed: number;
  /** Age of the newest record delivered, at delivery: how far behind real time the sink runs. */
  lagMs: number;
  /** Messages of the sink's consumer not yet delivered to it, from the last consumer info. */
  pending: number;
  /** Messages delivered to the worker and not yet acknowledged, from the last consumer info. */
  ackPending: number;
}

export function newSinkMetrics(): SinkMetrics {
  return { sent: 0, retried: 0, deadLettered: 0, skipped: 0, failed: 0, lagMs: 0, pending: 0, ackPending: 0 };
}

const COUNTERS: readonly [keyof SinkMetrics, string, string][] = [
  ["sent", "counter", "Usage records accepted by the billing engine"],
  ["retried", "counter", "Usage records sent again after a transient failure"],
  ["deadLettered", "counter", "Usage records refused for good and dead-lettered"],
  ["skipped", "counter", "Events not routed to the sink"],
  ["failed", "counter", "Usage records returned to JetStream after exhausting retries"],
  ["lagMs", "gauge", "Age in milliseconds of the newest usage record delivered"],
  ["pending", "gauge", "Events waiting in the sink's JetStream consumer"],
  ["ackPending", "gauge", "Events delivered to the worker and not yet settled"],
];

const snake = (name: string) => name.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);

/** The Prometheus text exposition of every sink's metrics. */
export function prometheusText(sinks: ReadonlyMap<string, SinkMetrics>): string {
  const lines: string[] = [];
  for (const [field, type, help] of COUNTERS) {
    const name = `holdfast_billing_${snake(field)}${type === "counter" ? "_total" : ""}`;
    lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
    for (const [sink, metrics] of sinks) lines.push(`${name}{sink="${sink}"} ${metrics[field]}`);
  }
  return `${lines.join("\n")}\n`;
}

/** Serves GET /healthz and GET /metrics on `port` (0 picks one); resolves once listening. */
export async function serveMetrics(port: number, host: string, sinks: ReadonlyMap<string, SinkMetrics>, healthy: () => boolean): Promise<Server> {
  const server = createServer((req, res) => {
    if (req.method === "GET" && req.url === "/metrics") {
      res.writeHead(200, { "content-type": "text/plain; version=0.0.4" }).end(prometheusText(sinks));
    } else if (req.method === "GET" && req.url === "/healthz") {
      const ok = healthy();
      res.writeHead(ok ? 200 : 503, { "content-type": "application/json" }).end(JSON.stringify({ ok, sinks: Object.fromEntries(sinks) }));
    } else {
      res.writeHead(404).end();
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => resolve());
  });
  return server;
}
