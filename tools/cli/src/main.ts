import { Command, CommanderError, Option } from "commander";
import pg from "pg";
import type { Pool } from "pg";
import { DATABASE_URL_DEFAULT, withoutPassword } from "@holdfast/common/config";
import { isUuid } from "@holdfast/common/patterns";
import { migrate } from "@holdfast/db/migrate";
import { addEventsCommands } from "./events-tail.js";
import { addBillingCommands } from "./billing.js";
import { addRateCardsCommands } from "./ratecards.js";
import { addVerifyCommand } from "./verify.js";
import { addMcpCommand } from "./mcp.js";
import { addKeyCommands, addTenantCommands, resolveTenantRef } from "./tenants.js";
import { describeError } from "./describe-error.js";

/** A CLI command is interactive: fail fast when the database does not answer. */
const CONNECT_TIMEOUT_MS = 5_000;
/** One connection does all the work; the second is slack for pg's own bookkeeping. */
const POOL_SIZE_MAX = 2;
/** Let the process exit promptly once the command is done. */
const IDLE_TIMEOUT_MS = 1_000;

/** The URL schemes pg understands: TCP (either spelling) and Unix sockets. */
const DATABASE_URL_PROTOCOLS = ["postgres:", "postgresql:", "socket:"];

/** Where the CLI writes, one line per call; tests pass their own. */
export interface CliOutput {
  out(line: string): void;
  err(line: string): void;
}

const processOutput: CliOutput = {
  out: (line) => process.stdout.write(`${line}\n`),
  err: (line) => process.stderr.write(`${line}\n`),
};

/** An operating error the CLI reports as one line, such as an unknown key. */
class CliError extends Error {
  override readonly name = "CliError";
}

/**
 * Runs the `holdfast` command line with `argv` (as in `process.argv`) and resolves to the exit
 * code. Errors are reported as one line on stderr; set HOLDFAST_DEBUG=1 to see stack traces.
 * Nothing here exits the process, so tests can call it directly.
 */
export async function main(argv: readonly string[], output: CliOutput = processOutput): Promise<number> {
  const program = buildProgram(output);
  try {
    await program.parseAsync([...argv]);
    return 0;
  } catch (error) {
    // Commander has already printed its own usage errors, and help is not an error.
    if (error instanceof CommanderError) return error.exitCode;
    output.err(`holdfast: ${describeError(error)}`);
    if (process.env["HOLDFAST_DEBUG"] === "1" && error instanceof Error && error.stack !== undefined) {
      output.err(error.stack);
    }
    return 1;
  }
}

/** Builds the command tree; exported so its help can be tested without a database. */
export function buildProgram(output: CliOutput): Command {
  const program = new Command("holdfast")
    .description("Holdfast wallet ledger administration")
    .exitOverride()
    .configureOutput({ writeOut: (text) => output.out(text.trimEnd()), writeErr: (text) => output.err(text.trimEnd()) })
    .addOption(
      new Option("--database-url <url>", "PostgreSQL connection URL").env("DATABASE_URL").default(DATABASE_URL_DEFAULT),
    );
  const withDatabase = <T>(command: Command, work: (pool: Pool) => Promise<T>) => withPool(databaseUrl(command), work);
  // Every command's --tenant takes a tenant's name or id; the actions see the id.
  program.hook("preAction", async (_program, action) => {
    const tenant: unknown = action.opts()["tenant"];
    if (typeof tenant === "string") {
      action.setOptionValue("tenant", await resolveTenant(action, tenant));
    }
  });
  addMigrateCommand(program, output);
  addTenantCommands(program, output, withDatabase);
  addKeyCommands(program, output, withDatabase);
  addEventsCommands(program, output);
  addBillingCommands(program, output);
  addRateCardsCommands(program, output, (command, work) => withPool(databaseUrl(command), work));
  addVerifyCommand(program, output, (command, work) => withPool(databaseUrl(command), work));
  addMcpCommand(program, output);
  return program;
}

function addMigrateCommand(program: Command, output: CliOutput): void {
  program
    .command("migrate")
    .description("apply pending database migrations, as the owner role (HOLDFAST_MIGRATE_DATABASE_URL)")
    .action(async (_options: object, command: Command) => {
      await withPool(migrateDatabaseUrl(command), async (pool) => {
        const { applied } = await migrate(pool);
        for (const name of applied) output.out(`applied ${name}`);
        output.out(applied.length === 0 ? "database is up to date" : `${applied.length} migration(s) applied`);
      });
    });
}

/** The id of the tenant a --tenant value names; only a name needs the database. */
async function resolveTenant(command: Command, ref: string): Promise<string> {
  return isUuid(ref) ? ref : withPool(databaseUrl(command), (pool) => resolveTenantRef(pool, ref));
}

function databaseUrl(command: Command): string {
  return String(command.optsWithGlobals()["databaseUrl"]);
}

/**
 * Migrations run as the owner role, whose URL is usually not the one the processes use (the
 * runtime role): HOLDFAST_MIGRATE_DATABASE_URL when set, unless --database-url is given.
 */
function migrateDatabaseUrl(command: Command): string {
  const ownerUrl = process.env["HOLDFAST_MIGRATE_DATABASE_URL"];
  const explicit = command.parent?.getOptionValueSource("databaseUrl") === "cli";
  return ownerUrl !== undefined && ownerUrl !== "" && !explicit ? ownerUrl : databaseUrl(command);
}

/** Opens a small pool, checks that the database answers, runs `work`, and always closes it. */
async function withPool<T>(url: string, work: (pool: Pool) => Promise<T>): Promise<T> {
  checkDatabaseUrl(url);
  const pool = new pg.Pool({
    connectionString: url,
    max: POOL_SIZE_MAX,
    connectionTimeoutMillis: CONNECT_TIMEOUT_MS,
    idleTimeoutMillis: IDLE_TIMEOUT_MS,
    application_name: "holdfast-cli",
  });
  // An idle client that loses its connection must not crash the CLI with an unhandled event.
  pool.on("error", () => undefined);
  try {
    const client = await pool.connect().catch((error: unknown) => {
      throw new CliError(`cannot connect to PostgreSQL at ${withoutPassword(url)}: ${describeError(error)}`);
    });
    client.release();
    return await work(pool);
  } finally {
    await pool.end();
  }
}

/** pg reads anything as a connection string; refuse what is clearly not a PostgreSQL URL. */
function checkDatabaseUrl(url: string): void {
  if (!URL.canParse(url) || !DATABASE_URL_PROTOCOLS.includes(new URL(url).protocol)) {
    throw new CliError("the database URL (--database-url or DATABASE_URL) must look like postgres://user@host:port/db");
  }
}
