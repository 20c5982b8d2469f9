/**
 * The webhook worker's Prometheus metrics, served on HOLDFAST_METRICS_PORT: what this process
 * took in and sent (its running totals), and what all replicas share, read from PostgreSQL at
 * each scrape (deliveries waiting and how late, requests open per endpoint, endpoints
 * disabled). docs/operations.md lists them with example alerts.
 *
 * @module
 */
import type pg from "pg";
import { counterOf, gaugeOf, Gauge, labelledCounterOf, type Registry } from "@holdfast/common/metrics";
import type { WebhookWorker } from "./worker.js";

/** What one scrape reads from PostgreSQL, once for all the gauges that show it. */
interface SharedFigures {
  readonly pending: number;
  readonly lagSeconds: number;
  readonly disabled: ReadonlyMap<string, number>;
  readonly open: readonly { endpointId: string; requests: number }[];
}

const DISABLED_REASONS = ["manual", "gone", "failing"] as const;

/** Registers the webhook worker's metrics in `registry`. */
export function registerWebhookMetrics(registry: Registry, worker: WebhookWorker, pool: pg.Pool): void {
  const intake = () => worker.totals().intake;
  const sender = () => worker.totals().sender;
  counterOf(registry, "holdfast_webhook_events_total", "Events taken in from the stream and stored", () => intake().messages);
  counterOf(registry, "holdfast_webhook_deliveries_created_total", "Deliveries created (one per event and endpoint that takes it)", () => intake().deliveries);
  labelledCounterOf(
    registry,
    { name: "holdfast_events_unattributed_total", help: "Events of tenants this deployment's database does not know, set aside", labelNames: ["consumer"] },
    () => [[{ consumer: "webhooks" }, intake().unknownTenantEvents]],
  );
  labelledCounterOf(
    registry,
    { name: "holdfast_webhook_deliveries_total", help: "Deliveries finished by this process, by outcome (failed: every attempt failed)", labelNames: ["outcome"] },
    () => [
      [{ outcome: "succeeded" }, sender().succeeded],
      [{ outcome: "failed" }, sender().failed],
    ],
  );
  labelledCounterOf(
    registry,
    { name: "holdfast_webhook_attempts_total", help: "Webhook requests made by this process, by result", labelNames: ["result"] },
    () => [
      [{ result: "succeeded" }, sender().succeeded],
      [{ result: "failed" }, sender().attempts - sender().succeeded],
    ],
  );
  counterOf(registry, "holdfast_webhook_retries_total", "Failed attempts followed by a scheduled retry", () => sender().retried);
  counterOf(registry, "holdfast_webhook_endpoints_disabled_total", "Endpoints this process disabled (gone, or failing too long)", () => sender().disabled);
  gaugeOf(registry, "holdfast_webhook_requests_in_flight", "Webhook requests this process has open", () => sender().inFlight);
  registerBacklog(registry, worker);
  registerShared(registry, pool);
}

/** The intake consumer's backlog in JetStream (-1 while NATS is away). */
function registerBacklog(registry: Registry, worker: WebhookWorker): void {
  new Gauge({
    name: "holdfast_webhook_intake_backlog_events",
    help: "Events of the intake's JetStream consumer: pending (not yet taken) and ack_pending (taken, not yet stored); -1 while NATS is away",
    labelNames: ["state"] as const,
    registers: [registry],
    async collect() {
      const backlog = await worker.backlog();
      this.set({ state: "pending" }, backlog?.pending ?? -1);
      this.set({ state: "ack_pending" }, backlog?.ackPending ?? -1);
    },
  });
}

/** Figures every replica shares, from PostgreSQL; one query per scrape serves them all. */
function registerShared(registry: Registry, pool: pg.Pool): void {
  let reading: Promise<SharedFigures> | null = null;
  const read = (): Promise<SharedFigures> => {
    reading ??= readShared(pool).finally(() => {
      reading = null;
    });
    return reading;
  };
  gaugeOf(registry, "holdfast_webhook_deliveries_pending", "Deliveries waiting for an attempt or in one, all replicas", async () => (await read()).pending);
  gaugeOf(
    registry,
    "holdfast_webhook_delivery_lag_seconds",
    "How long the most overdue delivery has been due (0 when none is)",
    async () => (await read()).lagSeconds,
  );
  new Gauge({
    name: "holdfast_webhook_endpoints_disabled",
    help: "Disabled webhook endpoints, by reason (manual, gone, failing)",
    labelNames: ["reason"] as const,
    registers: [registry],
    async collect() {
      const { disabled } = await read();
      for (const reason of DISABLED_REASONS) this.set({ reason }, disabled.get(reason) ?? 0);
    },
  });
  new Gauge({
    name: "holdfast_webhook_endpoint_requests_open",
    help: "Requests open per endpoint, all replicas (endpoints with none are left out; at most HOLDFAST_WEBHOOK_ENDPOINT_CONCURRENCY each)",
    labelNames: ["endpoint_id"] as const,
    registers: [registry],
    async collect() {
      this.reset();
      for (const { endpointId, requests } of (await read()).open) this.set({ endpoint_id: endpointId }, requests);
    },
  });
}

async function readShared(pool: pg.Pool): Promise<SharedFigures> {
  const [due, disabled, open] = await Promise.all([
    pool.query<{ pending: string; lag_seconds: number }>({
      name: "webhook_metrics_due",
      text: `select count(*) as pending,
                    coalesce(extract(epoch from now() - min(next_attempt_at) filter (where next_attempt_at <= now())), 0)::float8 as lag_seconds
               from webhook_deliveries where status = 'pending'`,
    }),
    pool.query<{ reason: string; endpoints: string }>({
      name: "webhook_metrics_disabled",
      text: "select disabled_reason as reason, count(*) as endpoints from webhook_endpoints where not enabled group by disabled_reason",
    }),
    pool.query<{ endpoint_id: string; requests: string }>({
      name: "webhook_metrics_open",
      text: `select endpoint_id, count(*) as requests from webhook_deliveries
              where status = 'pending' and locked_until > now() group by tenant_id, endpoint_id`,
    }),
  ]);
  return {
    pending: Number(due.rows[0]?.pending ?? 0),
    lagSeconds: Number(due.rows[0]?.lag_seconds ?? 0),
    disabled: new Map(disabled.rows.map((r) => [r.reason, Number(r.endpoints)])),
    open: open.rows.map((r) => ({ endpointId: r.endpoint_id, requests: Number(r.requests) })),
  };
}
