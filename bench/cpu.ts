// Where the CPU went during a run, read from /proc (Linux): the machine as a whole, the service
// under test and the load generator itself. On a two-core machine shared by the load
// generator, the service and PostgreSQL, these numbers explain most results; elsewhere (no
// /proc) they are simply absent from the report.
import { readFileSync } from "node:fs";

/** Clock ticks per second of /proc times (USER_HZ; 100 on every Linux the project targets). */
const ticks_per_second = 100;

export interface CpuSnapshot {
  atMs: number;
  machineBusyTicks: number;
  watchedTicks: number;
  selfUs: number;
}

/** Cores kept busy on average over a window; 2.0 = both cores of a 2-core machine. */
export interface CpuUse {
  machineCores: number;
  serviceCores: number | null;
  loadgenCores: number;
}

function machineBusyTicks(): number {
  // cpu  user nice system idle iowait irq softirq steal ...
  const fields = readFileSync("/proc/stat", "utf8").split("\n", 1)[0]!.trim().split(/\s+/).slice(1).map(Number);
  const idle = (fields[3] ?? 0) + (fields[4] ?? 0);
  return fields.reduce((a, b) => a + b, 0) - idle;
}

function processTicks(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  // The command name may contain spaces; the fields after its closing parenthesis do not.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return Number(fields[11]) + Number(fields[12]); // utime, stime
}

/** A reading now; null when /proc cannot be read. `watchedPid` 0 watches nothing. */
export function cpuSnapshot(watchedPid: number): CpuSnapshot | null {
  try {
    const usage = process.cpuUsage();
    return {
      atMs: performance.now(),
      machineBusyTicks: machineBusyTicks(),
      watchedTicks: watchedPid > 0 ? processTicks(watchedPid) : 0,
      selfUs: usage.user + usage.system,
    };
  } catch {
    return null;
  }
}

export function cpuBetween(start: CpuSnapshot | null, end: CpuSnapshot | null, watched: boolean): CpuUse | null {
  if (!start || !end) return null;
  const seconds = (end.atMs - start.atMs) / 1000;
  const cores = (ticks: number) => ticks / ticks_per_second / seconds;
  return {
    machineCores: cores(end.machineBusyTicks - start.machineBusyTicks),
    serviceCores: watched ? cores(end.watchedTicks - start.watchedTicks) : null,
    loadgenCores: (end.selfUs - start.selfUs) / 1e6 / seconds,
  };
}
