import type pg from "pg";
import type { Clock, IdGenerator } from "@holdfast/common/ids";
import { decodePageToken, encodePageToken } from "@holdfast/common/page-token";
import { isUuid } from "@holdfast/common/patterns";
import { requestFingerprint } from "./fingerprint.js";
import { parseOutcome } from "./rows.js";
import type { Caller, Json, Outcome, Page, TransferKind } from "./types.js";

/**
 * Postpaid statements (docs/statements.md): a wallet's posted balance in one asset over a
 * period, computed from the journal by the SQL of migrations/0014_statements.sql, and closed
 * periods stored for good. GetStatement is a read without locks; CloseStatement is one call of
 * `ledger_close_statement` (one round trip, the wallet's lock held inside it only), idempotent
 * like a wallet command.
 *
 * @module
 */

/** Which way a statement line moved money: out of the wallet, or into it. */
export type StatementSide = "debit" | "credit";

/** The period's journal rows of one kind, side and group value, summed. */
export interface StatementLine {
  kind: TransferKind;
  side: StatementSide;
  /** The group_by key's value in the rows' metadata; empty without group_by or without the key. */
  groupValue: string;
  count: bigint;
  amount: bigint;
}

export interface Statement {
  /** Null for a computed statement (GetStatement); set once closed. */
  statementId: string | null;
  walletId: string;
  asset: string;
  periodStart: Date;
  /** Exclusive. */
  periodEnd: Date;
  groupBy: string;
  openingPosted: bigint;
  closingPosted: bigint;
  lines: StatementLine[];
  totalDebits: bigint;
  totalCredits: bigint;
  /** max(0, -closingPosted). */
  amountDue: bigint;
  /** Null for a computed statement. */
  closedAt: Date | null;
}

export interface GetStatementInput {
  walletId: string;
  asset: string;
  periodStart: Date;
  periodEnd: Date;
  /** Empty: lines by kind and side only. */
  groupBy: string;
}

export interface CloseStatementInput {
  walletId: string;
  asset: string;
  periodEnd: Date;
  /** Empty: lines by kind and side only. */
  groupBy: string;
  idempotencyKey: string;
}

export interface ListStatementsInput {
  /** Empty: every wallet of the tenant. */
  walletId: string;
  /** Empty: every asset. */
  asset: string;
  pageSize: number;
  pageToken: string;
}

export interface StatementsOptions {
  pool: pg.Pool;
  clock: Clock;
  newId: IdGenerator;
}

/** The statement reads and CloseStatement, bound to one pool, clock and id generator. */
export function createStatements({ pool, clock, newId }: StatementsOptions) {
  return {
    getStatement: (caller: Caller, input: GetStatementInput) => getStatement(pool, caller, input),
    closeStatement: (caller: Caller, input: CloseStatementInput) => closeStatement(pool, clock(), newId(), caller, input),
    listStatements: (caller: Caller, input: ListStatementsInput) => listStatements(pool, caller, input),
  };
}

export type Statements = ReturnType<typeof createStatements>;

/** The statement of any period; WALLET_NOT_FOUND, or INVALID_FIELD on group_by past the line bound, as refusals. */
async function getStatement(pool: pg.Pool, caller: Caller, input: GetStatementInput): Promise<Outcome<{ statement: Statement }>> {
  const result = await pool.query<{ r: Json }>({
    name: "ledger_get_statement",
    text: "select ledger_get_statement($1, $2, $3, $4, $5, $6) as r",
    values: [caller.tenantId, input.walletId, input.asset, input.periodStart, input.periodEnd, input.groupBy],
  });
  return parseOutcome(result.rows[0]!.r, (r) => ({ statement: parseStatement(r["statement"] as Json) }));
}

/**
 * Closes the wallet's next period. The fingerprint covers the request as sent, not the
 * statement id the service makes, so a retry with the same key replays the stored statement.
 */
async function closeStatement(
  pool: pg.Pool,
  now: Date,
  statementId: string,
  caller: Caller,
  input: CloseStatementInput,
): Promise<Outcome<{ statement: Statement }>> {
  const request = {
    wallet_id: input.walletId,
    asset: input.asset,
    period_end: input.periodEnd.toISOString(),
    group_by: input.groupBy,
  };
  const result = await pool.query<{ r: Json }>({
    name: "ledger_close_statement",
    text: "select ledger_close_statement($1, $2, $3, $4, $5) as r",
    values: [
      caller.tenantId,
      input.idempotencyKey,
      requestFingerprint(caller, "CloseStatement", request),
      now,
      { ...request, statement_id: statementId, key_id: caller.keyId ?? null },
    ],
  });
  return parseOutcome(result.rows[0]!.r, (r) => ({ statement: parseStatement(r["statement"] as Json) }));
}

/** Closed statements, newest period first; the cursor is the last statement id. */
async function listStatements(pool: pg.Pool, caller: Caller, input: ListStatementsInput): Promise<Page<Statement>> {
  const after = decodePageToken(input.pageToken, [isUuid])?.[0] ?? null;
  const result = await pool.query<{ r: Json }>({
    name: "ledger_list_statements",
    text: "select r from ledger_list_statements($1, $2, $3, $4, $5) as r",
    values: [caller.tenantId, input.walletId, input.asset, after, input.pageSize + 1],
  });
  const items = result.rows.slice(0, input.pageSize).map((row) => parseStatement(row.r));
  const more = result.rows.length > input.pageSize;
  return { items, nextPageToken: more ? encodePageToken([items.at(-1)!.statementId!]) : "" };
}

/** A statement as the SQL returns it (ledger_statement_json, ledger_statement_row_json); amounts are strings. */
export function parseStatement(row: Json): Statement {
  const text = (key: string) => row[key] as string;
  const at = (key: string) => (typeof row[key] === "string" ? new Date(row[key]) : null);
  return {
    statementId: typeof row["statement_id"] === "string" ? row["statement_id"] : null,
    walletId: text("wallet_id"),
    asset: text("asset"),
    periodStart: new Date(text("period_start")),
    periodEnd: new Date(text("period_end")),
    groupBy: text("group_by"),
    openingPosted: BigInt(text("opening_posted")),
    closingPosted: BigInt(text("closing_posted")),
    lines: (row["lines"] as Json[]).map(parseLine),
    totalDebits: BigInt(text("total_debits")),
    totalCredits: BigInt(text("total_credits")),
    amountDue: BigInt(text("amount_due")),
    closedAt: at("closed_at"),
  };
}

function parseLine(row: Json): StatementLine {
  return {
    kind: row["kind"] as TransferKind,
    side: row["side"] as StatementSide,
    groupValue: row["group_value"] as string,
    count: BigInt(row["count"] as string),
    amount: BigInt(row["amount"] as string),
  };
}
