// Goal: `npm run bench` works end to end: it builds its databases, starts the ledger and the
// naive service, runs a load generator per row, checks the invariants and writes a JSON report
// whose rows say so. No timing is asserted: this machine's numbers are not a test's business.
// Method: run the compiled harness (bench/dist/main.js, which `npm run build` produces) for one
// short row per system on the hot wallet, the rows of --grants, nolimit, --alert on and the empty
// RPC included, one Holdfast row each of the pairs and metered workloads (Reserve → Capture
// against ReserveUsage → CaptureUsage on a rate card written at setup), and the transfers
// workload through the service, the core and the plain double-entry function, with the ledger
// under --cpu-prof, in databases of its own on the test server, then read its JSON report
// (the service profile's summary included) and drop the databases.
// The hot row reports p50/p99 per RPC type. The profile summary is checked on a small profile of known samples too.
// A --baseline checkout whose migrations skip a number is refused before any setup, naming the
// file to renumber (measuring a real baseline needs another built checkout: not a test's job).
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import pg from "pg";
import { afterAll, expect, inject, it } from "vitest";
import { summarizeCpuProfile } from "@holdfast/bench/cpu-profile";
import { TEST_DATABASE_PREFIX } from "./global-setup.js";

const harness = "bench/dist/main.js";
/**
 * Setup (fsync probe, 100 funded wallets, 2 grants each, a rate card, an alert, four services)
 * plus fourteen 1.5 s rows: ~45 s on a quiet machine, more with other test files running; with slack.
 */
const harness_timeout_ms = 200_000;
const database = `${TEST_DATABASE_PREFIX}bench_${randomBytes(6).toString("hex")}`;
const adminUrl = inject("adminDatabaseUrl");

afterAll(async () => {
  const admin = new pg.Client({ connectionString: adminUrl });
  await admin.connect();
  for (const name of [database, `${database}_naive`]) await admin.query(`drop database if exists ${name} with (force)`);
  await admin.end();
});

interface Report {
  ok: boolean;
  facts: Record<string, string>;
  rows: {
    workload: string;
    concurrency: number;
    system: string;
    commands: number;
    errors: number;
    violations: string[];
    byMethod: Record<string, { commands: number; p50: number; p99: number }>;
  }[];
  targets: string[];
  comparisons: string[];
  profile?: { file: string; summary: { busyMs: number; packages: { name: string; ms: number }[]; functions: { name: string }[] } };
}

