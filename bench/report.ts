// The printed report: machine facts, one table row per measurement, and the targets at
// concurrency 64, each met or missed with its measured ratio and the numbers that explain it.
import type { LoadResult } from "./measure.js";
import { TRANSFER_WALLETS } from "./workloads.js";

/** The system names of the table; the targets look rows up by them. */
export const SYSTEMS = {
  holdfast: "holdfast",
  holdfastSolo: "holdfast, group commit off",
  naive: "naive service",
  raw: "raw hot row",
  core: "holdfast core, no RPC",
  coreSolo: "holdfast core, no RPC, group commit off",
  baseline: "holdfast@baseline",
  holdfastNoLimit: "holdfast, rate limits off",
  alert: "holdfast, balance alert on",
  plain: "plain double entry",
  emptyRpc: "empty RPC",
} as const;

/** The row of --grants: Holdfast on wallets whose funds are in `n` grants each. */
export function grantsSystem(n: number): string {
  return `holdfast (${n} grants/wallet)`;
}

/** One measurement: a system under one workload at one concurrency, and its invariant check. */
export interface Row extends Omit<LoadResult, "histogram"> {
  workload: string;
  concurrency: number;
  system: string;
  /** Violations found after the run; empty when every invariant holds. */
  violations: string[];
  histogram?: LoadResult["histogram"];
}

export interface RunSettings {
  durationSeconds: number;
  warmupSeconds: number;
  ratePerSecond: number;
  client: string;
  connectionsPerClient: number;
  walletsTotal: number;
}

/** A row whose "other" processes used this many cores or more was disturbed by them. */
const DISTURBED_OTHER_CORES_MIN = 0.25;
/** The concurrency the targets are stated at; the transfers target is stated at its own. */
const TARGET_CONCURRENCY = 64;
const TRANSFERS_TARGET_CONCURRENCY = 20;
const TARGETS = { hotOverRaw: 2, hotOverNaive: 5, hotOverEmptyRpc: 0.6, uniformOverNaive: 1, uniformP99Ms: 20, replayCostMax: 0.1, coreOverPlain: 1 };

const fixed = (v: number, digits = 1) => (Number.isFinite(v) ? v.toFixed(digits) : "n/a");
const cores = (v: number | null | undefined) => (v === null || v === undefined ? "-" : v.toFixed(2));
/** Stolen time below this many cores is not worth a mention. */
const STEAL_CORES_SHOWN_MIN = 0.05;
const machineCores = (cpu: NonNullable<Row["cpu"]>) =>
  cpu.stealCores >= STEAL_CORES_SHOWN_MIN ? `${cores(cpu.machineCores)} (+${cores(cpu.stealCores)} stolen)` : cores(cpu.machineCores);

function find(rows: Row[], workload: string, system: string, concurrency = TARGET_CONCURRENCY): Row | undefined {
  return rows.find((r) => r.workload === workload && r.system === system && r.concurrency === concurrency);
}

function ratio(a: Row | undefined, b: Row | undefined, rate: (r: Row) => number = (r) => r.perSecond): number {
  return a && b && rate(b) > 0 ? rate(a) / rate(b) : NaN;
}

function cpuText(row: Row | undefined): string {
  if (!row?.cpu) return "CPU not measured";
  const perCommand = (c: number) => `${cores(c)} (${fixed((c / Math.max(1, row.perSecond)) * 1000, 2)} ms CPU per command)`;
  const service = row.cpu.serviceCores === null ? "" : `, the service process ${perCommand(row.cpu.serviceCores)}`;
  return (
    `the machine was ${machineCores(row.cpu)} cores busy: PostgreSQL ${perCommand(row.cpu.postgresCores)}${service}, ` +
    `the load generator ${cores(row.cpu.loadgenCores)}, other processes ${cores(row.cpu.otherCores)}${othersText(row.cpu)}`
  );
}

function othersText(cpu: NonNullable<Row["cpu"]>): string {
  const named = Object.entries(cpu.others).map(([name, c]) => `${name} ${cores(c)}`);
  return named.length > 0 ? ` (${named.join(", ")})` : "";
}

function verdict(ok: boolean, text: string, why: string[]): string[] {
  return [`- ${ok ? "MET   " : "MISSED"} ${text}`, ...why.map((w) => `  - ${w}`)];
}

