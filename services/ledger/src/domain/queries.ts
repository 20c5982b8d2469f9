import type pg from "pg";
import type { Clock } from "@holdfast/common/ids";
import { InvalidPageTokenError } from "@holdfast/common/errors";
import { decodePageToken, encodePageToken } from "@holdfast/common/page-token";
import { isUuid, WALLET_ID_PATTERN } from "@holdfast/common/patterns";
import { pgErrorCode } from "@holdfast/common/pg";
import { parseGrant, parseHold, parseTransfer, parseWallet } from "./rows.js";
import type { Caller, Grant, Hold, HoldStatus, Json, ListGrantsInput, Page, Transfer, Wallet } from "./types.js";

/**
 * The ledger's reads: one wallet, one hold, one grant, and the lists. Reads take no locks and
 * never write; a hold or grant is reported with its effective status at the clock's time.
 */

/** invalid_datetime_format and datetime_field_overflow: a page token naming an impossible time. */
const BAD_DATETIME_SQLSTATES = new Set(["22007", "22008"]);

/** The cursor time of ListHolds, as Postgres prints a timestamptz. */
const HOLD_CURSOR_TIME_PATTERN = /^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}(\.\d{1,6})?[+-]\d{2}(:\d{2})?$/;
/** Hold ids are at most 128 characters. */
const HOLD_ID_LENGTH_MAX = 128;

export interface QueriesOptions {
  pool: pg.Pool;
  clock: Clock;
}

/** The reads, bound to one pool and clock. */
export function createQueries({ pool, clock }: QueriesOptions) {
  return {
    getWallet: (caller: Caller, walletId: string) => getWallet(pool, clock(), caller, walletId),
    getHold: (caller: Caller, holdId: string) => getHold(pool, clock, caller, holdId),
    listTransfers: (caller: Caller, walletId: string, asset: string, pageSize: number, pageToken: string) =>
      listTransfers(pool, caller, walletId, asset, pageSize, pageToken),
    listHolds: (caller: Caller, walletId: string, status: HoldStatus | null, pageSize: number, pageToken: string) =>
      listHolds(pool, clock(), caller, walletId, status, pageSize, pageToken),
    getGrant: (caller: Caller, grantId: string) => getGrant(pool, clock(), caller, grantId),
    listGrants: (caller: Caller, input: ListGrantsInput) => listGrants(pool, clock(), caller, input),
  };
}

export type Queries = ReturnType<typeof createQueries>;

/** The wallet with its balances; null when the tenant has no such wallet. */
async function getWallet(pool: pg.Pool, now: Date, caller: Caller, walletId: string): Promise<Wallet | null> {
  const result = await pool.query<{ r: Json | null }>({
    name: "ledger_get_wallet",
    text: "select ledger_wallet_json($1, $2, $3) as r",
    values: [caller.tenantId, walletId, now],
  });
  const row = result.rows[0]?.r;
  return row ? parseWallet(row) : null;
}

/** The hold; null when the tenant has none, or it is on a wallet outside the key's scope. */
async function getHold(pool: pg.Pool, clock: Clock, caller: Caller, holdId: string): Promise<Hold | null> {
  const result = await pool.query<{ r: Json; wallet_id: string }>({
    name: "ledger_get_hold",
    text: "select ledger_hold_json(h) as r, h.wallet_id from holds h where tenant_id = $1 and hold_id = $2",
    values: [caller.tenantId, holdId],
  });
  const row = result.rows[0];
  if (!row || (caller.scopeWalletId !== null && row.wallet_id !== caller.scopeWalletId)) {
    return null;
  }
  return parseHold(row.r, clock());
}

/**
 * ListTransfers' page: $1 tenant, $2 wallet, $3 asset or '', $4 the cursor (the last transfer id
 * of the previous page) or null, $5 rows. The cursor is one comparison on the index's last column
 * (transfers_by_debit_wallet, transfers_by_credit_wallet), the first page's null made the
 * largest UUID: the generic plan a prepared statement switches to after five executions then
 * starts the index scan at the cursor. Written as `$4 is null or transfer_id < $4` it could not,
 * and read every newer row of the wallet to reach a late page (docs/performance.md, "As the
 * ledger grows").
 */
const LIST_TRANSFERS_SQL = `
      select ledger_transfer_json(t) as r from (
        (select * from transfers
          where tenant_id = $1 and debit_wallet_id = $2 and debit_wallet_id not like '@%'
            and ($3::text = '' or asset = $3) and transfer_id < coalesce($4::uuid, 'ffffffff-ffff-ffff-ffff-ffffffffffff')
          order by transfer_id desc limit $5)
        union all
        (select * from transfers
          where tenant_id = $1 and credit_wallet_id = $2 and credit_wallet_id not like '@%'
            and ($3::text = '' or asset = $3) and transfer_id < coalesce($4::uuid, 'ffffffff-ffff-ffff-ffff-ffffffffffff')
          order by transfer_id desc limit $5)
      ) t order by transfer_id desc limit $5`;

