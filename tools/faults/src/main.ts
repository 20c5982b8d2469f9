/**
 * `npm run faults`: runs the fault battery (battery.ts) and prints its report. Exits 0 when every
 * check passed and the negative control caught every doctored run, 1 otherwise, 2 for bad options.
 *
 *   npm run faults                          # the full battery (about 6 minutes)
 *   npm run faults -- --ci                  # the test suite's size (about a minute)
 *   npm run faults -- --scenario single --load-seconds 30 --rounds 1 --rate 100
 *   npm run faults -- --json report.json --keep-logs
 *
 * @module
 */
import { writeFile } from "node:fs/promises";
import { parseArgs } from "node:util";

import { runBattery } from "./battery.js";
import { formatReport } from "./report.js";
import { CI_SETTINGS, FULL_SETTINGS, singleServerFaults, type BatterySettings, type ScenarioName, type ScenarioSettings } from "./settings.js";

const USAGE = `usage: npm run faults -- [--ci] [--scenario single|cluster] [--load-seconds N] [--rate N]
       [--clients N] [--wallets N] [--rounds N] [--down-ms N] [--seed N] [--json FILE] [--keep-logs]`;

const { values } = (() => {
  try {
    return parseArgs({
      options: {
        ci: { type: "boolean" },
        scenario: { type: "string" },
        "load-seconds": { type: "string" },
        rate: { type: "string" },
        clients: { type: "string" },
        wallets: { type: "string" },
        rounds: { type: "string" },
        "down-ms": { type: "string" },
        seed: { type: "string" },
        json: { type: "string" },
        "keep-logs": { type: "boolean" },
        help: { type: "boolean" },
      },
    });
  } catch (err) {
    process.stderr.write(`${(err as Error).message}\n${USAGE}\n`);
    process.exit(2);
  }
})();
if (values.help === true) {
  process.stdout.write(`${USAGE}\n`);
  process.exit(0);
}

/** A whole number from an option, or the fallback; exits 2 on anything else. */
function integer(name: string, raw: string | undefined, fallback: number): number {
  if (raw === undefined) return fallback;
  const n = Number(raw);
  if (!Number.isSafeInteger(n) || n < 0) {
    process.stderr.write(`--${name} must be a whole number, not "${raw}"\n${USAGE}\n`);
    process.exit(2);
  }
  return n;
}

function settingsFromOptions(): BatterySettings {
  const base = values.ci === true ? CI_SETTINGS : FULL_SETTINGS;
  const only = values.scenario as ScenarioName | undefined;
  if (only !== undefined && only !== "single" && only !== "cluster") {
    process.stderr.write(`--scenario must be single or cluster\n${USAGE}\n`);
    process.exit(2);
  }
  const scenarios = base.scenarios
    .filter((s) => only === undefined || s.name === only)
    .map((s): ScenarioSettings => ({
      ...s,
      loadMs: integer("load-seconds", values["load-seconds"], s.loadMs / 1000) * 1000,
      ratePerSecond: integer("rate", values.rate, s.ratePerSecond),
      clients: integer("clients", values.clients, s.clients),
      wallets: integer("wallets", values.wallets, s.wallets),
      downMs: integer("down-ms", values["down-ms"], s.downMs),
      faults: values.rounds === undefined ? s.faults : roundsOf(s, integer("rounds", values.rounds, 1)),
    }));
  return { ...base, seed: integer("seed", values.seed, base.seed), scenarios };
}

function roundsOf(s: ScenarioSettings, rounds: number): ScenarioSettings["faults"] {
  return s.name === "single" ? singleServerFaults(rounds) : Array.from({ length: rounds }, () => "nats-node" as const);
}

const settings = settingsFromOptions();
const report = await runBattery(settings, {
  onProgress: (line) => process.stderr.write(`${line}\n`),
  keepLogs: values["keep-logs"] === true,
}).catch((err: unknown) => {
  process.stderr.write(`the fault battery could not run: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`);
  process.exit(1);
});
const command = ["npm run faults", ...(process.argv.length > 2 ? ["--", ...process.argv.slice(2)] : [])].join(" ");
process.stdout.write(`${formatReport(report, command)}\n`);
if (values.json !== undefined) {
  // The snapshot (every row the run read back) stays out: the report is the figures.
  const json = JSON.stringify(report, (key, value: unknown) => (key === "snapshot" ? undefined : jsonValue(value)), 2);
  await writeFile(values.json, json);
}
process.exit(report.ok ? 0 : 1);

/** JSON has no bigint and no Map: amounts become strings, maps objects. */
function jsonValue(value: unknown): unknown {
  if (typeof value === "bigint") return value.toString();
  if (value instanceof Map) return Object.fromEntries(value);
  return value;
}
