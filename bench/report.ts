/** One measurement: a system under one workload at one concurrency. */
export interface Row {
  workload: string;
  concurrency: number;
  system: string;
  perSecond: number;
  p50: number;
  p95: number;
  p99: number;
  refused: number;
  conflict: number;
  errors: number;
  replays: number;
  invariants: string;
}

const ms = (v: number) => v.toFixed(1);

function find(rows: Row[], workload: string, system: string, concurrency = 64): Row | undefined {
  return rows.find((r) => r.workload === workload && r.system === system && r.concurrency === concurrency);
}

/** The targets of the performance issue, at concurrency 64, each met or missed with its ratio. */
export function targets(rows: Row[]): string[] {
  const out: string[] = [];
  const ratio = (a?: Row, b?: Row) => (a && b ? a.perSecond / b.perSecond : NaN);
  const verdict = (ok: boolean, text: string) => `- ${ok ? "MET   " : "MISSED"} ${text}`;
  const hot = find(rows, "hot", "holdfast");
  if (hot) {
    const raw = ratio(hot, find(rows, "hot", "raw hot row"));
    const naive = ratio(hot, find(rows, "hot", "naive service"));
    out.push(verdict(raw >= 2, `hot wallet: Holdfast ${raw.toFixed(2)}x the raw hot-row baseline (target ≥ 2x)`));
    out.push(verdict(naive >= 5, `hot wallet: Holdfast ${naive.toFixed(2)}x the naive service (target ≥ 5x)`));
    const core = find(rows, "hot", "holdfast core, no RPC");
    if (core) {
      const coreRaw = ratio(core, find(rows, "hot", "raw hot row"));
      const coreSolo = ratio(core, find(rows, "hot", "holdfast core, no RPC, group commit off"));
      out.push(`- (for reference) hot wallet without RPC: Holdfast core ${coreRaw.toFixed(2)}x the raw hot row; group commit ${coreSolo.toFixed(2)}x one transaction per command`);
    }
  }
  const uniform = find(rows, "uniform", "holdfast");
  if (uniform) {
    const naive = ratio(uniform, find(rows, "uniform", "naive service"));
    out.push(verdict(naive >= 1, `uniform: Holdfast ${naive.toFixed(2)}x the naive service (target ≥ 1x)`));
    out.push(verdict(uniform.p99 < 20, `uniform: Holdfast p99 ${ms(uniform.p99)} ms (target < 20 ms)`));
  }
  const retries = find(rows, "retries", "holdfast");
  if (retries && uniform) {
    const cost = 1 - retries.perSecond / uniform.perSecond;
    const text = cost > 0 ? `${(cost * 100).toFixed(1)}% below` : `${(-cost * 100).toFixed(1)}% above`;
    out.push(verdict(cost < 0.1, `retries: throughput ${text} uniform (target: less than 10% below)`));
  }
  return out;
}

export function printReport(rows: Row[], facts: Record<string, string>, settings: Record<string, string>): void {
  const lines: string[] = ["", "## Machine", ""];
  for (const [k, v] of Object.entries(facts)) lines.push(`- ${k}: ${v}`);
  lines.push(`- run: ${settings["duration"]} s measured after ${settings["warmup"]} s warm-up per row; ` +
    (settings["rate"] !== "0" ? `open loop at ${settings["rate"]}/s` : "closed loop") +
    "; load generator, ledger, naive service and PostgreSQL share the machine, each in its own process");
  lines.push("", "## Results", "");
  lines.push("| workload | concurrency | system | commands/s | p50 ms | p95 ms | p99 ms | refused | conflicts | errors | invariants |");
  lines.push("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---|");
  for (const r of rows) {
    lines.push(
      `| ${r.workload} | ${r.concurrency} | ${r.system} | ${Math.round(r.perSecond)} | ${ms(r.p50)} | ${ms(r.p95)} | ${ms(r.p99)} | ${r.refused} | ${r.conflict} | ${r.errors} | ${r.invariants} |`,
    );
  }
  lines.push("", "## Targets (concurrency 64)", "", ...targets(rows), "");
  process.stdout.write(lines.join("\n") + "\n");
}
