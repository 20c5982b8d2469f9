/**
 * `holdfast tenant create|list` and `holdfast key create|list|revoke`, and how every `--tenant`
 * option of the CLI is read: a tenant id (a UUID) as it is, anything else as a tenant name,
 * looked up in the database ({@link resolveTenantRef}).
 *
 * @module
 */
import { InvalidArgumentError, Option, type Command } from "commander";
import type { Pool, PoolClient } from "pg";
import { inTransaction } from "@holdfast/common/pg";
import { isUuid } from "@holdfast/common/patterns";
import {
  API_KEY_PREFIX,
  createApiKey,
  createTenant,
  listApiKeys,
  revokeApiKey,
  ROLES,
  type ApiKeyRecord,
  type Queryable,
  type CreateApiKeyInput,
  type Role,
} from "@holdfast/ledger/auth/api-keys";
import { recordAudit } from "@holdfast/ledger/audit-log";

/** Where the commands write, one line per call (the same shape as CliOutput in main.ts). */
export interface TenantsOutput {
  out(line: string): void;
}

/** Runs work with a pool on the database the command names (main.ts's withPool). */
export type WithDatabase = <T>(command: Command, work: (pool: Pool) => Promise<T>) => Promise<T>;

/** A tenant as the CLI shows it. */
export interface TenantRow {
  readonly id: string;
  readonly name: string;
  readonly createdAt: Date;
  /** Keys neither revoked nor expired. */
  readonly activeKeys: number;
}

/** Most tenants `tenant list` prints; a bound, not a page size: the CLI lists for people. */
const TENANTS_LISTED_MAX = 10_000;
/** Most keys `key list` prints in all. */
const KEYS_LISTED_MAX = 10_000;
/** `hf_<16 hex key id>_<secret>`: the key id of a full key pasted where a key id is asked for. */
const FULL_KEY_PATTERN = new RegExp(`^${API_KEY_PREFIX}([0-9a-f]{16})_.+$`);

/**
 * The tenant a `--tenant` value names: a UUID is taken as the tenant's id and returned as is
 * (commands then say when no such tenant exists); anything else is a tenant name, looked up.
 * Throws, naming the value, when no tenant has that name.
 */
export async function resolveTenantRef(db: Queryable, ref: string): Promise<string> {
  if (isUuid(ref)) {
    return ref;
  }
  const { rows } = await db.query<{ id: string }>({ text: "select id from tenants where name = $1", values: [ref] });
  const id = rows[0]?.id;
  if (id === undefined) {
    throw new Error(`--tenant must be a tenant id or a tenant's name, and no tenant is named ${JSON.stringify(ref)} (holdfast tenant list shows them)`);
  }
  return id;
}

/** Every tenant, oldest first, with its number of usable keys. */
export async function listTenants(db: Queryable): Promise<TenantRow[]> {
  const { rows } = await db.query<{ id: string; name: string; created_at: Date; active_keys: number }>({
    text: `select t.id, t.name, t.created_at,
                  (select count(*)::int from api_keys k
                    where k.tenant_id = t.id and k.revoked_at is null
                      and (k.expires_at is null or k.expires_at > now())) as active_keys
             from tenants t order by t.created_at, t.id limit $1`,
    values: [TENANTS_LISTED_MAX],
  });
  return rows.map((r) => ({ id: r.id, name: r.name, createdAt: r.created_at, activeKeys: r.active_keys }));
}

/**
 * The key id in `value`: a key id as it is, or the id part of a full key (`hf_<id>_<secret>`),
 * so that a key pasted whole can be revoked without cutting it up by hand.
 */
export function keyIdOf(value: string): string {
  return FULL_KEY_PATTERN.exec(value)?.[1] ?? value;
}

/** Registers `holdfast tenant create|list`. */
export function addTenantCommands(program: Command, output: TenantsOutput, withDatabase: WithDatabase): void {
  const tenant = program.command("tenant").description("manage tenants");
  tenant
    .command("create")
    .description("create a tenant and its first admin API key")
    .argument("<name>", "tenant name, 1-128 characters, unique")
    .option("--json", "print only {tenantId, keyId, apiKey} as JSON")
    .action(async (name: string, options: { json?: boolean }, command: Command) => {
      const created = await withDatabase(command, (pool) =>
        inTransaction(pool, async (client) => {
          const { tenantId } = await createTenant(client, name);
          return createKeyAudited(client, { tenantId, name: "admin", role: "admin" });
        }),
      );
      if (options.json === true) {
        output.out(JSON.stringify({ tenantId: created.key.tenantId, keyId: created.key.keyId, apiKey: created.secret }));
        return;
      }
      output.out(`Created tenant ${created.key.tenantId} (${name}) with admin key ${created.key.keyId}:`);
      printSecret(output, created.secret);
    });
  tenant
    .command("list")
    .description("list the tenants, oldest first, with their number of usable keys")
    .option("--json", "one JSON array of {tenantId, name, createdAt, activeKeys}")
    .action(async (options: { json?: boolean }, command: Command) => {
      const tenants = await withDatabase(command, listTenants);
      if (options.json === true) {
        output.out(JSON.stringify(tenants.map((t) => ({ tenantId: t.id, name: t.name, createdAt: t.createdAt.toISOString(), activeKeys: t.activeKeys }))));
        return;
      }
      printTable(output, ["TENANT ID", "NAME", "CREATED", "KEYS"], tenants.map((t) => [t.id, t.name, t.createdAt.toISOString(), String(t.activeKeys)]));
    });
}

