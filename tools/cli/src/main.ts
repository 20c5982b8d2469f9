import { Command, CommanderError, Option } from "commander";
import pg from "pg";
import type { Pool } from "pg";
import { DATABASE_URL_DEFAULT, withoutPassword } from "@holdfast/common/config";
import { inTransaction } from "@holdfast/common/pg";
import { createApiKey, createTenant, revokeApiKey, ROLES } from "@holdfast/ledger/auth/api-keys";
import type { ApiKeyRecord, Role } from "@holdfast/ledger/auth/api-keys";
import { migrate } from "@holdfast/db/migrate";
import { addEventsCommands } from "./events-tail.js";
import { addBillingCommands } from "./billing.js";
import { addRateCardsCommands } from "./ratecards.js";
import { addVerifyCommand } from "./verify.js";

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
  addMigrateCommand(program, output);
  addTenantCommands(program, output);
  addKeyCommands(program, output);
  addEventsCommands(program, output);
  addBillingCommands(program, output);
  addRateCardsCommands(program, output, (command, work) => withPool(databaseUrl(command), work));
  addVerifyCommand(program, output, (command, work) => withPool(databaseUrl(command), work));
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

function addTenantCommands(program: Command, output: CliOutput): void {
  const tenant = program.command("tenant").description("manage tenants");
  tenant
    .command("create")
    .description("create a tenant and its first admin API key")
    .argument("<name>", "tenant name, 1-128 characters, unique")
    .option("--json", "print only {tenantId, keyId, apiKey} as JSON")
    .action(async (name: string, options: { json?: boolean }, command: Command) => {
      const created = await withPool(databaseUrl(command), (pool) =>
        inTransaction(pool, async (client) => {
          const { tenantId } = await createTenant(client, name);
          return createApiKey(client, { tenantId, name: "admin", role: "admin" });
        }),
      );
      if (options.json === true) {
        output.out(JSON.stringify({ tenantId: created.key.tenantId, keyId: created.key.keyId, apiKey: created.secret }));
        return;
      }
      output.out(`Created tenant ${created.key.tenantId} (${name}) with admin key ${created.key.keyId}:`);
      printSecret(output, created.secret);
    });
}

function addKeyCommands(program: Command, output: CliOutput): void {
  const key = program.command("key").description("manage API keys");
  key
    .command("create")
    .description("create an API key")
    .requiredOption("--tenant <id>", "tenant id")
    .addOption(new Option("--role <role>", "what the key may call").choices(ROLES).makeOptionMandatory())
    .option("--wallet <id>", "limit the key to one wallet (not for admin keys)")
    .option("--name <name>", "a label for humans (default: the role)")
    .option("--json", "print only {tenantId, keyId, role, walletId, apiKey} as JSON")
    .action(async (options: KeyCreateOptions, command: Command) => {
      const { key: record, secret } = await withPool(databaseUrl(command), (pool) =>
        createApiKey(pool, {
          tenantId: options.tenant,
          name: options.name ?? options.role,
          role: options.role,
          walletId: options.wallet,
        }),
      );
      printCreatedKey(output, record, secret, options.json === true);
    });
  key
    .command("revoke")
    .description("revoke an API key for good")
    .requiredOption("--tenant <id>", "tenant id")
    .argument("<keyId>", "the key id (the part after hf_)")
    .action(async (keyId: string, options: { tenant: string }, command: Command) => {
      const record = await withPool(databaseUrl(command), (pool) => revokeApiKey(pool, options.tenant, keyId));
      if (record === null) throw new CliError(`tenant ${options.tenant} has no key ${keyId}`);
      output.out(`Revoked key ${record.keyId} at ${record.revokedAt?.toISOString() ?? "?"}.`);
    });
}

interface KeyCreateOptions {
  tenant: string;
  role: Role;
  wallet?: string;
  name?: string;
  json?: boolean;
}

function printCreatedKey(output: CliOutput, record: ApiKeyRecord, secret: string, json: boolean): void {
  if (json) {
    const { tenantId, keyId, role, walletId } = record;
    output.out(JSON.stringify({ tenantId, keyId, role, walletId, apiKey: secret }));
    return;
  }
  const scope = record.walletId === null ? "" : `, limited to wallet ${record.walletId}`;
  output.out(`Created ${record.role} key ${record.keyId} for tenant ${record.tenantId}${scope}:`);
  printSecret(output, secret);
}

function printSecret(output: CliOutput, secret: string): void {
  output.out("");
  output.out(`  ${secret}`);
  output.out("");
  output.out("This key is shown once and cannot be recovered: only its hash is stored. Keep it now.");
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

/** One line about an error: its message, or its code when the message is empty. */
function describeError(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  const code = "code" in error && typeof error.code === "string" ? error.code : "";
  const message = error.message !== "" ? error.message : code !== "" ? code : error.name;
  // Postgres explains a missing database, but not how to get one.
  return code === "3D000" ? `${message} (create it first, e.g. with createdb)` : message;
}
