/**
 * `holdfast verify [--tenant <id>]`: recomputes each tenant's journal hash chain, lane by lane
 * (migrations 0011 and 0020), and checks the ledger invariants (@holdfast/ledger/invariants),
 * all in one database snapshot, and fails naming every row that does not match. docs/security.md, "Tamper
 * evidence: roles, hash chain and holdfast verify", says what this proves and what it does not.
 *
 * The canonical row is rebuilt here from the columns' text, not by the database's
 * ledger_chain_canonical: a function the owner replaced cannot vouch for itself.
 *
 * @module
 */
import { createHash } from "node:crypto";
import type { Command } from "commander";
import type { Pool, PoolClient } from "pg";
import { isUuid } from "@holdfast/common/patterns";
import { checkInvariants } from "@holdfast/ledger/invariants";

/** Where the command writes, one line per call (the same shape as CliOutput in main.ts). */
export interface VerifyOutput {
  out(line: string): void;
  err(line: string): void;
}

/** Runs work with a pool on the database the command names (main.ts's withPool). */
export type WithDatabase = <T>(command: Command, work: (pool: Pool) => Promise<T>) => Promise<T>;

/** Journal rows read per query while walking a chain. */
const CHAIN_PAGE_ROWS_MAX = 5000;
/** Problems listed per tenant; more are counted, not listed. */
const PROBLEMS_LISTED_PER_TENANT_MAX = 20;
/** Below this many journal rows no progress bar is drawn: the run is over before it would help. */
const PROGRESS_ROWS_MIN = 10_000;
const PROGRESS_BAR_WIDTH = 30;
/** The first row's prev_hash. */
const GENESIS_HASH = Buffer.alloc(32);
/** Characters of a hash shown in messages; enough to tell two apart. */
const HASH_SHOWN_LENGTH = 16;
/**
 * Must match ledger_chain_canonical (db/migrations/0011_integrity.sql, 0013_usage.sql): version
 * 1 for rows without usage columns, version 2 (version 1's fields, then usage_id, model and
 * token_class) for the rows of the usage commands.
 */
const CANONICAL_PREFIX = "holdfast.journal.v1";
const CANONICAL_PREFIX_USAGE = "holdfast.journal.v2";

/**
 * One link of the chain and its journal row, as the walk reads them: every canonical column as
 * the database's text. The row's columns are null when the link names a row the journal lacks.
 */
interface ChainRow {
  lane: number;
  chain_seq: string;
  /** The journal row the link names. */
  link_transfer_id: string;
  /** False when the journal has no such row. */
  present: boolean;
  tenant_id: string;
  transfer_id: string;
  kind: string;
  debit_wallet_id: string;
  credit_wallet_id: string;
  asset: string;
  amount: string;
  hold_id: string | null;
  refund_of: string | null;
  metadata: string;
  created_us: string;
  grants: string | null;
  key_id: string | null;
  usage_id: string | null;
  model: string | null;
  token_class: string | null;
  prev_hash: Buffer;
  row_hash: Buffer;
}

/** What the canonical row is made of: the journal row's columns and the link's number. */
type CanonicalColumns = Omit<ChainRow, "lane" | "link_transfer_id" | "present" | "prev_hash" | "row_hash">;

/** Journal rows without a link, or linked twice, listed per tenant at most. */
const STRAYS_LISTED_MAX = PROBLEMS_LISTED_PER_TENANT_MAX;

/** The last link walked: a row's sequence number and row_hash. */
interface ChainLink {
  seq: bigint;
  hash: Buffer;
}

/** Where one lane of a tenant's chain ends, as recomputed. */
export interface LaneHead {
  lane: number;
  seq: bigint;
  hash: string;
}

/** What one tenant's chain walk found. */
export interface TenantReport {
  tenantId: string;
  rows: number;
  /** Every lane the chain or its heads name, in lane order. */
  lanes: LaneHead[];
  problems: string[];
  /** Problems beyond PROBLEMS_LISTED_PER_TENANT_MAX, counted only. */
  problemsUnlisted: number;
}

