/**
 * The ledger's own Prometheus metrics, beside the RPC and in-flight metrics the server records
 * (packages/common/src/metrics.ts): commands by outcome, group commit, the outbox and its relay,
 * and wallet watchers. docs/operations.md lists them with example alerts.
 *
 * @module
 */
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import { HoldfastError } from "@holdfast/common/errors";
import { counterOf, gaugeOf, Counter, Gauge, type Registry } from "@holdfast/common/metrics";
import { ErrorDetailSchema } from "@holdfast/gen/holdfast/v1/errors_pb";
import type { Ledger } from "./domain/ledger.js";
import type { OutboxRelay, RelayStatus } from "./relay/outbox-relay.js";
import type { WalletFeed } from "./watch.js";

/** Codes that mean the ledger could not answer, as opposed to refusing the command. */
const FAILURE_CODES = new Set([
  Code.Unavailable,
  Code.Internal,
  Code.Unknown,
  Code.DeadlineExceeded,
  Code.Canceled,
  Code.ResourceExhausted,
  Code.Aborted,
  Code.DataLoss,
]);
/** Reasons that mean the ledger could not answer the command now; the others are refusals. */
const FAILURE_REASONS: ReadonlySet<string> = new Set(["OVERLOADED", "UNAVAILABLE", "DRAINING", "INTERNAL"]);
const RELAY_ROLES: readonly RelayStatus["role"][] = ["active", "standby", "stopped"];
const MS_PER_SECOND = 1000;

/** What the ledger metrics read at each scrape. */
export interface LedgerMetricsSources {
  readonly ledger: Ledger;
  readonly relay: OutboxRelay | null;
  readonly feed: WalletFeed;
}

/**
 * Counts every idempotent command (a method whose response has `replayed`) by outcome:
 * `applied`, `replayed` (the same idempotency key again), `refused` (an answer with a reason:
 * insufficient funds, not found, ...) or `failed` (the ledger could not answer: unavailable,
 * overloaded, deadline). Refusals are also counted by reason. It runs innermost, after the key
 * checks, so only calls that reached the command are counted.
 */
export function commandMetricsInterceptor(registry: Registry): Interceptor {
  const commands = new Counter({
    name: "holdfast_commands_total",
    help: "Idempotent commands by method and outcome (applied, replayed, refused, failed)",
    labelNames: ["method", "outcome"] as const,
    registers: [registry],
  });
  const refusals = new Counter({
    name: "holdfast_command_refusals_total",
    help: "Commands answered with an error, by method and ErrorDetail reason",
    labelNames: ["method", "reason"] as const,
    registers: [registry],
  });
  return (next) => async (req) => {
    if (req.method.output.field["replayed"] === undefined) return next(req);
    const method = req.method.name;
    try {
      const res = await next(req);
      const replayed = !res.stream && (res.message as { replayed?: unknown }).replayed === true;
      commands.inc({ method, outcome: replayed ? "replayed" : "applied" });
      return res;
    } catch (err) {
      const { reason, failed } = classify(err);
      commands.inc({ method, outcome: failed ? "failed" : "refused" });
      refusals.inc({ method, reason });
      throw err;
    }
  };
}

/**
 * What an error thrown by a command's handler says: its reason, and whether the ledger failed to
 * answer (rather than refusing). Handlers throw the HoldfastError family; the interceptors
 * outside turn it into a ConnectError, so both are read here.
 */
function classify(err: unknown): { reason: string; failed: boolean } {
  if (err instanceof HoldfastError) {
    return { reason: err.reason, failed: FAILURE_REASONS.has(err.reason) };
  }
  if (err instanceof ConnectError) {
    return { reason: err.findDetails(ErrorDetailSchema)[0]?.reason ?? "NONE", failed: FAILURE_CODES.has(err.code) };
  }
  // Anything else (the database away, a bug) is answered UNAVAILABLE or INTERNAL.
  return { reason: "NONE", failed: true };
}

/** Registers the metrics read from the ledger's parts at each scrape. */
export function registerLedgerMetrics(registry: Registry, sources: LedgerMetricsSources): void {
  registerGroupCommit(registry, sources.ledger);
  gaugeOf(registry, "holdfast_wallet_watchers", "Open WatchWallet streams in this process", () => sources.feed.watching());
  if (sources.relay !== null) registerRelay(registry, sources.relay);
}

/**
 * Group commit, from its running counters: the mean batch size over a window is
 * rate(commands) / rate(batches); the largest batch since start is a gauge.
 */
function registerGroupCommit(registry: Registry, ledger: Ledger): void {
  const stats = () => ledger.groupCommitStats() ?? { batches: 0, commands: 0, batchSizeMax: 0, fallbacks: 0 };
  counterOf(registry, "holdfast_group_commit_batches_total", "Group-commit batches (transactions) run", () => stats().batches);
  counterOf(registry, "holdfast_group_commit_commands_total", "Commands run in group-commit batches", () => stats().commands);
  counterOf(
    registry,
    "holdfast_group_commit_fallbacks_total",
    "Batches that rolled back and ran their commands one by one",
    () => stats().fallbacks,
  );
  gaugeOf(registry, "holdfast_group_commit_batch_size_max", "Largest group-commit batch since start", () => stats().batchSizeMax);
}

/**
 * The outbox and its relay. The backlog and lag are read from PostgreSQL at each scrape (one
 * indexed count), so every replica reports them, active or not.
 */
function registerRelay(registry: Registry, relay: OutboxRelay): void {
  let refreshed: Promise<RelayStatus> | null = null;
  // One query serves both gauges of a scrape.
  const refresh = (): Promise<RelayStatus> => {
    refreshed ??= relay.refreshStatus().finally(() => {
      refreshed = null;
    });
    return refreshed;
  };
  gaugeOf(registry, "holdfast_outbox_backlog_events", "Events committed and not yet published to NATS", async () => (await refresh()).backlog);
  gaugeOf(
    registry,
    "holdfast_outbox_publish_lag_seconds",
    "Age of the oldest event not yet published to NATS (0 when none waits)",
    async () => (await refresh()).lagMs / MS_PER_SECOND,
  );
  counterOf(registry, "holdfast_outbox_published_total", "Events this process's relay published", () => relay.status().publishedTotal);
  registerRelayRole(registry, relay);
  gaugeOf(registry, "holdfast_relay_nats_connected", "1 while the relay's NATS connection works, else 0", () =>
    relay.status().nats === "connected" ? 1 : 0,
  );
}

/** `holdfast_relay_role{role}`: 1 for this replica's role (active, standby, stopped), 0 for the others. */
function registerRelayRole(registry: Registry, relay: OutboxRelay): void {
  new Gauge({
    name: "holdfast_relay_role",
    help: "The outbox relay's role in this replica: 1 for the current role, 0 for the others",
    labelNames: ["role"] as const,
    registers: [registry],
    collect() {
      const current = relay.status().role;
      for (const role of RELAY_ROLES) this.set({ role }, role === current ? 1 : 0);
    },
  });
}
