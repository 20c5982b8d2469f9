// Goal: the schema stays ready to run on a distributed PostgreSQL that shards by tenant_id
// (docs/architecture.md, "Past one machine: distributed PostgreSQL"; issue 17, target 8). Such
// an engine enforces a unique key only inside one shard and a foreign key only between rows of
// one shard, so: every table is either distributed by tenant_id or listed below as a reference
// or coordinator table with the reason; every primary key, unique constraint and unique index of
// a distributed table has tenant_id among its key columns; every foreign key between two
// distributed tables matches tenant_id to tenant_id, and none points from a reference or
// coordinator table at a distributed one. Sequences and triggers carry rules of their own there
// (a sequence is per node; a trigger runs on the shard, needs the engine's opt-in and sees only
// what that node has), so each one is listed with what it relies on, and a new one fails here
// until someone has read those rules and added it.
// Method: a fresh database cloned from the migrated template; the rules read pg_catalog only
// (tables, indexes, constraints, sequences' dependencies, triggers). A second test adds tables
// that break each rule inside a transaction it rolls back, and checks each is reported, so the
// rules cannot pass by reading nothing.
// Not checked here: function bodies. Whether every statement of a function filters a
// tenant-owned table by tenant_id needs a SQL parser, not a pattern; CONTRIBUTING.md, "Add a
// migration", states the rule for reviewers.
import type pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTestDatabase, type TestDatabase } from "./support/db.js";

/** The distribution column: every distributed table has it, as a non-null uuid. */
const DISTRIBUTION_COLUMN = "tenant_id";
const DISTRIBUTION_COLUMN_TYPE = "uuid";

/**
 * Tables copied whole to every node. They hold no tenant's data, or are found before the tenant
 * is known; distributed tables may point at them with foreign keys.
 */
const REFERENCE_TABLES: ReadonlyMap<string, string> = new Map([
  ["tenants", "the tenants themselves: every tenant-owned table's foreign key to tenants(id) is a key to a reference table, which the engine allows"],
  ["api_keys", "authentication finds a key by key_id alone, before it knows the tenant; few rows, written only by key administration"],
  ["deployment", "one row for the whole deployment"],
]);

/** Tables that stay on the coordinator: the migration runner's bookkeeping, read only while migrating. */
const COORDINATOR_TABLES: ReadonlyMap<string, string> = new Map([
  ["schema_migrations", "the migration runner's record of applied files (db/src/migrate.ts)"],
  ["holdfast_entry_points", "read by holdfast_secure_functions while a migration runs"],
]);

/**
 * Unique keys of distributed tables that leave tenant_id out, each with why. Meant to be empty:
 * a unique key without tenant_id cannot be enforced across shards.
 */
const UNIQUE_KEY_EXCEPTIONS: ReadonlyMap<string, string> = new Map([
  ["events_pkey", "must change: (event_id) alone; a migration moves it to (event_id, tenant_id), which keeps the relay's lookups by event_id on the same index"],
]);

/**
 * Sequences, by the column they feed (or their own name if they feed none). On a distributed
 * engine a sequence is per node (each node draws from its own range), so its values are unique
 * but not ordered across nodes.
 */
const SEQUENCES: ReadonlyMap<string, string> = new Map([
  ["events.position", "the relay's publishing order; per wallet it follows seq only while the wallet's inserts run on one node (docs/architecture.md, \"Past one machine: distributed PostgreSQL\")"],
]);

/**
 * Triggers, by table and name. On a distributed engine a trigger runs on the shard, only with the
 * engine's opt-in, and sees only what its node has: its own row, the co-located rows of the same
 * tenant, reference tables, and settings made on that node.
 */