/**
 * ListHolds' page: $1 tenant, $2 wallet, $3 status or '', $4 and $5 the cursor (the previous
 * page's last created_at and hold_id) or nulls, $6 now, $7 rows. As in LIST_TRANSFERS_SQL the
 * cursor is one row comparison on holds_by_wallet's last columns, the first page's nulls made
 * ('infinity', ''), so that the generic plan starts its index scan at the cursor.
 */
const LIST_HOLDS_SQL = `
      select ledger_hold_json(h) as r, h.created_at::text as created_at_text from holds h
       where tenant_id = $1 and wallet_id = $2
         and (created_at, hold_id) < (coalesce($4::timestamptz, 'infinity'), coalesce($5::text, ''))
         and case $3::text
               when '' then true
               when 'pending' then status = 'pending' and expires_at > $6
               when 'expired' then status = 'expired' or (status = 'pending' and expires_at <= $6)
               else status = $3
             end
       order by created_at desc, hold_id desc limit $7`;

/** Newest first, merging the wallet's debits and credits; the cursor is the last transfer id. */
async function listTransfers(
  pool: pg.Pool,
  caller: Caller,
  walletId: string,
  asset: string,
  pageSize: number,
  pageToken: string,
): Promise<Page<Transfer>> {
  const before = decodePageToken(pageToken, [isUuid])?.[0] ?? null;
  const result = await pool.query<{ r: Json }>({
    name: "ledger_list_transfers",
    text: LIST_TRANSFERS_SQL,
    values: [caller.tenantId, walletId, asset, before, pageSize + 1],
  });
  const items = result.rows.slice(0, pageSize).map((row) => parseTransfer(row.r));
  const more = result.rows.length > pageSize;
  return { items, nextPageToken: more ? encodePageToken([items.at(-1)!.transferId]) : "" };
}

/** Newest first; the cursor is the last (created_at, hold_id). Status is the effective one. */
async function listHolds(
  pool: pg.Pool,
  now: Date,
  caller: Caller,
  walletId: string,
  status: HoldStatus | null,
  pageSize: number,
  pageToken: string,
): Promise<Page<Hold>> {
  const [afterTime, afterId] = decodePageToken(pageToken, [isHoldCursorTime, isHoldId]) ?? [null, null];
  const result = await pool
    .query<{ r: Json; created_at_text: string }>({
      name: "ledger_list_holds",
      text: LIST_HOLDS_SQL,
      values: [caller.tenantId, walletId, status ?? "", afterTime, afterId, now, pageSize + 1],
    })
    .catch((err: unknown) => {
      // The shape check cannot tell February 30 from a real date; the database can.
      if (BAD_DATETIME_SQLSTATES.has(pgErrorCode(err) ?? "")) {
        throw new InvalidPageTokenError();
      }
      throw err;
    });
  const rows = result.rows.slice(0, pageSize);
  const items = rows.map((row) => parseHold(row.r, now));
  const last = rows.at(-1);
  const more = result.rows.length > pageSize;
  return { items, nextPageToken: more && last ? encodePageToken([last.created_at_text, last.r["hold_id"] as string]) : "" };
}

const isHoldCursorTime = (s: string) => HOLD_CURSOR_TIME_PATTERN.test(s);
const isHoldId = (s: string) => s.length > 0 && s.length <= HOLD_ID_LENGTH_MAX;

/** The grant as it stands at `now`; null when the tenant has none, or it lies outside the key's scope. */
async function getGrant(pool: pg.Pool, now: Date, caller: Caller, grantId: string): Promise<Grant | null> {
  const result = await pool.query<{ r: Json | null }>({
    name: "ledger_get_grant",
    text: "select ledger_get_grant($1, $2, $3, $4) as r",
    values: [caller.tenantId, grantId, caller.scopeWalletId, now],
  });
  const row = result.rows[0]?.r;
  return row ? parseGrant(row) : null;
}

/**
 * A wallet's grants in consumption order, by asset; the cursor is the last grant id (a grant
 * of another wallet in a token ends the listing, the SQL decides).
 */
async function listGrants(pool: pg.Pool, now: Date, caller: Caller, input: ListGrantsInput): Promise<Page<Grant>> {
  const after = decodePageToken(input.pageToken, [isGrantId])?.[0] ?? null;
  const result = await pool.query<{ r: Json }>({
    name: "ledger_list_grants",
    text: "select r from ledger_list_grants($1, $2, $3, $4, $5, $6, $7) as r",
    values: [caller.tenantId, input.walletId, input.asset, input.includeClosed, after, input.pageSize + 1, now],
  });
  const items = result.rows.slice(0, input.pageSize).map((row) => parseGrant(row.r));
  const more = result.rows.length > input.pageSize;
  return { items, nextPageToken: more ? encodePageToken([items.at(-1)!.grantId]) : "" };
}

const isGrantId = (s: string) => WALLET_ID_PATTERN.test(s);