function hotTargets(rows: Row[], fsyncUs: number | null): string[] {
  const hot = find(rows, "hot", SYSTEMS.holdfast);
  if (!hot) return [];
  const raw = find(rows, "hot", SYSTEMS.raw);
  const naive = find(rows, "hot", SYSTEMS.naive);
  const solo = find(rows, "hot", SYSTEMS.holdfastSolo);
  const core = find(rows, "hot", SYSTEMS.core);
  const emptyRpc = find(rows, "hot", SYSTEMS.emptyRpc);
  const overRaw = ratio(hot, raw);
  const overNaive = ratio(hot, naive);
  const why = [
    `Holdfast ${fixed(hot.perSecond, 0)}/s, p99 ${fixed(hot.p99)} ms; ${cpuText(hot)}.`,
    raw
      ? `raw hot row ${fixed(raw.perSecond, 0)}/s with ${raw.clients} clients` +
        (fsyncUs ? ` (one flush per commit: at most ~${fixed(1e6 / fsyncUs, 0)}/s at this disk's ${fsyncUs} µs fdatasync)` : "") +
        `; ${cpuText(raw)}.`
      : "raw hot row not measured.",
  ];
  if (solo) why.push(`group commit: ${fixed(ratio(hot, solo), 2)}x Holdfast with group commit off (${fixed(solo.perSecond, 0)}/s).`);
  if (core) why.push(`the same ledger core without RPC (in the load generator's process): ${fixed(core.perSecond, 0)}/s = ${fixed(ratio(core, raw), 2)}x the raw hot row, ${fixed(ratio(hot, core), 2)}x of it reaches callers over gRPC.`);
  return [
    ...verdict(overRaw >= TARGETS.hotOverRaw, `hot wallet: Holdfast ${fixed(overRaw, 2)}x the raw hot-row baseline (target ≥ ${TARGETS.hotOverRaw}x)`, why),
    ...verdict(overNaive >= TARGETS.hotOverNaive, `hot wallet: Holdfast ${fixed(overNaive, 2)}x the naive service (target ≥ ${TARGETS.hotOverNaive}x)`, [
      naive ? `naive service ${fixed(naive.perSecond, 0)}/s, p99 ${fixed(naive.p99)} ms; ${cpuText(naive)}.` : "naive service not measured.",
    ]),
    ...(emptyRpc
      ? verdict(ratio(hot, emptyRpc) >= TARGETS.hotOverEmptyRpc, `hot wallet: Holdfast ${fixed(ratio(hot, emptyRpc), 2)}x the empty RPC (target ≥ ${TARGETS.hotOverEmptyRpc}x)`, [
          `empty RPC (the ledger's server, auth and interceptors, constant answers) ${fixed(emptyRpc.perSecond, 0)}/s, p99 ${fixed(emptyRpc.p99)} ms; ${cpuText(emptyRpc)}.`,
        ])
      : []),
  ];
}

/** Two-wallet transfers: the core's Transfer against the plain double-entry function, at 20 callers. */
function transfersTargets(rows: Row[]): string[] {
  const core = find(rows, "transfers", SYSTEMS.core, TRANSFERS_TARGET_CONCURRENCY);
  const plain = find(rows, "transfers", SYSTEMS.plain, TRANSFERS_TARGET_CONCURRENCY);
  if (!core || !plain) return [];
  const overPlain = ratio(core, plain);
  return verdict(overPlain >= TARGETS.coreOverPlain, `transfers (${TRANSFERS_TARGET_CONCURRENCY} callers): the core ${fixed(overPlain, 2)}x the plain double entry (target ≥ ${TARGETS.coreOverPlain}x)`, [
    `holdfast core, no RPC ${fixed(core.perSecond, 0)}/s, p99 ${fixed(core.p99)} ms (an idempotency key and two events per transfer); ${cpuText(core)}.`,
    `plain double entry ${fixed(plain.perSecond, 0)}/s, p99 ${fixed(plain.p99)} ms (one function: two locks, a transfer row, two entries, two balances); ${cpuText(plain)}.`,
  ]);
}