/** Registers `holdfast key create|list|revoke`. */
export function addKeyCommands(program: Command, output: TenantsOutput, withDatabase: WithDatabase): void {
  const key = program.command("key").description("manage API keys");
  key
    .command("create")
    .description("create an API key")
    .requiredOption("--tenant <name-or-id>", "the tenant, by name or id")
    .addOption(new Option("--role <role>", "what the key may call").choices(ROLES).makeOptionMandatory())
    .option("--wallet <id>", "limit the key to one wallet (not for admin keys)")
    .option("--name <name>", "a label for humans (default: the role)")
    .addOption(new Option("--expires-at <time>", "refuse the key from this RFC 3339 time on, e.g. 2026-12-31T23:59:59Z").argParser(parseTime).conflicts("expiresIn"))
    .addOption(new Option("--expires-in <duration>", "refuse the key after this long: a number and s, m, h or d, e.g. 30d").argParser(parseDuration))
    .option("--requests-per-second <n>", "the key's own rate limit, in place of the server's per-key default", parseCount)
    .option("--burst <n>", "calls the key may make at once (default: one second's worth of its rate); needs --requests-per-second", parseCount)
    .option("--json", "print only {tenantId, keyId, role, walletId, apiKey} as JSON")
    .action(async (options: KeyCreateOptions, command: Command) => {
      if (options.burst !== undefined && options.requestsPerSecond === undefined) {
        throw new Error("--burst needs --requests-per-second");
      }
      const expiresAt = options.expiresAt ?? (options.expiresIn === undefined ? undefined : new Date(Date.now() + options.expiresIn));
      // As CreateApiKey's rate_limit: a burst left out is one second's worth of the rate.
      const rateLimit = options.requestsPerSecond === undefined ? undefined : { perSecond: options.requestsPerSecond, burst: options.burst ?? options.requestsPerSecond };
      const input = { tenantId: options.tenant, name: options.name ?? options.role, role: options.role, walletId: options.wallet, expiresAt, rateLimit };
      const { key: record, secret } = await withDatabase(command, (pool) => inTransaction(pool, (client) => createKeyAudited(client, input)));
      printCreatedKey(output, record, secret, options.json === true);
    });
  key
    .command("list")
    .description("list API keys (never their secrets), oldest first: one tenant's, or every tenant's")
    .option("--tenant <name-or-id>", "only this tenant's keys")
    .option("--json", "one JSON array of keys")
    .action(async (options: { tenant?: string; json?: boolean }, command: Command) => {
      const keys = await withDatabase(command, async (pool) => {
        const tenantIds = options.tenant !== undefined ? [options.tenant] : (await listTenants(pool)).map((t) => t.id);
        return listKeys(pool, tenantIds);
      });
      printKeys(output, keys, options.json === true);
    });
  key
    .command("revoke")
    .description("revoke an API key for good")
    .requiredOption("--tenant <name-or-id>", "the tenant, by name or id")
    .argument("<key>", "the key id (the 16 characters after hf_), or the whole key hf_<id>_<secret>")
    .action(async (value: string, options: { tenant: string }, command: Command) => {
      const keyId = keyIdOf(value);
      const record = await withDatabase(command, (pool) =>
        inTransaction(pool, async (client) => {
          const revoked = await revokeApiKey(client, options.tenant, keyId);
          // Recorded like AdminService.RevokeApiKey's, in the same transaction, with no acting key.
          if (revoked !== null) await recordAudit(client, { tenantId: revoked.tenantId, keyId: null, action: "api_key.revoked", target: revoked.keyId });
          return revoked;
        }),
      );
      if (record === null) throw new Error(`tenant ${options.tenant} has no key ${keyId}`);
      const from = keyId === value ? "" : " (the id of the key given)";
      output.out(`Revoked key ${record.keyId}${from} at ${record.revokedAt?.toISOString() ?? "?"}.`);
    });
}

interface KeyCreateOptions {
  tenant: string;
  role: Role;
  wallet?: string;
  name?: string;
  expiresAt?: Date;
  /** Milliseconds from now. */
  expiresIn?: number;
  requestsPerSecond?: number;
  burst?: number;
  json?: boolean;
}

/**
 * Creates a key and its `api_key.created` audit entry, with the same details as
 * AdminService.CreateApiKey records; run it in a transaction so that both commit together. The
 * acting key is null: the CLI acts with database credentials (audit_log.key_id, migration 0011).
 */