/** What a verify run found; `ok` when no chain problem and no invariant violation. */
export interface VerifyReport {
  tenants: TenantReport[];
  invariantViolations: string[];
  /**
   * Events deleted by the event retention (HOLDFAST_EVENT_RETENTION_HOURS) and the wallets they
   * were of: below each such wallet's pruned seq the events check compares the count and hash
   * sum kept in event_retention instead of the rows.
   */
  prunedEvents: { events: bigint; wallets: number };
  ok: boolean;
}

/** Progress of the chain walk, in journal rows. */
export type VerifyProgress = (done: number, total: number) => void;

/** Registers `holdfast verify`. */
export function addVerifyCommand(program: Command, output: VerifyOutput, withDatabase: WithDatabase): void {
  program
    .command("verify")
    .description("recompute the journal's hash chain and check the ledger invariants; exits 1 on any mismatch")
    .option("--tenant <id>", "verify only this tenant")
    .action(async (options: { tenant?: string }, command: Command) => {
      if (options.tenant !== undefined && !isUuid(options.tenant)) {
        throw new Error(`--tenant must be a tenant id (a UUID), not ${JSON.stringify(options.tenant)}`);
      }
      const bar = createProgressBar(process.stderr);
      const report = await withDatabase(command, (pool) =>
        verifyLedger(pool, { tenantId: options.tenant, progress: bar.update }).finally(bar.clear),
      );
      printReport(output, report);
      if (!report.ok) {
        const problems = report.tenants.reduce((n, t) => n + t.problems.length + t.problemsUnlisted, 0);
        throw new Error(`verification failed: ${problems} journal chain problem(s), ${report.invariantViolations.length} invariant violation(s)`);
      }
    });
}

/**
 * Walks the chain of every tenant (or one) and checks the invariants, in one read-only
 * repeatable-read transaction, so that the rows, the chain heads and the balances all come from
 * the same snapshot while the ledger keeps writing.
 */
export async function verifyLedger(
  pool: Pool,
  options: { tenantId?: string | undefined; progress?: VerifyProgress } = {},
): Promise<VerifyReport> {
  const client = await pool.connect();
  try {
    await client.query("begin isolation level repeatable read read only");
    const tenantIds = await tenantsToVerify(client, options.tenantId);
    const total = await journalRows(client, options.tenantId);
    let done = 0;
    const tenants: TenantReport[] = [];
    for (const tenantId of tenantIds) {
      tenants.push(
        await verifyChain(client, tenantId, (rows) => {
          done += rows;
          options.progress?.(done, total);
        }),
      );
    }
    const invariantViolations = await checkInvariants(client, { tenantId: options.tenantId });
    const prunedEvents = await prunedEventsOf(client, options.tenantId);
    const ok = invariantViolations.length === 0 && tenants.every((t) => t.problems.length === 0);
    return { tenants, invariantViolations, prunedEvents, ok };
  } finally {
    // Read only: ending it with a rollback changes nothing.
    await client.query("rollback").catch(() => undefined);
    client.release();
  }
}

async function prunedEventsOf(client: PoolClient, tenantId: string | undefined): Promise<{ events: bigint; wallets: number }> {
  const { rows } = await client.query<{ events: string; wallets: number }>({
    text: `select coalesce(sum(pruned_seq), 0)::text as events, count(*)::int as wallets from event_retention
            where $1::uuid is null or tenant_id = $1::uuid`,
    values: [tenantId ?? null],
  });
  return { events: BigInt(rows[0]!.events), wallets: rows[0]!.wallets };
}

async function tenantsToVerify(client: PoolClient, tenantId: string | undefined): Promise<string[]> {
  const { rows } = await client.query<{ id: string }>({
    text: "select id::text from tenants where $1::uuid is null or id = $1::uuid order by id",
    values: [tenantId ?? null],
  });
  if (tenantId !== undefined && rows.length === 0) {
    throw new Error(`no tenant ${tenantId}`);
  }
  return rows.map((r) => r.id);
}

async function journalRows(client: PoolClient, tenantId: string | undefined): Promise<number> {
  const { rows } = await client.query<{ n: string }>({
    text: "select count(*)::text as n from transfers where $1::uuid is null or tenant_id = $1::uuid",
    values: [tenantId ?? null],
  });
  return Number(rows[0]?.n ?? 0);
}

