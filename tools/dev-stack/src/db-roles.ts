/**
 * The two database roles of `npm start` (docs/security.md, "Tamper evidence: roles, hash chain
 * and holdfast verify"): `holdfast_owner` applies the migrations and owns every table and
 * function; `holdfast_app`, a member of the NOLOGIN group `holdfast_runtime` that migration 0011
 * grants to, is what the ledger and the workers connect as. So development runs the way
 * production should: the processes cannot alter or rewrite the journal.
 *
 * @module
 */
import { randomBytes } from "node:crypto";
import pg from "pg";
import type { Logger } from "pino";

export const DEV_OWNER_ROLE = "holdfast_owner";
export const DEV_APP_ROLE = "holdfast_app";
/** The group role migration 0011 grants the runtime privileges to. */
export const RUNTIME_GROUP_ROLE = "holdfast_runtime";
/** Random bytes of each role's password, set afresh on every start and never stored. */
const PASSWORD_BYTES = 24;

/** Where the migrations and where the processes connect. */
export interface DevDatabaseUrls {
  /** The owner's URL: `holdfast migrate` and npm start's own setup. */
  readonly ownerUrl: string;
  /** The runtime role's URL: the ledger, the workers. */
  readonly appUrl: string;
  /** False when the URL's role could not create roles and everything runs as it. */
  readonly separated: boolean;
}

/**
 * Creates or updates the two roles through `adminUrl` (a role with CREATEROLE, such as the
 * local superuser) and returns their URLs, with a fresh password each. A database first
 * migrated by another role (before these roles existed) keeps that role as its owner: its
 * tables and functions cannot change hands from here, so the migrations stay with it, and
 * only the processes move to `holdfast_app`.
 */
export async function ensureDevRoles(adminUrl: string, logger: Logger, connectTimeoutMs: number): Promise<DevDatabaseUrls> {
  const client = new pg.Client({ connectionString: adminUrl, connectionTimeoutMillis: connectTimeoutMs, application_name: "holdfast-start" });
  await client.connect();
  try {
    const { rows } = await client.query<{ may: boolean; owner: string | null; database: string }>(`
      select r.rolsuper or r.rolcreaterole as may, current_database() as database,
             (select pg_get_userbyid(relowner) from pg_class where oid = to_regclass('schema_migrations')) as owner
        from pg_roles r where r.rolname = current_user`);
    const facts = rows[0]!;
    if (!facts.may) {
      logger.warn("the database URL's role cannot create roles: the stack runs as that one role, which owns the journal");
      return { ownerUrl: adminUrl, appUrl: adminUrl, separated: false };
    }
    const ownerPassword = await ensureRole(client, DEV_OWNER_ROLE, []);
    const appPassword = await ensureRole(client, DEV_APP_ROLE, [RUNTIME_GROUP_ROLE]);
    const ownsSchema = facts.owner === null || facts.owner === DEV_OWNER_ROLE;
    if (facts.owner === null) {
      // A fresh database: the owner role owns it, and so may create in its public schema.
      await client.query(`alter database ${client.escapeIdentifier(facts.database)} owner to ${DEV_OWNER_ROLE}`);
      await client.query(`grant create, usage on schema public to ${DEV_OWNER_ROLE}`);
    }
    if (!ownsSchema) {
      logger.info({ owner: facts.owner }, `the database was first migrated as ${facts.owner}, which stays its owner; the processes run as ${DEV_APP_ROLE}`);
    }
    return {
      ownerUrl: ownsSchema ? withRole(adminUrl, DEV_OWNER_ROLE, ownerPassword) : adminUrl,
      appUrl: withRole(adminUrl, DEV_APP_ROLE, appPassword),
      separated: true,
    };
  } finally {
    await client.end();
  }
}

/** Creates a login role (or updates the one there) with a new password; returns the password. */
async function ensureRole(client: pg.Client, name: string, memberOf: readonly string[]): Promise<string> {
  const password = randomBytes(PASSWORD_BYTES).toString("hex");
  const exists = (await client.query({ text: "select 1 from pg_roles where rolname = $1", values: [name] })).rowCount === 1;
  const verb = exists ? "alter" : "create";
  await client.query(`${verb} role ${name} login nosuperuser nocreaterole password ${client.escapeLiteral(password)}`);
  for (const group of memberOf) {
    await client.query(`do $$ begin
      if not exists (select 1 from pg_roles where rolname = '${group}') then create role ${group} nologin; end if;
    end $$`);
    await client.query(`grant ${group} to ${name}`);
  }
  return password;
}

/** `url` with another user and password. */
function withRole(url: string, user: string, password: string): string {
  const parsed = new URL(url);
  parsed.username = user;
  parsed.password = password;
  return parsed.toString();
}