const TRIGGERS: ReadonlyMap<string, string> = new Map([
  ["transfers.transfers_chain_link", "deferred; appends to the tenant's hash chain (journal_chain, journal_chain_heads, co-located)"],
  ["transfers.transfers_key", "stamps holdfast.key_id, a transaction setting: the command must run on the shard's node"],
  ["transfers.transfers_statement_floor", "reads the wallet's statements (co-located)"],
  ["transfers.transfers_no_update", "refuses the change; reads nothing"],
  ["transfers.transfers_no_truncate", "refuses the change; reads nothing"],
  ["grants.grants_other_insert", "updates the grant's own account row (accounts.grants_other; co-located)"],
  ["grants.grants_other_update", "updates the grant's own account row (accounts.grants_other; co-located)"],
  ["events.events_balance_alerts", "reads balance_alerts and accounts, writes balance_alert_states and events (co-located)"],
  ["events.events_batch", "stamps holdfast.batch_id, a transaction setting: the batch must run on the shard's node"],
  ["events.events_key", "stamps holdfast.key_id, a transaction setting: the command must run on the shard's node"],
  ["rate_card_versions.rate_card_versions_no_change", "refuses the change; reads nothing"],
  ["rate_card_models.rate_card_models_no_change", "refuses the change; reads nothing"],
  ["journal_chain.journal_chain_append_only", "refuses the change; reads nothing"],
  ["journal_chain.journal_chain_no_truncate", "refuses the change; reads nothing"],
  ["journal_chain_checkpoints.journal_chain_checkpoints_append_only", "refuses the change; reads nothing"],
  ["journal_chain_checkpoints.journal_chain_checkpoints_no_truncate", "refuses the change; reads nothing"],
  ["audit_log.audit_log_append_only", "refuses the change; reads nothing"],
  ["audit_log.audit_log_no_truncate", "refuses the change; reads nothing"],
  ["statements.statements_append_only", "refuses the change; reads nothing"],
  ["statements.statements_no_truncate", "refuses the change; reads nothing"],
]);

type Placement = "distributed" | "reference" | "coordinator";

interface TableRow {
  name: string;
  tenant_type: string | null;
  tenant_not_null: boolean | null;
}

/** Every rule's violations, one line each, naming the object and the rule. */
async function distributionViolations(client: pg.ClientBase): Promise<string[]> {
  const violations: string[] = [];
  const placements = await placeTables(client, violations);
  await checkUniqueKeys(client, placements, violations);
  await checkForeignKeys(client, placements, violations);
  await checkListed(client, "sequence", SEQUENCES, SEQUENCES_SQL, violations);
  await checkListed(client, "trigger", TRIGGERS, TRIGGERS_SQL, violations);
  return violations;
}

/** Distributed if it has tenant_id and is not listed; listed tables must exist. */
async function placeTables(client: pg.ClientBase, violations: string[]): Promise<Map<string, Placement>> {
  // Partitions follow their parent, so only the parents are placed.
  const { rows } = await client.query<TableRow>(`
    select c.relname as name, format_type(a.atttypid, a.atttypmod) as tenant_type, a.attnotnull as tenant_not_null
      from pg_class c
      left join pg_attribute a on a.attrelid = c.oid and a.attname = $1 and not a.attisdropped
     where c.relnamespace = current_schema()::regnamespace and c.relkind in ('r', 'p') and not c.relispartition
     order by c.relname`, [DISTRIBUTION_COLUMN]);
  const placements = new Map<string, Placement>();
  for (const table of rows) {
    const listed = REFERENCE_TABLES.has(table.name) ? "reference" : COORDINATOR_TABLES.has(table.name) ? "coordinator" : null;
    if (listed !== null) {
      placements.set(table.name, listed);
    } else if (table.tenant_type === null) {
      violations.push(`table ${table.name}: no ${DISTRIBUTION_COLUMN} and not listed as a reference or coordinator table`);
    } else {
      placements.set(table.name, "distributed");
      if (table.tenant_type !== DISTRIBUTION_COLUMN_TYPE || table.tenant_not_null !== true) {
        violations.push(`table ${table.name}: ${DISTRIBUTION_COLUMN} is ${table.tenant_type}${table.tenant_not_null === true ? "" : " (nullable)"}, not a non-null ${DISTRIBUTION_COLUMN_TYPE}`);
      }
    }
  }
  for (const name of [...REFERENCE_TABLES.keys(), ...COORDINATOR_TABLES.keys()]) {
    if (!placements.has(name)) violations.push(`table ${name}: listed but does not exist`);
  }
  return placements;
}