/**
 * One tenant's chain, lane by lane (migration 0020): in each lane every link's sequence number
 * follows the last, its prev_hash is the last link's row_hash, its journal row exists and its
 * row_hash is sha256(prev_hash || canonical row); then each lane's head and every checkpoint
 * agree with what was recomputed, and every journal row of the tenant has exactly one link.
 */
async function verifyChain(client: PoolClient, tenantId: string, advanced: (rows: number) => void): Promise<TenantReport> {
  const report: TenantReport = { tenantId, rows: 0, lanes: [], problems: [], problemsUnlisted: 0 };
  const problem = (text: string) => {
    if (report.problems.length < PROBLEMS_LISTED_PER_TENANT_MAX) report.problems.push(text);
    else report.problemsUnlisted++;
  };
  const checkpoints = await chainCheckpoints(client, tenantId);
  const heads = await chainHeads(client, tenantId);
  const walked = new Map<number, ChainLink>();
  let lane = -1;
  let last: ChainLink = { seq: 0n, hash: GENESIS_HASH };
  for (;;) {
    const page = await chainPage(client, tenantId, lane, last.seq);
    for (const row of page) {
      if (row.lane !== lane) {
        lane = row.lane;
        last = { seq: 0n, hash: GENESIS_HASH };
      }
      last = checkRow(row, last, problem);
      walked.set(lane, last);
      const laneCheckpoints = checkpoints.get(lane);
      const checkpoint = laneCheckpoints?.get(last.seq);
      if (checkpoint !== undefined && !checkpoint.equals(last.hash)) {
        problem(`${laneName(lane)}journal row ${last.seq} (transfer ${row.link_transfer_id}): differs from the checkpoint of its chain head (checkpoint ${short(checkpoint)}, row ${short(last.hash)})`);
      }
      laneCheckpoints?.delete(last.seq);
    }
    report.rows += page.length;
    advanced(page.length);
    if (page.length < CHAIN_PAGE_ROWS_MAX) break;
  }
  const lanes = [...new Set([...walked.keys(), ...heads.keys(), ...checkpoints.keys()])].sort((a, b) => a - b);
  for (const l of lanes) {
    const end = walked.get(l) ?? { seq: 0n, hash: GENESIS_HASH };
    for (const seq of checkpoints.get(l)?.keys() ?? []) {
      problem(`${laneName(l)}checkpoint at journal row ${seq}: no such row (the chain ends at row ${end.seq})`);
    }
    checkHead(l, heads.get(l), end, problem);
    report.lanes.push({ lane: l, seq: end.seq, hash: end.hash.toString("hex") });
  }
  await checkStrays(client, tenantId, problem);
  return report;
}

/** How problems name a lane: nothing for lane 0, the only lane of most small ledgers. */
function laneName(lane: number): string {
  return lane === 0 ? "" : `lane ${lane}, `;
}

/** Checks one row against the previous link; returns the link it makes. */
function checkRow(row: ChainRow, last: ChainLink, problem: (text: string) => void): ChainLink {
  const seq = BigInt(row.chain_seq);
  const name = `${laneName(row.lane)}journal row ${seq} (transfer ${row.link_transfer_id})`;
  if (seq !== last.seq + 1n) {
    problem(`${name}: follows row ${last.seq}; ${seq > last.seq + 1n ? `rows ${last.seq + 1n}-${seq - 1n} are missing` : "sequence out of order"}`);
  }
  if (!row.prev_hash.equals(last.hash)) {
    problem(`${name}: prev_hash ${short(row.prev_hash)} is not the previous row's hash ${short(last.hash)}`);
  }
  if (!row.present) {
    problem(`${name}: missing from the journal`);
    return { seq, hash: row.row_hash };
  }
  const recomputed = chainHash(row.prev_hash, row);
  if (!recomputed.equals(row.row_hash)) {
    problem(`${name}: content does not match its hash (stored ${short(row.row_hash)}, recomputed ${short(recomputed)})`);
  }
  return { seq, hash: row.row_hash };
}