it(
  "runs Holdfast (also on wallets with grants, without rate limits, with a balance alert, metered, and transfers), the baselines, and reports invariants ok and the ledger's profile",
  async () => {
    expect(existsSync(harness), `${harness} is missing: run npm run build first`).toBe(true);
    const dir = await mkdtemp(join(tmpdir(), "holdfast-bench-smoke-"));
    const json = join(dir, "report.json");
    const argv = ["--duration", "1", "--warmup", "0.5", "--concurrency", "4", "--workloads", "hot,pairs,metered,transfers", "--systems", "holdfast,nolimit,naive,raw,empty-rpc,core,plain", "--wallets", "100", "--grants", "2", "--alert", "on", "--cpu-prof", join(dir, "profile")];
    const { stdout } = await promisify(execFile)(process.execPath, [harness, ...argv, "--database", database, "--json", json], {
      env: { ...process.env, BENCH_ADMIN_DATABASE_URL: adminUrl },
      timeout: harness_timeout_ms,
    });
    const report = JSON.parse(await readFile(json, "utf8")) as Report;
    const profileExists = report.profile !== undefined && existsSync(report.profile.file);
    await rm(dir, { recursive: true, force: true });

    expect(report.ok).toBe(true);
    const hot = [
      "holdfast",
      "holdfast (2 grants/wallet)",
      "holdfast, rate limits off",
      "holdfast, balance alert on",
      "naive service",
      "empty RPC",
      "raw hot row",
      "holdfast core, no RPC",
      "holdfast core, no RPC, group commit off",
    ];
    const transfers = ["holdfast", "holdfast core, no RPC", "plain double entry"];
    expect(report.rows.map((r) => `${r.workload} ${r.system}`)).toEqual([
      ...hot.map((s) => `hot ${s}`),
      "pairs holdfast",
      "metered holdfast",
      ...transfers.map((s) => `transfers ${s}`),
    ]);
    for (const row of report.rows) {
      expect(row).toMatchObject({ concurrency: 4, violations: [], errors: 0 });
      expect(row.commands).toBeGreaterThan(0);
    }
    // Latency per RPC type: the hot row's Reserve, Capture and Spend each have their own.
    const hotRow = report.rows.find((r) => r.workload === "hot" && r.system === "holdfast")!;
    expect(Object.keys(hotRow.byMethod).sort()).toEqual(["capture", "reserve", "spend"]);
    for (const latency of Object.values(hotRow.byMethod)) {
      expect(latency.commands).toBeGreaterThan(0);
      expect(latency.p99).toBeGreaterThanOrEqual(latency.p50);
    }
    expect(stdout).toContain("### Latency per RPC, CPU per command");
    expect(stdout).toMatch(/\| hot \| 4 \| holdfast \| Reserve [\d.]+ \/ [\d.]+; Capture [\d.]+ \/ [\d.]+; Spend [\d.]+ \/ [\d.]+ \|/);
    expect(report.facts["cores"]).toMatch(/^\d+$/);
    expect(stdout).toContain("Invariants: ok after all 14 rows.");
    expect(report.comparisons).toHaveLength(4);
    expect(report.comparisons[0]).toMatch(/^- metered 4 \(ReserveUsage → CaptureUsage\): .*; pairs \(Reserve → Capture\) .*commands\/s$/);
    expect(report.comparisons[1]).toMatch(/^- hot 4, holdfast \(2 grants\/wallet\) .*commands\/s$/);
    expect(report.comparisons[3]).toMatch(/^- hot 4, holdfast, balance alert on \(one tenant-wide balance alert.*commands\/s$/);
    expect(stdout).toContain("## Holdfast against itself");
    // The ledger ran under the profiler and exited cleanly: its profile was summarized.
    expect(profileExists).toBe(true);
    expect(report.profile!.summary.busyMs).toBeGreaterThan(0);
    expect(report.profile!.summary.packages.map((p) => p.name)).toContain("@connectrpc/connect");
    expect(stdout).toContain("## Service profile");
  },
  harness_timeout_ms + 10_000,
);

it("refuses a --baseline checkout whose migrations skip a number, naming the file to renumber", async () => {
  const dir = await mkdtemp(join(tmpdir(), "holdfast-bench-baseline-"));
  await mkdir(join(dir, "services/ledger/dist"), { recursive: true });
  await mkdir(join(dir, "db/migrations"), { recursive: true });
  await writeFile(join(dir, "services/ledger/dist/main.js"), "");
  for (const name of ["0001_first.sql", "0002_second.sql", "0004_fourth.sql"]) await writeFile(join(dir, "db/migrations", name), "select 1;\n");
  const run = promisify(execFile)(process.execPath, [harness, "--baseline", dir, "--database", database], {
    env: { ...process.env, BENCH_ADMIN_DATABASE_URL: adminUrl },
    timeout: harness_timeout_ms,
  });
  await run.then(
    () => expect.fail("the harness accepted a baseline it cannot start"),
    (err: { code?: number; stderr?: string }) => {
      expect(err.code).toBe(1);
      expect(err.stderr).toContain(`git -C ${dir} mv db/migrations/0004_fourth.sql db/migrations/0003_fourth.sql`);
      expect(err.stderr).not.toContain("pg_test_fsync");
    },
  );
  await rm(dir, { recursive: true, force: true });
});

it("sums a profile's self time per function and per package, and its own functions' totals, idle left out, largest first", () => {
  const frame = (functionName: string, url = "", lineNumber = 0) => ({ functionName, url, lineNumber });
  const common = "file:///srv/holdfast/packages/common/dist/rpc-adapter.js";
  const connect = "file:///srv/holdfast/node_modules/@connectrpc/connect/dist/esm/handler.js";
  const ledger = "file:///srv/holdfast/services/ledger/dist/rpc/ledger-service.js";
  const summary = summarizeCpuProfile(
    {
      // root → serveCall (ours) → handle (a dependency's) → spend (ours) → spend again (recursion).
      nodes: [
        { id: 1, callFrame: frame("(root)"), children: [2, 5, 6] },
        { id: 2, callFrame: frame("(idle)") },
        { id: 6, callFrame: frame("serveCall", common, 28), children: [3] },
        { id: 3, callFrame: frame("handle", connect, 9), children: [4] },
        { id: 4, callFrame: frame("spend", ledger, 41), children: [7] },
        { id: 7, callFrame: frame("spend", ledger, 41) },
        { id: 5, callFrame: frame("(garbage collector)") },
      ],
      // Ticks at 1, 2, 3, 4, 5 and 6 ms; the last sample lasts until the end at 8 ms.
      startTime: 0,
      endTime: 8000,
      samples: [3, 4, 2, 5, 3, 7],
      timeDeltas: [1000, 1000, 1000, 1000, 1000, 1000],
    },
    10,
  );
  expect(summary.profiledMs).toBe(8);
  expect(summary.busyMs).toBe(6);
  expect(summary.functions).toEqual([
    { name: "spend services/ledger/dist/rpc/ledger-service.js:42", ms: 3, share: 0.5 },
    { name: "handle node_modules/@connectrpc/connect/dist/esm/handler.js:10", ms: 2, share: 2 / 6 },
    { name: "(garbage collector)", ms: 1, share: 1 / 6 },
  ]);
  expect(summary.packages.map((p) => [p.name, p.ms])).toEqual([
    ["services/ledger", 3],
    ["@connectrpc/connect", 2],
    ["(garbage collector)", 1],
  ]);
  // Totals: serveCall holds everything under it; the recursive spend counts once.
  expect(summary.ownTotals.map((p) => [p.name, p.ms])).toEqual([
    ["serveCall packages/common/dist/rpc-adapter.js:29", 5],
    ["spend services/ledger/dist/rpc/ledger-service.js:42", 3],
  ]);
});
