// Where the CPU went during a run, read from /proc (Linux): the machine as a whole, PostgreSQL,
// the service under test, the load generator itself and every other process by name. On a
// two-core machine shared by the load generator, the service and PostgreSQL these numbers
// explain most results, and they show when something else on the machine took its share.
// Elsewhere (no /proc) they are simply absent from the report.
import { readdirSync, readFileSync } from "node:fs";

/** Clock ticks per second of /proc times (USER_HZ; 100 on every Linux the project targets). */
const TICKS_PER_SECOND = 100;
/** Other processes using less than this are left out of the breakdown. */
const OTHER_CORES_LISTED_MIN = 0.02;
const OTHERS_LISTED_MAX = 4;

interface ProcessTicks {
  name: string;
  ticks: number;
  /** For a PostgreSQL client backend, the database it serves. */
  database?: string;
}

export interface CpuSnapshot {
  atMs: number;
  busyTicks: number;
  stealTicks: number;
  processes: Map<number, ProcessTicks>;
}

/** Cores kept busy on average over a window; 2.0 = both cores of a 2-core machine. */
export interface CpuUse {
  machineCores: number;
  /** Time the hypervisor gave this VM's cores to another VM: CPU the run wanted and did not get. */
  stealCores: number;
  /** The server's own processes (WAL writer, checkpointer, autovacuum, ...) and the backends of the benchmark's databases. */
  postgresCores: number;
  serviceCores: number | null;
  loadgenCores: number;
  otherCores: number;
  /** The largest other consumers by process name, e.g. { "nats-server": 0.12 }. */
  others: Record<string, number>;
}

/** Busy and stolen ticks of the whole machine so far, from the first line of /proc/stat. */
function machineTicks(): { busy: number; steal: number } {
  // cpu  user nice system idle iowait irq softirq steal guest guest_nice (guest time is
  // already inside user and nice, so it is not added again).
  const [user, nice, system, , , irq, softirq, steal] = readFileSync("/proc/stat", "utf8")
    .split("\n", 1)[0]!
    .trim()
    .split(/\s+/)
    .slice(1)
    .map(Number);
  return { busy: (user ?? 0) + (nice ?? 0) + (system ?? 0) + (irq ?? 0) + (softirq ?? 0), steal: steal ?? 0 };
}

/** A process's name and CPU ticks so far (utime + stime, all threads), from /proc/<pid>/stat. */
function processTicks(pid: string): ProcessTicks {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  // The command name may contain spaces; the fields after its closing parenthesis do not.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return { name: stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")")), ticks: Number(fields[11]) + Number(fields[12]) };
}

/**
 * The database of a PostgreSQL client backend, from its process title
 * ("postgres: 15/main: postgres holdfast_bench 127.0.0.1(56470) idle"); undefined for the
 * server's own processes (WAL writer, checkpointer, autovacuum, ...).
 */
function backendDatabase(pid: string): string | undefined {
  const title = readFileSync(`/proc/${pid}/cmdline`, "utf8");
  return /: \S+ (\S+) (?:[\d.:a-f]+\(\d+\)|\[local\])/.exec(title)?.[1];
}

function allProcesses(): Map<number, ProcessTicks> {
  const out = new Map<number, ProcessTicks>();
  for (const pid of readdirSync("/proc").filter((d) => /^\d+$/.test(d))) {
    try {
      const stat = processTicks(pid);
      if (stat.name === "postgres") stat.database = backendDatabase(pid);
      out.set(Number(pid), stat);
    } catch {
      // The process ended between the listing and the read.
    }
  }
  return out;
}

/** A reading now; null when /proc cannot be read. */
export function cpuSnapshot(): CpuSnapshot | null {
  try {
    const machine = machineTicks();
    return { atMs: performance.now(), busyTicks: machine.busy, stealTicks: machine.steal, processes: allProcesses() };
  } catch (err) {
    process.stderr.write(`cpu not measured: ${(err as Error).message}\n`);
    return null;
  }
}

/**
 * CPU per consumer between two readings. The benchmark's own processes are named, so that they
 * stand apart from whatever else runs on the machine (PostgreSQL backends of other databases
 * included). A process that ended inside the window is missed (its
 * ticks left with it); one that started inside it counts whole.
 */
export interface Attribution {
  /** The service under test; 0 for none. */
  watchedPid: number;
  /** Names for the benchmark's own processes (the other ledger, the naive service). */
  labels: ReadonlyMap<number, string>;
  /** The benchmark's databases: backends serving any other count as other, by database. */
  databases: readonly string[];
}

/** Who a process's CPU is booked to: one of the angle-bracketed consumers, or a name of its own. */
function ownerOf(pid: number, p: ProcessTicks, a: Attribution): string {
  if (pid === a.watchedPid) return "<service>";
  if (pid === process.pid) return "<loadgen>";
  if (p.name === "postgres") return p.database === undefined || a.databases.includes(p.database) ? "<postgres>" : `postgres (${p.database})`;
  return a.labels.get(pid) ?? p.name;
}

export function cpuBetween(start: CpuSnapshot | null, end: CpuSnapshot | null, attribution: Attribution): CpuUse | null {
  if (!start || !end) return null;
  const seconds = (end.atMs - start.atMs) / 1000;
  const cores = (ticks: number) => ticks / TICKS_PER_SECOND / seconds;
  const byName = new Map<string, number>();
  for (const [pid, now] of end.processes) {
    const delta = Math.max(0, now.ticks - (start.processes.get(pid)?.ticks ?? 0));
    const owner = ownerOf(pid, now, attribution);
    byName.set(owner, (byName.get(owner) ?? 0) + delta);
  }
  const take = (owner: string) => {
    const ticks = byName.get(owner) ?? 0;
    byName.delete(owner);
    return ticks;
  };
  const [service, self, postgres] = [take("<service>"), take("<loadgen>"), take("<postgres>")];
  const others = [...byName.entries()]
    .map(([name, ticks]) => [name, cores(ticks)] as const)
    .filter(([, c]) => c >= OTHER_CORES_LISTED_MIN)
    .sort((a, b) => b[1] - a[1])
    .slice(0, OTHERS_LISTED_MAX);
  return {
    machineCores: cores(end.busyTicks - start.busyTicks),
    stealCores: cores(end.stealTicks - start.stealTicks),
    postgresCores: cores(postgres),
    serviceCores: attribution.watchedPid > 0 ? cores(service) : null,
    loadgenCores: cores(self),
    otherCores: cores([...byName.values()].reduce((a, b) => a + b, 0)),
    others: Object.fromEntries(others),
  };
}