function uniformTargets(rows: Row[]): string[] {
  const uniform = find(rows, "uniform", SYSTEMS.holdfast);
  if (!uniform) return [];
  const naive = find(rows, "uniform", SYSTEMS.naive);
  const overNaive = ratio(uniform, naive);
  // Little's law for a closed loop: callers = throughput × mean latency.
  const meanMs = (TARGET_CONCURRENCY / uniform.perSecond) * 1000;
  const neededPerSecond = TARGET_CONCURRENCY / (TARGETS.uniformP99Ms / 1000);
  return [
    ...verdict(overNaive >= TARGETS.uniformOverNaive, `uniform: Holdfast ${fixed(overNaive, 2)}x the naive service (target ≥ ${TARGETS.uniformOverNaive}x)`, [
      `Holdfast ${fixed(uniform.perSecond, 0)}/s; ${cpuText(uniform)}.`,
      naive ? `naive service ${fixed(naive.perSecond, 0)}/s; ${cpuText(naive)}.` : "naive service not measured.",
    ]),
    ...verdict(uniform.p99 < TARGETS.uniformP99Ms, `uniform: Holdfast p99 ${fixed(uniform.p99)} ms (target < ${TARGETS.uniformP99Ms} ms)`, [
      `${TARGET_CONCURRENCY} callers in a closed loop at ${fixed(uniform.perSecond, 0)}/s wait ${fixed(meanMs)} ms on average (Little's law); ` +
        `a p99 under ${TARGETS.uniformP99Ms} ms at this concurrency needs more than ${fixed(neededPerSecond, 0)}/s.`,
    ]),
  ];
}

function belowOrAbove(cost: number): string {
  return cost >= 0 ? `${fixed(cost * 100)}% below` : `${fixed(-cost * 100)}% above`;
}

function retriesTargets(rows: Row[]): string[] {
  const retries = find(rows, "retries", SYSTEMS.holdfast);
  const uniform = find(rows, "uniform", SYSTEMS.holdfast);
  if (!retries || !uniform) return [];
  const freshCost = 1 - ratio(retries, uniform, (r) => r.freshPerSecond);
  const totalCost = 1 - ratio(retries, uniform);
  const replayShare = retries.replays / Math.max(1, retries.commands);
  return verdict(freshCost < TARGETS.replayCostMax, `retries: first-time commands/s ${belowOrAbove(freshCost)} uniform's (target: less than ${TARGETS.replayCostMax * 100}% below)`, [
    `first-time commands ${fixed(retries.freshPerSecond, 0)}/s against uniform's ${fixed(uniform.freshPerSecond, 0)}/s; replays were ${fixed(replayShare * 100)}% ` +
      `of the ${retries.commands} commands answered, same-key conflicts ${retries.conflict}; all commands/s, replays included, ${belowOrAbove(totalCost)} uniform's.`,
    `uniform and retries are separate runs: a few % either way is run-to-run noise on this machine.`,
  ]);
}

/** Holdfast's rows compared with itself: what each differs in from the "holdfast" row. */
const SELF_COMPARISONS: { prefix: string; what: string }[] = [
  { prefix: SYSTEMS.baseline, what: "the baseline checkout's ledger" },
  { prefix: "holdfast (", what: "wallets with their funds in grants" },
  { prefix: SYSTEMS.holdfastNoLimit, what: "no rate limiter" },
  { prefix: SYSTEMS.alert, what: "one tenant-wide balance alert, evaluated on every change, never crossed" },
];

/**
 * One line per row of --baseline, --grants, nolimit and --alert on: its commands/s and p99 next to the
 * "holdfast" row's of the same workload and callers, and how many more (or fewer) commands/s
 * the "holdfast" row had; and per "holdfast" row of the metered workload, the same against
 * the pairs workload's (plain Reserve → Capture). Rows run back to back, so a few % is
 * run-to-run noise.
 */
export function comparisonLines(rows: Row[]): string[] {
  const lines: string[] = [];
  for (const metered of rows.filter((r) => r.workload === "metered" && r.system === SYSTEMS.holdfast)) {
    const pairs = find(rows, "pairs", SYSTEMS.holdfast, metered.concurrency);
    if (!pairs) continue;
    const more = ratio(pairs, metered) - 1;
    lines.push(
      `- metered ${metered.concurrency} (ReserveUsage → CaptureUsage): ${fixed(metered.perSecond, 0)}/s, p99 ${fixed(metered.p99)} ms; ` +
        `pairs (Reserve → Capture) ${fixed(pairs.perSecond, 0)}/s, p99 ${fixed(pairs.p99)} ms: ${fixed(Math.abs(more) * 100)}% ${more >= 0 ? "more" : "fewer"} commands/s`,
    );
  }
  for (const row of rows) {
    const kind = SELF_COMPARISONS.find((c) => row.system.startsWith(c.prefix));
    const holdfast = kind && find(rows, row.workload, SYSTEMS.holdfast, row.concurrency);
    if (!kind || !holdfast) continue;
    const more = ratio(holdfast, row) - 1;
    lines.push(
      `- ${row.workload} ${row.concurrency}, ${row.system} (${kind.what}): ${fixed(row.perSecond, 0)}/s, p99 ${fixed(row.p99)} ms; ` +
        `holdfast ${fixed(holdfast.perSecond, 0)}/s, p99 ${fixed(holdfast.p99)} ms: ${fixed(Math.abs(more) * 100)}% ${more >= 0 ? "more" : "fewer"} commands/s`,
    );
  }
  return lines;
}

