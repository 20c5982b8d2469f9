// Goal: `npm run bench` works end to end: it builds its databases, starts the ledger and the
// naive service, runs a load generator per row, checks the invariants and writes a JSON report
// whose rows say so. No timing is asserted: this machine's numbers are not a test's business.
// Method: run the compiled harness (bench/dist/main.js, which `npm run build` produces) for one
// short row per system on the hot wallet, the rows of --grants, nolimit and --alert on included, and one
// Holdfast row each of the pairs and metered workloads (Reserve → Capture against ReserveUsage →
// CaptureUsage on a rate card written at setup), in databases of its own on the test server,
// then read its JSON report and drop the databases.
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
import { TEST_DATABASE_PREFIX } from "./global-setup.js";

const harness = "bench/dist/main.js";
/**
 * Setup (fsync probe, 100 funded wallets, 2 grants each, a rate card, an alert, three services)
 * plus eight 1.5 s rows: ~30 s on a quiet machine, 75 s seen with other test files running; with slack.
 */
const harness_timeout_ms = 150_000;
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
  rows: { workload: string; concurrency: number; system: string; commands: number; errors: number; violations: string[] }[];
  targets: string[];
  comparisons: string[];
}

it(
  "runs Holdfast (also on wallets with grants, without rate limits, with a balance alert, and metered), the naive service and the raw hot row, and reports invariants ok",
  async () => {
    expect(existsSync(harness), `${harness} is missing: run npm run build first`).toBe(true);
    const dir = await mkdtemp(join(tmpdir(), "holdfast-bench-smoke-"));
    const json = join(dir, "report.json");
    const argv = ["--duration", "1", "--warmup", "0.5", "--concurrency", "4", "--workloads", "hot,pairs,metered", "--systems", "holdfast,nolimit,naive,raw", "--wallets", "100", "--grants", "2", "--alert", "on"];
    const { stdout } = await promisify(execFile)(process.execPath, [harness, ...argv, "--database", database, "--json", json], {
      env: { ...process.env, BENCH_ADMIN_DATABASE_URL: adminUrl },
      timeout: harness_timeout_ms,
    });
    const report = JSON.parse(await readFile(json, "utf8")) as Report;
    await rm(dir, { recursive: true, force: true });

    expect(report.ok).toBe(true);
    const hot = ["holdfast", "holdfast (2 grants/wallet)", "holdfast, rate limits off", "holdfast, balance alert on", "naive service", "raw hot row"];
    expect(report.rows.map((r) => `${r.workload} ${r.system}`)).toEqual([...hot.map((s) => `hot ${s}`), "pairs holdfast", "metered holdfast"]);
    for (const row of report.rows) {
      expect(row).toMatchObject({ concurrency: 4, violations: [], errors: 0 });
      expect(row.commands).toBeGreaterThan(0);
    }
    expect(report.facts["cores"]).toMatch(/^\d+$/);
    expect(stdout).toContain("Invariants: ok after all 8 rows.");
    expect(report.comparisons).toHaveLength(4);
    expect(report.comparisons[0]).toMatch(/^- metered 4 \(ReserveUsage → CaptureUsage\): .*; pairs \(Reserve → Capture\) .*commands\/s$/);
    expect(report.comparisons[1]).toMatch(/^- hot 4, holdfast \(2 grants\/wallet\) .*commands\/s$/);
    expect(report.comparisons[3]).toMatch(/^- hot 4, holdfast, balance alert on \(one tenant-wide balance alert.*commands\/s$/);
    expect(stdout).toContain("## Holdfast against itself");
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