function checkHead(lane: number, head: ChainLink | undefined, last: ChainLink, problem: (text: string) => void): void {
  if (head === undefined) {
    if (last.seq > 0n) problem(`${laneName(lane)}chain head: missing, while the chain has ${last.seq} rows`);
    return;
  }
  if (head.seq !== last.seq || !head.hash.equals(last.hash)) {
    problem(`${laneName(lane)}chain head: row ${head.seq} ${short(head.hash)}, but the chain ends at row ${last.seq} ${short(last.hash)}`);
  }
}

/** The tenant's lane heads as stored, by lane. */
async function chainHeads(client: PoolClient, tenantId: string): Promise<Map<number, ChainLink>> {
  const { rows } = await client.query<{ lane: number; chain_seq: string; head_hash: Buffer }>({
    text: "select lane, chain_seq::text, head_hash from journal_chain_heads where tenant_id = $1",
    values: [tenantId],
  });
  return new Map(rows.map((r) => [r.lane, { seq: BigInt(r.chain_seq), hash: r.head_hash }]));
}

/** Journal rows the chain does not link, and rows it links more than once. */
async function checkStrays(client: PoolClient, tenantId: string, problem: (text: string) => void): Promise<void> {
  const { rows } = await client.query<{ transfer_id: string; links: number }>({
    text: `(select t.transfer_id::text, 0 as links from transfers t
              where t.tenant_id = $1
                and not exists (select 1 from journal_chain c where c.tenant_id = $1 and c.transfer_id = t.transfer_id)
              limit $2)
           union all
           (select transfer_id::text, count(*)::int from journal_chain where tenant_id = $1
             group by transfer_id having count(*) > 1 limit $2)`,
    values: [tenantId, STRAYS_LISTED_MAX],
  });
  for (const r of rows) {
    problem(r.links === 0 ? `transfer ${r.transfer_id}: in the journal but in no link of the chain` : `transfer ${r.transfer_id}: linked ${r.links} times`);
  }
}

/** The tenant's checkpoints: by lane, the hash recorded at each sequence number. */
async function chainCheckpoints(client: PoolClient, tenantId: string): Promise<Map<number, Map<bigint, Buffer>>> {
  const { rows } = await client.query<{ lane: number; chain_seq: string; head_hash: Buffer }>({
    text: "select lane, chain_seq::text, head_hash from journal_chain_checkpoints where tenant_id = $1",
    values: [tenantId],
  });
  const byLane = new Map<number, Map<bigint, Buffer>>();
  for (const r of rows) {
    const lane = byLane.get(r.lane) ?? new Map<bigint, Buffer>();
    lane.set(BigInt(r.chain_seq), r.head_hash);
    byLane.set(r.lane, lane);
  }
  return byLane;
}

/**
 * The tenant's next links after (`afterLane`, `afterSeq`), lane by lane in chain order, with
 * their journal rows, each column as the database's text (ordered by the columns, not by their
 * text aliases, which would sort 10 before 9).
 */
async function chainPage(client: PoolClient, tenantId: string, afterLane: number, afterSeq: bigint): Promise<ChainRow[]> {
  const { rows } = await client.query<ChainRow>({
    text: `select c.lane, c.chain_seq::text, c.transfer_id::text as link_transfer_id, t.transfer_id is not null as present,
                  t.tenant_id::text, t.transfer_id::text, t.kind, t.debit_wallet_id, t.credit_wallet_id,
                  t.asset, t.amount::text, t.hold_id, t.refund_of::text, t.metadata::text,
                  ((extract(epoch from t.created_at) * 1000000)::bigint)::text as created_us,
                  t.grants::text, t.key_id, t.usage_id::text, t.model, t.token_class, c.prev_hash, c.row_hash
             from journal_chain c
             left join transfers t on t.tenant_id = c.tenant_id and t.transfer_id = c.transfer_id
            where c.tenant_id = $1 and (c.lane, c.chain_seq) > ($2::smallint, $3::bigint)
            order by c.lane, c.chain_seq limit $4`,
    values: [tenantId, afterLane, afterSeq.toString(), CHAIN_PAGE_ROWS_MAX],
  });
  return rows;
}

