// Where a process's CPU went, from the .cpuprofile that node's --cpu-prof writes when it exits
// (`npm run bench -- --cpu-prof DIR` profiles the Holdfast ledger that way): the samples' self
// time summed per function (name and file) and per package, and the total time (self and
// callees) of this repository's own functions, which says which path of the process (the RPC
// handler, the outbox relay, …) the time was spent under; largest first, as a share of the
// process's busy time (idle samples left out). cpu-profile-main.ts prints it for any profile.

/** The parts of V8's profile format (the .cpuprofile JSON) read here. */
export interface CpuProfile {
  nodes: { id: number; callFrame: { functionName: string; url: string; lineNumber: number }; children?: number[] }[];
  startTime: number;
  endTime: number;
  /** The node sampled at each tick, and the µs since the previous tick. */
  samples: number[];
  timeDeltas: number[];
}

export interface CostLine {
  /** A function ("name file:line"), or a package ("@connectrpc/connect", "services/ledger"). */
  name: string;
  /** Self time, or for `ownTotals` the time of the function and everything it called. */
  ms: number;
  /** Of the busy time: every sample but idle ones. */
  share: number;
}

export interface ProfileSummary {
  profiledMs: number;
  busyMs: number;
  functions: CostLine[];
  packages: CostLine[];
  /** This repository's functions by total time, each counted once per stack (recursion aside). */
  ownTotals: CostLine[];
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

/** Whether a script is this repository's own code (a workspace's, not a dependency's). */
function isOwnCode(url: string): boolean {
  return !url.includes("/node_modules/") && /\/(services|workers|packages|tools)\/[^/]+\/|\/(gen|db|bench)\//.test(url);
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
    .map(([name, ms]) => ({ name, ms, share: busyMs > 0 ? ms / busyMs : 0 }));
}

/**
 * Sums the time of every sample on its node (a sample lasts until the next one, the last until
 * the profile ends), then per function and per package, and the totals of this repository's
 * functions; the `top` largest of each.
 */
export function summarizeCpuProfile(profile: CpuProfile, top: number): ProfileSummary {
  const selfUs = new Map<number, number>();
  let tickUs = profile.startTime + (profile.timeDeltas[0] ?? 0);
  for (let i = 0; i < profile.samples.length; i++) {
    const nextUs = i + 1 < profile.samples.length ? tickUs + profile.timeDeltas[i + 1]! : Math.max(tickUs, profile.endTime);
    selfUs.set(profile.samples[i]!, (selfUs.get(profile.samples[i]!) ?? 0) + (nextUs - tickUs));
    tickUs = nextUs;
  }
  const functions = new Map<string, number>();
  const packages = new Map<string, number>();
  let busyMs = 0;
  for (const node of profile.nodes) {
    const ms = (selfUs.get(node.id) ?? 0) / 1000;
    const { functionName, url } = node.callFrame;
    if (ms === 0 || functionName === IDLE) continue;
    busyMs += ms;
    functions.set(functionKey(node.callFrame), (functions.get(functionKey(node.callFrame)) ?? 0) + ms);
    const pkg = packageOf(url, functionName);
    packages.set(pkg, (packages.get(pkg) ?? 0) + ms);
  }
  return {
    profiledMs: (profile.endTime - profile.startTime) / 1000,
    busyMs,
    functions: ranked(functions, busyMs, top),
    packages: ranked(packages, busyMs, top),
    ownTotals: ranked(ownTotals(profile, selfUs), busyMs, top),
  };
}

function functionKey({ functionName, url, lineNumber }: CpuProfile["nodes"][number]["callFrame"]): string {
  return url === "" ? functionName : `${functionName || "(anonymous)"} ${shortFile(url)}:${lineNumber + 1}`;
}

/**
 * The total time under each of this repository's functions: every node's self time added to
 * each distinct own function on its stack (so a recursive function counts once). The root is
 * the first node, as V8 writes it.
 */
function ownTotals(profile: CpuProfile, selfUs: Map<number, number>): Map<string, number> {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const totals = new Map<string, number>();
  const onStack = new Map<string, number>();
  const visit = (id: number): number => {
    const node = byId.get(id)!;
    const key = isOwnCode(node.callFrame.url) ? functionKey(node.callFrame) : null;
    const outermost = key !== null && !onStack.has(key);
    if (key !== null) onStack.set(key, (onStack.get(key) ?? 0) + 1);
    let us = node.callFrame.functionName === IDLE ? 0 : (selfUs.get(id) ?? 0);
    for (const child of node.children ?? []) us += visit(child);
    if (key !== null) {
      if (onStack.get(key) === 1) onStack.delete(key);
      else onStack.set(key, onStack.get(key)! - 1);
      if (outermost) totals.set(key, (totals.get(key) ?? 0) + us / 1000);
    }
    return us;
  };
  if (profile.nodes[0]) visit(profile.nodes[0].id);
  return totals;
}

/**
 * The summary as Markdown: the totals, then a table per kind of line; given the calls the
 * process answered while profiled, each line's busy µs per call too. Busy time is sampled time
 * on the stack: on a machine short of cores it includes waiting for one, so it can exceed the
 * process's CPU time; the shares are what to read.
 */
export function profileText(summary: ProfileSummary, title: string, calls: number | null = null): string[] {
  const perCall = (ms: number) => (calls ? ` ${((ms * 1000) / calls).toFixed(0)} |` : "");
  const row = (l: CostLine) => `| ${(l.share * 100).toFixed(1)}% | ${l.ms.toFixed(0)} |${perCall(l.ms)} ${l.name.replaceAll("|", "\\|")} |`;
  const head = (what: string, ms: string) => [`| share of busy | ${ms} |${calls ? " busy µs per call |" : ""} ${what} |`, `|---:|---:|${calls ? "---:|" : ""}---|`];
  const busy = `${(summary.busyMs / 1000).toFixed(1)} s busy of ${(summary.profiledMs / 1000).toFixed(1)} s profiled (idle samples left out of the shares)`;
  return [
    `${title}: ${busy}${calls ? `; ${calls} calls answered, ${((summary.busyMs * 1000) / calls).toFixed(0)} µs busy per call` : ""}.`,
    "",
    ...head("package", "self ms"),
    ...summary.packages.map(row),
    "",
    ...head("function", "self ms"),
    ...summary.functions.map(row),
    "",
    ...head("this repository's function", "total ms (self and callees)"),
    ...summary.ownTotals.map(row),
  ];
}