/** The targets of the performance issue, at concurrency 64 (transfers at 20), each met or missed with the why. */
export function targetLines(rows: Row[], fsyncUs: number | null): string[] {
  const lines = [...hotTargets(rows, fsyncUs), ...transfersTargets(rows), ...uniformTargets(rows), ...retriesTargets(rows)];
  return lines.length > 0 ? lines : [`- no target measured (they need concurrency ${TARGET_CONCURRENCY}, transfers ${TRANSFERS_TARGET_CONCURRENCY})`];
}

function holdfastOver(rows: Row[], row: Row): string {
  if (row.system === SYSTEMS.holdfast) return "";
  const holdfast = find(rows, row.workload, SYSTEMS.holdfast, row.concurrency);
  return holdfast ? `${fixed(ratio(holdfast, row), 2)}x` : "";
}

export function tableLines(rows: Row[]): string[] {
  const lines = [
    "| workload | callers | system | commands/s | p50 ms | p95 ms | p99 ms | refused | conflicts | errors | replays | holdfast ÷ this | CPU cores: machine / postgres / service / loadgen / other | invariants |",
    "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
  ];
  for (const r of rows) {
    const callers = r.clients === r.concurrency ? `${r.concurrency}` : `${r.concurrency} (${r.clients} conns)`;
    const cpu = r.cpu ? `${machineCores(r.cpu)} / ${cores(r.cpu.postgresCores)} / ${cores(r.cpu.serviceCores)} / ${cores(r.cpu.loadgenCores)} / ${cores(r.cpu.otherCores)}` : "-";
    lines.push(
      `| ${r.workload} | ${callers} | ${r.system} | ${fixed(r.perSecond, 0)} | ${fixed(r.p50)} | ${fixed(r.p95)} | ${fixed(r.p99)} | ` +
        `${r.refused} | ${r.conflict} | ${r.errors} | ${r.replays} | ${holdfastOver(rows, r)} | ${cpu} | ${r.failure ? "RUN FAILED" : r.violations.length === 0 ? "ok" : "VIOLATED"} |`,
    );
  }
  return lines;
}

/** The RPCs the per-RPC table names, in the order a workload sends them; others follow by name. */
const METHOD_ORDER = ["reserve", "capture", "spend", "reserveUsage", "captureUsage", "transfer", "deposit"];
const METHOD_TITLES: Record<string, string> = {
  reserve: "Reserve",
  capture: "Capture",
  spend: "Spend",
  reserveUsage: "ReserveUsage",
  captureUsage: "CaptureUsage",
  transfer: "Transfer",
  deposit: "Deposit",
};

/** CPU milliseconds per command of one process column (cores busy ÷ commands per second). */
function msPerCommand(busyCores: number | null | undefined, perSecond: number): string {
  return busyCores === null || busyCores === undefined || !(perSecond > 0) ? "-" : ((busyCores * 1000) / perSecond).toFixed(2);
}

/**
 * Latency per RPC type (p50 / p99 of Reserve, Capture, Spend, ...) of every row, with the CPU
 * each process spent per command (the table's CPU columns divided by the row's commands/s).
 */