/** Primary keys, unique constraints, unique indexes (partial ones too) and exclusion constraints. */
async function checkUniqueKeys(client: pg.ClientBase, placements: Map<string, Placement>, violations: string[]): Promise<void> {
  const { rows } = await client.query<{ index: string; table: string; keys: string[] }>(`
    select i.indexrelid::regclass::text as index, c.relname as table,
           array(select coalesce(a.attname::text, '(expression)')
                   from unnest(i.indkey) with ordinality k (attnum, ord)
                   left join pg_attribute a on a.attrelid = i.indrelid and a.attnum = k.attnum
                  where k.ord <= i.indnkeyatts order by k.ord) as keys
      from pg_index i join pg_class c on c.oid = i.indrelid
     where c.relnamespace = current_schema()::regnamespace and (i.indisunique or i.indisexclusion)
     order by 1`);
  for (const index of rows) {
    if (placements.get(index.table) !== "distributed") continue;
    const included = index.keys.includes(DISTRIBUTION_COLUMN);
    if (UNIQUE_KEY_EXCEPTIONS.has(index.index)) {
      // A fixed exception leaves the list, so it cannot hide a later regression.
      if (included) violations.push(`unique key ${index.index}: listed as an exception but includes ${DISTRIBUTION_COLUMN}`);
    } else if (!included) {
      violations.push(`unique key ${index.index} on ${index.table} (${index.keys.join(", ")}): does not include ${DISTRIBUTION_COLUMN}`);
    }
  }
  for (const name of UNIQUE_KEY_EXCEPTIONS.keys()) {
    if (!rows.some((index) => index.index === name)) violations.push(`unique key ${name}: listed as an exception but does not exist`);
  }
}

/**
 * Distributed to distributed: tenant_id matched to tenant_id, so both rows are in one shard.
 * Distributed to reference and reference to reference: allowed. Anything else is not.
 */
async function checkForeignKeys(client: pg.ClientBase, placements: Map<string, Placement>, violations: string[]): Promise<void> {
  const { rows } = await client.query<{ name: string; from_table: string; to_table: string; from_columns: string[]; to_columns: string[] }>(`
    select con.conname as name, src.relname as from_table, dst.relname as to_table,
           array(select a.attname::text from unnest(con.conkey) with ordinality k (attnum, ord)
                   join pg_attribute a on a.attrelid = con.conrelid and a.attnum = k.attnum order by k.ord) as from_columns,
           array(select a.attname::text from unnest(con.confkey) with ordinality k (attnum, ord)
                   join pg_attribute a on a.attrelid = con.confrelid and a.attnum = k.attnum order by k.ord) as to_columns
      from pg_constraint con
      join pg_class src on src.oid = con.conrelid
      join pg_class dst on dst.oid = con.confrelid
     where con.contype = 'f' and con.connamespace = current_schema()::regnamespace and con.conparentid = 0
     order by 1`);
  for (const fk of rows) {
    const from = placements.get(fk.from_table);
    const to = placements.get(fk.to_table);
    const described = `foreign key ${fk.name} ${fk.from_table}(${fk.from_columns.join(", ")}) -> ${fk.to_table}(${fk.to_columns.join(", ")})`;
    if (from === undefined || to === undefined) continue; // an unplaced table is already reported
    if (from === "distributed" && to === "distributed") {
      const matched = fk.from_columns.some((column, i) => column === DISTRIBUTION_COLUMN && fk.to_columns[i] === DISTRIBUTION_COLUMN);
      if (!matched) violations.push(`${described}: between distributed tables without ${DISTRIBUTION_COLUMN} = ${DISTRIBUTION_COLUMN}`);
    } else if (!(to === "reference" && from !== "coordinator")) {
      violations.push(`${described}: from a ${from} table to a ${to} table`);
    }
  }
}

