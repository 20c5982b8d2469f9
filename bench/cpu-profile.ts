// Where a process's CPU went, from the .cpuprofile that node's --cpu-prof writes when it exits
// (`npm run bench -- --cpu-prof DIR` profiles the Holdfast ledger that way): the samples' self
// time summed per function (name and file) and per package, largest first, as a share of the
// process's busy time (idle samples left out). cpu-profile-main.ts prints it for any profile.

/** The parts of V8's profile format (the .cpuprofile JSON) read here. */
export interface CpuProfile {
  nodes: { id: number; callFrame: { functionName: string; url: string; lineNumber: number }; hitCount?: number }[];
  startTime: number;
  endTime: number;
  /** The node sampled at each tick, and the µs since the previous tick. */
  samples: number[];
  timeDeltas: number[];
}

export interface CostLine {
  /** A function ("name file:line"), or a package ("@connectrpc/connect", "services/ledger"). */
  name: string;
  selfMs: number;
  /** Of the busy time: every sample but idle ones. */
  share: number;
}

export interface ProfileSummary {
  profiledMs: number;
  busyMs: number;
  functions: CostLine[];
  packages: CostLine[];
}

/** V8's pseudo-frames: time outside JavaScript, kept as their own lines ("(idle)" is dropped). */
const IDLE = "(idle)";

/**
 * The package of a script URL: the npm package under node_modules, the workspace folder of this
 * repository (services/ledger, packages/common, gen, …), node's own modules, or V8's pseudo-frame.
 */
export function packageOf(url: string, functionName: string): string {
  if (url === "") return functionName.startsWith("(") ? functionName : "(native)";
  if (url.startsWith("node:")) return "node";
  const path = url.replace(/^file:\/\//, "");
  const modules = path.lastIndexOf("/node_modules/");
  if (modules >= 0) {
    const [first, second] = path.slice(modules + "/node_modules/".length).split("/");
    return first!.startsWith("@") ? `${first}/${second}` : first!;
  }
  const workspace = /\/(services|workers|packages|tools)\/([^/]+)\/|\/(gen|db|bench)\//.exec(path);
  if (workspace) return workspace[3] ?? `${workspace[1]}/${workspace[2]}`;
  return path;
}

/** A file for the function lines: from node_modules/ or the workspace folder on, else as given. */
function shortFile(url: string): string {
  const path = url.replace(/^file:\/\//, "");
  const modules = path.lastIndexOf("/node_modules/");
  if (modules >= 0) return path.slice(modules + 1);
  const workspace = /\/((services|workers|packages|tools)\/[^/]+\/.*|(gen|db|bench)\/.*)$/.exec(path);
  return workspace ? workspace[1]! : path;
}

function ranked(totals: Map<string, number>, busyMs: number, top: number): CostLine[] {
  return [...totals]
    .sort((a, b) => b[1] - a[1])
    .slice(0, top)
    .map(([name, selfMs]) => ({ name, selfMs, share: busyMs > 0 ? selfMs / busyMs : 0 }));
}

/**
 * Sums the time of every sample on its node (a sample lasts until the next one), then per
 * function and per package; the `top` largest of each.
 */
export function summarizeCpuProfile(profile: CpuProfile, top: number): ProfileSummary {
  const selfUs = new Map<number, number>();
  for (let i = 0; i < profile.samples.length; i++) {
    const us = profile.timeDeltas[i + 1] ?? 0;
    selfUs.set(profile.samples[i]!, (selfUs.get(profile.samples[i]!) ?? 0) + us);
  }
  const functions = new Map<string, number>();
  const packages = new Map<string, number>();
  let busyMs = 0;
  for (const node of profile.nodes) {
    const ms = (selfUs.get(node.id) ?? 0) / 1000;
    const { functionName, url, lineNumber } = node.callFrame;
    if (ms === 0 || functionName === IDLE) continue;
    busyMs += ms;
    const name = url === "" ? functionName : `${functionName || "(anonymous)"} ${shortFile(url)}:${lineNumber + 1}`;
    functions.set(name, (functions.get(name) ?? 0) + ms);
    const pkg = packageOf(url, functionName);
    packages.set(pkg, (packages.get(pkg) ?? 0) + ms);
  }
  return {
    profiledMs: (profile.endTime - profile.startTime) / 1000,
    busyMs,
    functions: ranked(functions, busyMs, top),
    packages: ranked(packages, busyMs, top),
  };
}

/** The summary as Markdown: the totals, then a table per kind of line. */
export function profileText(summary: ProfileSummary, title: string): string[] {
  const row = (l: CostLine) => `| ${(l.share * 100).toFixed(1)}% | ${l.selfMs.toFixed(0)} | ${l.name.replaceAll("|", "\\|")} |`;
  return [
    `${title}: ${(summary.busyMs / 1000).toFixed(1)} s busy of ${(summary.profiledMs / 1000).toFixed(1)} s profiled (idle samples left out of the shares).`,
    "",
    "| share of busy | self ms | package |",
    "|---:|---:|---|",
    ...summary.packages.map(row),
    "",
    "| share of busy | self ms | function |",
    "|---:|---:|---|",
    ...summary.functions.map(row),
  ];
}