/** sha256(prev_hash || canonical row), the canonical row as ledger_chain_canonical builds it. */
export function chainHash(prevHash: Buffer, row: CanonicalColumns): Buffer {
  const fields = [
    row.tenant_id, row.chain_seq, row.transfer_id, row.kind, row.debit_wallet_id, row.credit_wallet_id,
    row.asset, row.amount, row.hold_id, row.refund_of, row.metadata, row.created_us, row.grants, row.key_id,
  ];
  const usage = [row.usage_id, row.model, row.token_class];
  const canonical = usage.every((field) => (field ?? null) === null)
    ? CANONICAL_PREFIX + fields.map(canonicalField).join("")
    : CANONICAL_PREFIX_USAGE + [...fields, ...usage].map(canonicalField).join("");
  return createHash("sha256").update(prevHash).update(canonical, "utf8").digest();
}

/** A field as ledger_chain_field encodes it: its UTF-8 length, a colon and the text, or "-" for null. */
function canonicalField(value: string | null): string {
  return value === null ? "-" : `${Buffer.byteLength(value, "utf8")}:${value}`;
}

function short(hash: Buffer): string {
  return hash.toString("hex").slice(0, HASH_SHOWN_LENGTH);
}

function printReport(output: VerifyOutput, report: VerifyReport): void {
  for (const t of report.tenants) {
    const problems = t.problems.length + t.problemsUnlisted;
    const head = headsText(t.lanes);
    output.out(`tenant ${t.tenantId}: ${t.rows} journal rows, ${problems === 0 ? "chain intact" : `${problems} problem(s)`}, ${head}`);
    for (const line of t.problems) output.out(`  ${line}`);
    if (t.problemsUnlisted > 0) output.out(`  ... and ${t.problemsUnlisted} more`);
  }
  if (report.invariantViolations.length === 0) {
    output.out("invariants: ok (sums, balances = journal, holds, events, grants, token legs, closed statements)");
    if (report.prunedEvents.wallets > 0) {
      const { events, wallets } = report.prunedEvents;
      output.out(`events: ${events} pruned by retention on ${wallets} wallet(s); their journal rows checked by count and hash sum`);
    }
  } else {
    output.out(`invariants: ${report.invariantViolations.length} violation(s)`);
    for (const line of report.invariantViolations) output.out(`  ${line}`);
  }
  const rows = report.tenants.reduce((n, t) => n + t.rows, 0);
  output.out(`verified ${report.tenants.length} tenant(s), ${rows} journal rows: ${report.ok ? "ok" : "MISMATCH"}`);
}

/** "head row N h" for a chain of one lane; "K lanes, head rows 0:N h, 1:N h, ..." for more. */
function headsText(lanes: LaneHead[]): string {
  const at = (l: LaneHead) => `${l.seq} ${l.hash.slice(0, HASH_SHOWN_LENGTH)}`;
  if (lanes.length <= 1) return `head row ${at(lanes[0] ?? { lane: 0, seq: 0n, hash: GENESIS_HASH.toString("hex") })}`;
  return `${lanes.length} lanes, head rows ${lanes.map((l) => `${l.lane}:${at(l)}`).join(", ")}`;
}

/**
 * A progress bar on `stream` when it is a terminal and the ledger is large; nothing otherwise,
 * so that logs and pipes get only the summary.
 */
function createProgressBar(stream: NodeJS.WriteStream): { update: VerifyProgress; clear: () => void } {
  let drawn = false;
  return {
    update(done, total) {
      if (stream.isTTY !== true || total < PROGRESS_ROWS_MIN) return;
      const filled = Math.round((PROGRESS_BAR_WIDTH * done) / total);
      const percent = Math.floor((100 * done) / total);
      stream.write(`\rverifying [${"#".repeat(filled)}${"-".repeat(PROGRESS_BAR_WIDTH - filled)}] ${percent}% ${done}/${total} journal rows`);
      drawn = true;
    },
    clear() {
      if (drawn) stream.write("\r\x1b[K");
    },
  };
}
