// What one load-generator run counts, and the JSON line it reports to the orchestrator.
import type { CpuUse } from "./cpu.js";
import { createHistogram, type Histogram, type SparseCounts } from "./histogram.js";
import type { Method } from "./rpc-client.js";
import type { StepKind } from "./workloads.js";

/**
 * How a command ended. A refusal (FAILED_PRECONDITION, such as INSUFFICIENT_FUNDS) and a
 * conflict (ALREADY_EXISTS: the same key with another body) are valid answers of a correct
 * ledger; an error is anything else (a timeout, UNAVAILABLE, INTERNAL, ...).
 */
export type Outcome = "ok" | "refused" | "conflict" | "error";

const GRPC_FAILED_PRECONDITION = 9;
const GRPC_ALREADY_EXISTS = 6;

/** The latency of one RPC type (Reserve, Capture, Spend, ...) within a run. */
export interface MethodLatency {
  /** Commands of this RPC answered inside the measured window. */
  commands: number;
  p50: number;
  p95: number;
  p99: number;
  max: number;
}

/** One run's result, as the load generator prints it (one JSON line on stdout). */
export interface LoadResult {
  /** Commands answered inside the measured window, replays included. */
  commands: number;
  seconds: number;
  perSecond: number;
  /** Commands sent for the first time (not replays, not same-key conflicts). */
  fresh: number;
  freshPerSecond: number;
  ok: number;
  refused: number;
  conflict: number;
  errors: number;
  replays: number;
  p50: number;
  p95: number;
  p99: number;
  max: number;
  /** The same percentiles per RPC type, keyed by the client's method name (`reserve`, `capture`, `spend`, ...). */
  byMethod: Record<string, MethodLatency>;
  /** Concurrent callers actually used (the raw baseline may use fewer connections). */
  clients: number;
  cpu: CpuUse | null;
  errorSample: string;
  histogram: SparseCounts;
  /** Set when the run itself failed (its load generator died): the counts are empty. */
  failure?: string;
}

/** The result of a run that failed before it could measure anything. */
export function emptyResult(failure: string): LoadResult {
  const zero = { commands: 0, seconds: 0, perSecond: 0, fresh: 0, freshPerSecond: 0, ok: 0, refused: 0, conflict: 0, errors: 0, replays: 0 };
  return { ...zero, p50: 0, p95: 0, p99: 0, max: 0, byMethod: {}, clients: 0, cpu: null, errorSample: "", histogram: [], failure };
}

export function classify(err: unknown): Outcome {
  const code = (err as { code?: unknown }).code;
  if (code === GRPC_FAILED_PRECONDITION) return "refused";
  if (code === GRPC_ALREADY_EXISTS) return "conflict";
  return "error";
}

/**
 * Counts commands answered between `start` and `stop` (performance.now() ms): commands that
 * end during the warm-up or after the window are not counted, so the rate is completions per
 * second of the window and every latency recorded belongs to it.
 */
export function createMeasurement(startMs: number, stopMs: number) {
  const histogram = createHistogram();
  const methods = new Map<Method, Histogram>();
  const counts = { ok: 0, refused: 0, conflict: 0, error: 0, fresh: 0, replays: 0 };
  let errorSample = "";
  return {
    record(method: Method, kind: StepKind, outcome: Outcome, sentMs: number, endedMs: number, err?: unknown): void {
      if (endedMs < startMs || endedMs > stopMs) return;
      histogram.record(endedMs - sentMs);
      let perMethod = methods.get(method);
      if (perMethod === undefined) {
        perMethod = createHistogram();
        methods.set(method, perMethod);
      }
      perMethod.record(endedMs - sentMs);
      counts[outcome]++;
      if (kind === "fresh") counts.fresh++;
      if (kind === "replay") counts.replays++;
      if (outcome === "error" && !errorSample) errorSample = String((err as Error | undefined)?.message ?? err);
    },
    /** An open-loop iteration not sent because too many were outstanding: an error, no latency. */
    shed(nowMs: number): void {
      if (nowMs < startMs || nowMs > stopMs) return;
      counts.error++;
      counts.fresh++;
      errorSample ||= "load generator: too many iterations outstanding (open loop)";
    },
    result(clients: number, cpu: CpuUse | null): LoadResult {
      const seconds = (stopMs - startMs) / 1000;
      const commands = counts.ok + counts.refused + counts.conflict + counts.error;
      return {
        commands,
        seconds,
        perSecond: commands / seconds,
        fresh: counts.fresh,
        freshPerSecond: counts.fresh / seconds,
        ok: counts.ok,
        refused: counts.refused,
        conflict: counts.conflict,
        errors: counts.error,
        replays: counts.replays,
        p50: histogram.percentile(50),
        p95: histogram.percentile(95),
        p99: histogram.percentile(99),
        max: histogram.maxMs(),
        byMethod: Object.fromEntries([...methods].map(([method, h]) => [method, latencyOf(h)])),
        clients,
        cpu,
        errorSample,
        histogram: histogram.toSparse(),
      };
    },
  };
}

export type Measurement = ReturnType<typeof createMeasurement>;

function latencyOf(h: Histogram): MethodLatency {
  return { commands: h.total(), p50: h.percentile(50), p95: h.percentile(95), p99: h.percentile(99), max: h.maxMs() };
}