export function methodLatencyLines(rows: Row[]): string[] {
  const rank = (m: string) => (METHOD_ORDER.includes(m) ? METHOD_ORDER.indexOf(m) : METHOD_ORDER.length);
  const lines = [
    "| workload | callers | system | p50 / p99 ms per RPC | CPU ms per command: postgres / service / loadgen |",
    "|---|---:|---|---|---|",
  ];
  for (const r of rows) {
    const methods = Object.entries(r.byMethod ?? {}).sort(([a], [b]) => rank(a) - rank(b) || a.localeCompare(b));
    if (methods.length === 0) continue;
    const latency = methods.map(([m, l]) => `${METHOD_TITLES[m] ?? m} ${fixed(l.p50)} / ${fixed(l.p99)}`).join("; ");
    const cpu = r.cpu
      ? `${msPerCommand(r.cpu.postgresCores, r.perSecond)} / ${msPerCommand(r.cpu.serviceCores, r.perSecond)} / ${msPerCommand(r.cpu.loadgenCores, r.perSecond)}`
      : "-";
    lines.push(`| ${r.workload} | ${r.concurrency} | ${r.system} | ${latency} | ${cpu} |`);
  }
  return lines.length > 2 ? lines : [];
}

export function reportText(rows: Row[], facts: Record<string, string>, settings: RunSettings, fsyncUs: number | null): string {
  const loop = settings.ratePerSecond > 0 ? `open loop at ${settings.ratePerSecond} commands/s (at most "callers" outstanding)` : "closed loop";
  const lines = ["", "## Machine", ""];
  for (const [k, v] of Object.entries(facts)) lines.push(`- ${k}: ${v}`);
  lines.push(
    "",
    "## Method",
    "",
    `- Each row: ${settings.durationSeconds} s measured after ${settings.warmupSeconds} s of warm-up, ${loop}; a Reserve → Capture pair or a Spend per iteration (half each), on one of ${settings.walletsTotal} funded wallets (uniform, retries) or on one hot wallet (hot); retries re-sends 5% of the commands at once and 5% a second later with the same key, and 1% with the same key and another amount; pairs and metered send only Reserve → Capture, and ReserveUsage → CaptureUsage on a rate card, both on the uniform wallets; transfers sends one Transfer between two of the first ${TRANSFER_WALLETS} uniform wallets.`,
    `- The load generator is a separate process per row (gRPC over HTTP/2 with ${settings.client}, ${settings.connectionsPerClient} connections); the Holdfast ledger and the naive service each run in their own process; PostgreSQL is the same server for all. All of them share the machine's cores.`,
    "- Invariants (docs/architecture.md, \"Invariants\") are checked after every Holdfast row, the naive service's own (balances = journal, none below zero) after each of its rows.",
    "- CPU cores: busy cores averaged over the measured window: the whole machine (/proc/stat; stolen = time the hypervisor gave to other VMs), all PostgreSQL processes, the service process under test, the load generator itself, and the rest (other: nats-server, the other ledger's outbox relay, anything else running on the machine).",
    "",
    "## Results",
    "",
    ...tableLines(rows),
  );
  const perMethod = methodLatencyLines(rows);
  if (perMethod.length > 0) lines.push("", "### Latency per RPC, CPU per command", "", ...perMethod);
  for (const r of rows.filter((r) => r.failure)) lines.push(`- RUN FAILED: ${r.workload} ${r.concurrency} ${r.system}: ${r.failure}`);
  const failed = rows.filter((r) => r.violations.length > 0);
  lines.push("", failed.length === 0 ? `Invariants: ok after all ${rows.length} rows.` : `Invariants: VIOLATED in ${failed.length} rows:`);
  for (const r of failed) lines.push(`- ${r.workload} ${r.concurrency} ${r.system}: ${r.violations.join("; ")}`);
  const disturbed = rows.filter((r) => (r.cpu?.otherCores ?? 0) >= DISTURBED_OTHER_CORES_MIN);
  if (disturbed.length > 0) {
    lines.push(
      `Disturbed: in ${disturbed.length} of ${rows.length} rows processes outside the benchmark used ${DISTURBED_OTHER_CORES_MIN} cores or more ` +
        `(the "other" column; named in the JSON, and for the target rows below), so those rows had less than the machine's ${facts["cores"] ?? "?"} cores.`,
    );
  }
  const errored = rows.filter((r) => r.errors > 0);
  for (const r of errored) lines.push(`- errors in ${r.workload} ${r.concurrency} ${r.system}: ${r.errors}, e.g. ${r.errorSample}`);
  const comparisons = comparisonLines(rows);
  if (comparisons.length > 0) lines.push("", "## Holdfast against itself", "", ...comparisons);
  lines.push("", `## Targets (${TARGET_CONCURRENCY} callers, transfers ${TRANSFERS_TARGET_CONCURRENCY}; synchronous_commit ${facts["synchronous_commit"] ?? "?"})`, "", ...targetLines(rows, fsyncUs), "");
  return lines.join("\n");
}