async function createKeyAudited(client: PoolClient, input: CreateApiKeyInput): Promise<{ key: ApiKeyRecord; secret: string }> {
  const made = await createApiKey(client, input);
  const details = {
    name: input.name,
    role: input.role,
    wallet_id: made.key.walletId,
    expires_at: input.expiresAt?.toISOString() ?? null,
    ...(input.rateLimit === undefined ? {} : { rate_limit: { requests_per_second: input.rateLimit.perSecond, burst: input.rateLimit.burst } }),
  };
  await recordAudit(client, { tenantId: made.key.tenantId, keyId: null, action: "api_key.created", target: made.key.keyId, details });
  return made;
}

/** `--expires-at`: an RFC 3339 time with its offset (`Z` or `+02:00`), so no local time zone is guessed. */
function parseTime(value: string): Date {
  const date = new Date(value);
  if (!/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})$/i.test(value) || Number.isNaN(date.getTime())) {
    throw new InvalidArgumentError("must be an RFC 3339 time such as 2026-12-31T23:59:59Z");
  }
  return date;
}

const DURATION_UNIT_MS: Readonly<Record<string, number>> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** `--expires-in`: a whole number and a unit (s, m, h, d), in milliseconds. */
function parseDuration(value: string): number {
  const match = /^(\d{1,6})([smhd])$/.exec(value);
  if (match === null || Number(match[1]) === 0) {
    throw new InvalidArgumentError("must be a positive whole number and s, m, h or d, e.g. 30d");
  }
  return Number(match[1]) * (DURATION_UNIT_MS[match[2] ?? "s"] ?? 1000);
}

/** A whole number of calls; the key store checks its bounds and names the field. */
function parseCount(value: string): number {
  if (!/^\d{1,9}$/.test(value)) throw new InvalidArgumentError("must be a whole number");
  return Number(value);
}

/** The keys of `tenantIds`, page by page, at most {@link KEYS_LISTED_MAX} in all. */
async function listKeys(pool: Pool, tenantIds: readonly string[]): Promise<ApiKeyRecord[]> {
  const keys: ApiKeyRecord[] = [];
  for (const tenantId of tenantIds) {
    let pageToken = "";
    do {
      const page = await listApiKeys(pool, tenantId, { pageToken });
      keys.push(...page.keys);
      pageToken = page.nextPageToken;
    } while (pageToken !== "" && keys.length < KEYS_LISTED_MAX);
    if (keys.length >= KEYS_LISTED_MAX) break;
  }
  return keys.slice(0, KEYS_LISTED_MAX);
}

function keyStatus(key: ApiKeyRecord, nowMs: number): string {
  if (key.revokedAt !== null) return "revoked";
  return key.expiresAt !== null && key.expiresAt.getTime() <= nowMs ? "expired" : "active";
}

function printKeys(output: TenantsOutput, keys: readonly ApiKeyRecord[], json: boolean): void {
  const nowMs = Date.now();
  if (json) {
    output.out(JSON.stringify(keys.map((k) => ({
      tenantId: k.tenantId,
      keyId: k.keyId,
      name: k.name,
      role: k.role,
      walletId: k.walletId,
      status: keyStatus(k, nowMs),
      createdAt: k.createdAt.toISOString(),
      revokedAt: k.revokedAt?.toISOString() ?? null,
      expiresAt: k.expiresAt?.toISOString() ?? null,
      lastUsedAt: k.lastUsedAt?.toISOString() ?? null,
    }))));
    return;
  }
  const rows = keys.map((k) => [
    k.keyId, k.tenantId, k.name, k.role, k.walletId ?? "-", keyStatus(k, nowMs), k.createdAt.toISOString(), k.lastUsedAt?.toISOString() ?? "never",
  ]);
  printTable(output, ["KEY ID", "TENANT ID", "NAME", "ROLE", "WALLET", "STATUS", "CREATED", "LAST USED"], rows);
}

/** Columns padded to their widest cell; a table with no rows says so. */
function printTable(output: TenantsOutput, header: readonly string[], rows: readonly (readonly string[])[]): void {
  if (rows.length === 0) {
    output.out("(none)");
    return;
  }
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]?.length ?? 0)));
  for (const row of [header, ...rows]) {
    output.out(row.map((cell, i) => (i === row.length - 1 ? cell : cell.padEnd(widths[i] ?? 0))).join("  "));
  }
}

function printCreatedKey(output: TenantsOutput, record: ApiKeyRecord, secret: string, json: boolean): void {
  if (json) {
    const { tenantId, keyId, role, walletId } = record;
    output.out(JSON.stringify({ tenantId, keyId, role, walletId, apiKey: secret }));
    return;
  }
  const scope = record.walletId === null ? "" : `, limited to wallet ${record.walletId}`;
  output.out(`Created ${record.role} key ${record.keyId} for tenant ${record.tenantId}${scope}:`);
  printSecret(output, secret);
}

function printSecret(output: TenantsOutput, secret: string): void {
  output.out("");
  output.out(`  ${secret}`);
  output.out("");
  output.out("This key is shown once and cannot be recovered: only its hash is stored. Keep it now.");
}
