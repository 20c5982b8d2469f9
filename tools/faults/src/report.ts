/**
 * The battery's report: the figures of each scenario as a Markdown table (readable in a terminal,
 * pasted as is into docs/reliability.md), then every violation the checker listed and the
 * negative control's cases.
 *
 * @module
 */
import type { BatteryReport, ScenarioReport } from "./battery.js";
import type { DeliveryFigures } from "./checker.js";

/** The whole report as Markdown. */
export function formatReport(report: BatteryReport, command: string): string {
  const { machine } = report;
  const lines = [
    `Command: \`${command}\``,
    `Machine: ${machine.cores} cores (${machine.cpuModel}), ${machine.memoryGb} GB, load average ${machine.loadAverage} at the start, Node ${machine.node}, ${machine.natsServer}, ${machine.postgres} (embedded)`,
    `Result: ${report.ok ? "ok" : "FAILED"} in ${Math.round(report.durationMs / 1000)} s`,
    "",
    ...formatFigures(report.scenarios),
    "",
    ...report.scenarios.flatMap(formatFaults),
    ...report.scenarios.flatMap(formatProblems),
    ...report.scenarios.flatMap(formatControl),
  ];
  if (!report.ok) lines.push("", `Logs of the processes: ${report.logDir}`);
  return lines.join("\n");
}

/** One row per figure, one column per scenario. */
export function formatFigures(scenarios: readonly ScenarioReport[]): string[] {
  const rows: [string, (s: ScenarioReport) => string][] = [
    ["settings", (s) => `${s.settings.loadMs / 1000} s at ${s.settings.ratePerSecond}/s, ${s.settings.clients} clients, ${s.settings.wallets} wallets, down ${s.settings.downMs} ms`],
    ["faults injected", (s) => `${s.faults.length} (${summarizeFaults(s)})`],
    ["commands sent", (s) => String(s.result.figures.commands)],
    ["commands under fault", (s) => String(s.result.figures.underFault)],
    ["retries (commands retried)", (s) => `${s.result.figures.retries} (${s.result.figures.retriedCommands})`],
    ["answers that were replays", (s) => String(s.result.figures.replayed)],
    ["applied / refused (business)", (s) => `${s.result.figures.applied} / ${s.result.figures.refused}`],
    ["unacknowledged (retries ran out)", (s) => `${s.result.figures.unacknowledged} (${s.result.figures.unacknowledgedApplied} applied)`],
    ["**lost**", (s) => `**${s.result.figures.lost}**`],
    ["**doubled**", (s) => `**${s.result.figures.doubled}**`],
    ["journal rows", (s) => String(s.result.figures.journalRows)],
    ["outbox events / stream messages", (s) => `${s.result.figures.events} / ${s.result.figures.streamMessages}`],
    ...deliveryRows("webhooks", scenarios, (s) => s.result.figures.endpoints),
    ...deliveryRows("billing", scenarios, (s) => s.result.figures.engines),
    ["process problems (unasked exits, failed faults)", (s) => String(s.result.violationCounts.process ?? 0)],
    ["load ran / everything settled after", (s) => `${seconds(s.loadMsActual)} s / ${seconds(s.quiesceMs)} s${s.quiesced ? "" : " (timed out)"}`],
    ["violations", (s) => String(Object.values(s.result.violationCounts).reduce((a, b) => a + (b ?? 0), 0))],
    ["negative control", (s) => `${s.negativeControl.cases.filter((c) => c.caught).length} of ${s.negativeControl.cases.length} doctored runs caught`],
  ];
  const header = `| | ${scenarios.map((s) => s.settings.name).join(" | ")} |`;
  const rule = `|---|${scenarios.map(() => "---").join("|")}|`;
  return [header, rule, ...rows.map(([name, cell]) => `| ${name} | ${scenarios.map(cell).join(" | ")} |`)];
}

/** A row per endpoint or engine: expected, delivered, lost, duplicates. */
function deliveryRows(
  what: string,
  scenarios: readonly ScenarioReport[],
  figures: (s: ScenarioReport) => readonly DeliveryFigures[],
): [string, (s: ScenarioReport) => string][] {
  const count = Math.max(0, ...scenarios.map((s) => figures(s).length));
  return Array.from({ length: count }, (_, i): [string, (s: ScenarioReport) => string] => [
    `${what}: ${i + 1}`,
    (s) => {
      const f = figures(s)[i];
      return f === undefined ? "" : `${f.name}: ${f.delivered} of ${f.expected}, lost ${f.lost}, duplicates ${f.duplicates}`;
    },
  ]);
}

function seconds(ms: number): string {
  return (ms / 1000).toFixed(1);
}

function summarizeFaults(s: ScenarioReport): string {
  const counts = new Map<string, number>();
  for (const f of s.faults) counts.set(f.target, (counts.get(f.target) ?? 0) + 1);
  return [...counts].map(([target, n]) => (n > 1 ? `${target} ×${n}` : target)).join(", ");
}

function formatFaults(s: ScenarioReport): string[] {
  return [
    `Faults of ${s.settings.name}:`,
    ...s.faults.map((f) => `- ${f.target} (${f.subject}): down and serving again in ${f.endMs - f.startMs} ms${f.error === null ? "" : `; FAILED: ${f.error}`}`),
    "",
  ];
}

function formatProblems(s: ScenarioReport): string[] {
  if (s.result.ok && s.quiesced) return [];
  return [
    `Violations of ${s.settings.name}${s.quiesced ? "" : " (it never settled: something was still missing at the timeout)"}:`,
    ...Object.entries(s.result.violationCounts).map(([check, n]) => `- ${check}: ${n}`),
    ...s.result.violations.map((v) => `  - ${v.check}: ${v.detail}`),
    "",
  ];
}

function formatControl(s: ScenarioReport): string[] {
  return [
    `Negative control of ${s.settings.name} (the same snapshot, doctored; the untouched one ${s.negativeControl.baselineOk ? "passes" : "FAILS"}):`,
    ...s.negativeControl.cases.map((c) => `- ${c.name}: ${c.caught ? "caught" : "NOT CAUGHT"} (${c.detail})`),
    "",
  ];
}
