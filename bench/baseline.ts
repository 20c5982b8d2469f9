// Another built checkout of Holdfast (`--baseline <dir>`): the row "holdfast@baseline" runs its
// ledger, as built there, against a database of its own that its own code sets up, so a change
// is measured against the commit before it with the same workloads, callers and machine.
//
// From the checkout it takes, compiled (`npm ci && npm run build` in it):
//   - the ledger's entry: services/ledger/dist/main.js, or the path the root package.json's
//     "ledger" script runs (`node <path>`);
//   - db/dist/migrate.js (migrate) and services/ledger/dist/auth/api-keys.js (createTenant,
//     createApiKey), so the schema, the tenant and the key are what that commit writes;
//   - services/ledger/dist/invariants.js (checkInvariants) when it has one: the invariants as
//     that commit states them. Without it the row's invariants are not checked, and the report
//     says so.
// Funding goes through ledger_command like the current checkout's (databases.ts): every commit
// since the command function exists takes the same arguments.
//
// A checkout whose migrations skip a number cannot be measured as it is: its migration runner
// refuses a gap, and its ledger migrates at start, so it never serves. The commits between rate
// cards (migration 0009) and credit grants (0008, which landed after) are such checkouts; the
// error says which file to renumber in that checkout (a throwaway worktree) to measure it.
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { readdir, readFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { promisify } from "node:util";
import type pg from "pg";
import type { LedgerSchema } from "./databases.js";

/** The ledger's entry in the layout of today's checkout. */
const LEDGER_MAIN = "services/ledger/dist/main.js";
/** `node <path>` in the root package.json's "ledger" script. */
const LEDGER_SCRIPT_PATTERN = /^node\s+(\S+\.js)\s*$/;

export interface Baseline {
  /** The checkout's directory, absolute. */
  dir: string;
  /** Its commit, abbreviated, or "unknown" outside a git work tree. */
  commit: string;
  /** The ledger's entry point, absolute. */
  ledgerScript: string;
  schema: LedgerSchema;
  /** The checkout's own invariant checks, or null when it has none (the reason is in `note`). */
  checkInvariants: ((pool: pg.Pool) => Promise<string[]>) | null;
  /** One line for the report's machine facts. */
  note: string;
}

async function ledgerScript(dir: string): Promise<string> {
  if (existsSync(join(dir, LEDGER_MAIN))) return join(dir, LEDGER_MAIN);
  const manifest = JSON.parse(await readFile(join(dir, "package.json"), "utf8")) as { scripts?: Record<string, string> };
  const script = manifest.scripts?.["ledger"]?.match(LEDGER_SCRIPT_PATTERN)?.[1];
  if (script === undefined || !existsSync(join(dir, script))) {
    throw new Error(`--baseline ${dir}: no ${LEDGER_MAIN} and no built "ledger" script in package.json: run npm ci && npm run build there`);
  }
  return join(dir, script);
}

/** Throws when the checkout's migrations skip a number (see the module comment). */
async function checkMigrationNumbers(dir: string): Promise<void> {
  const migrations = join(dir, "db/migrations");
  if (!existsSync(migrations)) return;
  const names = (await readdir(migrations)).filter((n) => /^\d+_.*\.sql$/.test(n)).sort();
  const gap = names.findIndex((name, i) => Number(name.split("_")[0]) !== i + 1);
  if (gap === -1) return;
  const name = names[gap]!;
  const renamed = `${String(gap + 1).padStart(name.indexOf("_"), "0")}${name.slice(name.indexOf("_"))}`;
  throw new Error(
    `--baseline ${dir}: its migrations skip a number before ${name}, and its migration runner refuses a gap, so its ledger cannot start ` +
      `on a fresh database. In that checkout (a throwaway worktree), renumber them: git -C ${dir} mv db/migrations/${name} db/migrations/${renamed}`,
  );
}

/** Imports a compiled module of the checkout, or throws naming the file that is missing. */
async function importFrom<T>(dir: string, file: string): Promise<T> {
  const path = join(dir, file);
  if (!existsSync(path)) throw new Error(`--baseline ${dir}: ${file} is missing: run npm ci && npm run build there`);
  return (await import(pathToFileURL(path).href)) as T;
}

/** Loads the checkout at `dir` (see the module comment); throws when it is not built. */
export async function loadBaseline(directory: string): Promise<Baseline> {
  const dir = resolve(directory);
  const script = await ledgerScript(dir);
  await checkMigrationNumbers(dir);
  const { migrate } = await importFrom<Pick<LedgerSchema, "migrate">>(dir, "db/dist/migrate.js");
  const keys = await importFrom<Pick<LedgerSchema, "createTenant" | "createApiKey">>(dir, "services/ledger/dist/auth/api-keys.js");
  const commit = await promisify(execFile)("git", ["-C", dir, "rev-parse", "--short", "HEAD"]).then(
    (r) => r.stdout.trim(),
    () => "unknown",
  );
  const invariantsFile = "services/ledger/dist/invariants.js";
  const invariants = existsSync(join(dir, invariantsFile))
    ? (await importFrom<{ checkInvariants: (pool: pg.Pool) => Promise<string[]> }>(dir, invariantsFile)).checkInvariants
    : null;
  const checked = invariants ? "its own checkInvariants after each of its rows" : `invariants NOT checked (no ${invariantsFile})`;
  return {
    dir,
    commit,
    ledgerScript: script,
    schema: { migrate, createTenant: keys.createTenant, createApiKey: keys.createApiKey },
    checkInvariants: invariants,
    note: `${dir} at ${commit} (${script.slice(dir.length + 1)}; ${checked})`,
  };
}