/** Each sequence by the table.column it feeds, or by its own name if it feeds none. */
const SEQUENCES_SQL = `
  select coalesce(c.relname || '.' || a.attname, s.relname) as name
    from pg_class s
    left join pg_depend d on d.classid = 'pg_class'::regclass and d.objid = s.oid
                         and d.refclassid = 'pg_class'::regclass and d.deptype in ('a', 'i')
    left join pg_class c on c.oid = d.refobjid
    left join pg_attribute a on a.attrelid = d.refobjid and a.attnum = d.refobjsubid
   where s.relnamespace = current_schema()::regnamespace and s.relkind = 'S'
   order by 1`;

/** Each trigger a migration created (not the ones PostgreSQL makes for foreign keys), by table.name. */
const TRIGGERS_SQL = `
  select c.relname || '.' || t.tgname as name
    from pg_trigger t join pg_class c on c.oid = t.tgrelid
   where c.relnamespace = current_schema()::regnamespace and not t.tgisinternal
   order by 1`;

/** The catalog's objects of one kind and the list must name the same set. */
async function checkListed(
  client: pg.ClientBase,
  kind: string,
  listed: ReadonlyMap<string, string>,
  sql: string,
  violations: string[],
): Promise<void> {
  const { rows } = await client.query<{ name: string }>(sql);
  const found = new Set(rows.map((row) => row.name));
  for (const name of found) {
    if (!listed.has(name)) violations.push(`${kind} ${name}: not listed with what it relies on under distribution`);
  }
  for (const name of listed.keys()) {
    if (!found.has(name)) violations.push(`${kind} ${name}: listed but does not exist`);
  }
}

let db: TestDatabase;

beforeAll(async () => {
  db = await createTestDatabase();
});

afterAll(async () => {
  await db?.drop();
});

describe("distribution rules", () => {
  it("hold for every table, key, foreign key, sequence and trigger of the migrated schema", async () => {
    const client = await db.pool.connect();
    try {
      expect(await distributionViolations(client)).toEqual([]);
    } finally {
      client.release();
    }
  });

  it("report a table, key, foreign key, sequence and trigger that break them", async () => {
    const client = await db.pool.connect();
    try {
      await client.query("begin");
      await client.query(`
        create table distribution_probe (tenant_id uuid not null references tenants (id),
                                         probe_id text primary key, label text, unique (tenant_id, label));
        create unique index distribution_probe_label on distribution_probe (label) where label is not null;
        create table distribution_probe_child (tenant_id uuid not null, probe_id text references distribution_probe (probe_id),
                                               primary key (tenant_id, probe_id));
        create table distribution_probe_global (n bigint generated always as identity primary key, note text);
        create table distribution_probe_loose (tenant_id text, note text);
        alter table deployment add column probe_tenant uuid, add column probe_id text,
          add foreign key (probe_tenant, probe_id) references distribution_probe_child (tenant_id, probe_id);
        create trigger distribution_probe_refuse before update on distribution_probe
          for each row execute function ledger_refuse_change();`);
      const violations = await distributionViolations(client);
      expect(violations).toEqual(
        expect.arrayContaining([
          "table distribution_probe_global: no tenant_id and not listed as a reference or coordinator table",
          "table distribution_probe_loose: tenant_id is text (nullable), not a non-null uuid",
          "unique key distribution_probe_pkey on distribution_probe (probe_id): does not include tenant_id",
          "unique key distribution_probe_label on distribution_probe (label): does not include tenant_id",
          "foreign key distribution_probe_child_probe_id_fkey distribution_probe_child(probe_id) -> distribution_probe(probe_id): between distributed tables without tenant_id = tenant_id",
          "foreign key deployment_probe_tenant_probe_id_fkey deployment(probe_tenant, probe_id) -> distribution_probe_child(tenant_id, probe_id): from a reference table to a distributed table",
          "sequence distribution_probe_global.n: not listed with what it relies on under distribution",
          "trigger distribution_probe.distribution_probe_refuse: not listed with what it relies on under distribution",
        ]),
      );
      // The unique key that does include tenant_id, and the key to tenants, are fine.
      expect(violations.filter((line) => line.includes("distribution_probe_tenant_id_label_key"))).toEqual([]);
      expect(violations.filter((line) => line.includes("distribution_probe_tenant_id_fkey"))).toEqual([]);
    } finally {
      await client.query("rollback");
      client.release();
    }
  });
});
