// The grown ledger of bench:growth (growth.ts): a tenant "bench_growth" loaded with N wallets
// and M journal rows generated in SQL, set-based, in minutes rather than the hours that M
// commands through ledger_command would take, and every row valid ledger data that the
// invariants (services/ledger/src/invariants.ts) and `holdfast verify`'s hash-chain walk check
// like any other.
//
// What each wallet gets, wallet g0 first (the "big" wallet, bigWalletRows rows, for timing the
// listings' pages) and g1 … g(N-1) the rest, spread evenly (each at least its deposit):
//   row 0        a Deposit of FUNDS (opens the wallet, its USD account and its default grant)
//   then pairs   Reserve RESERVE_AMOUNT → Capture CAPTURE_AMOUNT (the rest returns to the grant)
//   last, maybe  a Spend of SPEND_AMOUNT, when the pairs leave one row over
// so no hold is left pending and every balance has a closed form, written into the accounts,
// grants and events without a second pass. The history is spread over HISTORY_DAYS ending an
// hour ago; a capture follows its reserve by CAPTURE_AFTER_SECONDS at most (inside the hold's
// HOLD_TTL_SECONDS), every id a UUIDv7 of its time as the ledger makes them.
//
// How it is fast and still checked:
// - Rows are staged once in an unlogged table (dropped at the end) in time order, and copied into
//   the ledger's tables from there: the journal's primary key (UUIDv7) and the events' grow at
//   their right edge.
// - The inserts run with session_replication_role = replica, which skips the row triggers. For
//   this tenant every one of them is a no-op except the chain link: the key stamp (no API key
//   wrote these rows: key_id null, as for the worker's rows), the statement floor (the tenant
//   has no statements), the batch stamp (no batch), the balance alerts (none), grants_other
//   (default grants only, which it does not count) and the foreign keys (the rows are inserted
//   parents first). The hash chain is then linked by bench_growth_chain below, one link per
//   journal row in transfer_id order, each hashed by the database's own ledger_chain_hash,
//   exactly what the deferred trigger computes; growth.ts has `holdfast verify --tenant` walk
//   it afterwards, recomputing every hash from the columns.
// - Events are marked published (published_at): history a relay published long ago, so that
//   the ledger's outbox relay does not start sending 5 million events during the runs.
// - No idempotency keys: the ledger sweeps them after their retention, which history is past.
import type pg from "pg";
import { createApiKey, createTenant } from "@holdfast/ledger/auth/api-keys";
import { ASSET } from "./workloads.js";

/** Each wallet's deposit: far more than its rows spend. */
const FUNDS = 1_000_000_000_000n;
const RESERVE_AMOUNT = 10;
const CAPTURE_AMOUNT = 7;
const SPEND_AMOUNT = 5;
/** The reserve's ttl_seconds, as a client would send it; its capture comes well before. */
const HOLD_TTL_SECONDS = 120;
const CAPTURE_AFTER_SECONDS = 60;
/** How far back the loaded history starts; it ends HISTORY_END_HOURS_AGO. */
const HISTORY_DAYS = 180;
const HISTORY_END_HOURS_AGO = 1;
/** Journal links hashed per insert while linking the chain. */
const CHAIN_FLUSH_ROWS = 10_000;
/** Memory for the staging sort and the index builds of the load's own session. */
const LOAD_WORK_MEM = "256MB";
/** The loaded tenant's name. */
export const GROWTH_TENANT = "bench_growth";
/** The big wallet's rows unless told otherwise: 100,000, or a tenth of the journal when smaller. */
export const BIG_WALLET_ROWS_DEFAULT = 100_000;

export interface GrowthLoad {
  /** Wallets, g0 … g(N-1). */
  wallets: number;
  /** Journal rows in all, the big wallet's included. */
  journalRows: number;
  /** Journal rows of g0, the big wallet. */
  bigWalletRows: number;
}

export interface GrowthTenant {
  tenantId: string;
  /** A reader key of the tenant, for timing the listings. */
  readerKey: string;
  /** The wallet with bigWalletRows rows. */
  bigWalletId: string;
  /** Its holds (one per Reserve → Capture pair). */
  bigWalletHolds: number;
  /** Seconds each step took, in order. */
  steps: { step: string; seconds: number }[];
}

/** The big wallet's rows for `journalRows` when none is asked for. */
export function defaultBigWalletRows(wallets: number, journalRows: number): number {
  return Math.max(1, Math.min(BIG_WALLET_ROWS_DEFAULT, Math.floor(journalRows / 10), journalRows - (wallets - 1)));
}

/** Refuses shapes the load cannot make, naming the option at fault. */
export function checkGrowthLoad(load: GrowthLoad): void {
  const whole = (name: string, n: number, min: number) => {
    if (!Number.isInteger(n) || n < min) throw new Error(`${name}: expected a whole number of at least ${min}, got ${n}`);
  };
  whole("--preload-wallets", load.wallets, 1);
  whole("--preload-journal", load.journalRows, 1);
  whole("--preload-big-wallet-rows", load.bigWalletRows, 1);
  if (load.bigWalletRows > load.journalRows - (load.wallets - 1)) {
    throw new Error(
      `--preload-journal: ${load.journalRows} rows leave fewer than one deposit for each of the other ${load.wallets - 1} wallets ` +
        `after the big wallet's ${load.bigWalletRows}; ask for more rows or fewer wallets`,
    );
  }
  if (load.wallets === 1 && load.bigWalletRows !== load.journalRows) {
    throw new Error(`--preload-big-wallet-rows: with one wallet it has every row (${load.journalRows}), got ${load.bigWalletRows}`);
  }
}

/**
 * Every loaded row, staged: one per (wallet i, row j), its kind, amount, hold, time, id, and the
 * wallet's posted and held balance right after it. $1 tenant, $2 wallets, $3 journal rows,
 * $4 big wallet rows, $5 funds, $6 history start, $7 history seconds.
 */
const STAGE_SQL = `
  create unlogged table bench_growth_rows as
  with w as (
    select i, 'g' || i as wallet_id,
           case when i = 0 then $4::bigint
                else ($3::bigint - $4) / greatest($2 - 1, 1) + (i <= ($3::bigint - $4) % greatest($2 - 1, 1))::int end as n
      from generate_series(0, $2::int - 1) i),
  r as (
    select w.i, w.wallet_id, w.n, j,
           -- pairs before the optional spend, and this row's place among them (k: 0-based after the deposit)
           (w.n - 1) / 2 as pairs, j - 1 as k,
           $6::timestamptz + make_interval(secs => $7::float8 * (j + w.i::float8 / $2) / w.n) as slot,
           least($7::float8 / w.n / 2, ${CAPTURE_AFTER_SECONDS}) as capture_after
      from w cross join lateral generate_series(0, w.n - 1) j),
  k as (
    select r.*,
           case when j = 0 then 'deposit' when k = 2 * pairs then 'spend'
                when k % 2 = 0 then 'reserve' else 'capture' end as kind
      from r),
  t as (
    select k.*,
           case kind when 'capture' then slot - make_interval(secs => $7::float8 / n) + make_interval(secs => capture_after)
                     else slot end as at
      from k)
  select i, wallet_id, n, j, kind, at,
         case when kind in ('reserve', 'capture') then wallet_id || '_h' || (k / 2) end as hold_id,
         case kind when 'deposit' then $5::bigint when 'reserve' then ${RESERVE_AMOUNT}
                   when 'capture' then ${CAPTURE_AMOUNT} else ${SPEND_AMOUNT} end as amount,
         case kind when 'deposit' then $5::bigint
                   when 'reserve' then $5::bigint - ${CAPTURE_AMOUNT} * (k / 2)
                   when 'capture' then $5::bigint - ${CAPTURE_AMOUNT} * (k / 2 + 1)
                   else $5::bigint - ${CAPTURE_AMOUNT} * pairs - ${SPEND_AMOUNT} end as posted,
         case kind when 'reserve' then ${RESERVE_AMOUNT} else 0 end as held,
         bench_growth_uuidv7(at, $1::text || ' ' || i || ' ' || j) as transfer_id,
         bench_growth_uuidv7(at, $1::text || ' event ' || i || ' ' || j) as event_id
    from t order by at`;

/**
 * A UUIDv7 of `at` (its Unix milliseconds, version 7, the variant bits of RFC 9562) whose other
 * bits come from md5(seed): ledger_uuidv7's layout, made repeatable so that each step can name
 * the same rows.
 */
const UUIDV7_SQL = `
  create function bench_growth_uuidv7(at timestamptz, seed text) returns uuid language sql immutable as $$
    select (lpad(to_hex(floor(extract(epoch from at) * 1000)::bigint), 12, '0') || '7' || substr(h, 1, 3)
            || substr('89ab', (get_byte(decode(substr(h, 4, 2), 'hex'), 0) % 4) + 1, 1) || substr(h, 6, 15))::uuid
      from md5(seed) h
  $$`;

/**
 * Each wallet's row as the staged rows leave it: wallet, account, default grant; in wallet_id
 * order, so that every index on them grows at its right edge.
 */
const WALLETS_SQL = `
  insert into wallets (tenant_id, wallet_id, status, metadata, event_seq, created_at, updated_at)
  select $1, wallet_id, 'active', '{}', n, min(at), max(at) from bench_growth_rows group by wallet_id, n order by wallet_id`;

const ACCOUNTS_SQL = `
  insert into accounts (tenant_id, wallet_id, asset, credits_posted, debits_posted, version)
  select $1, wallet_id, $2, $3::bigint, $3::bigint - min(posted), n from bench_growth_rows group by wallet_id, n order by wallet_id`;

/** The default grant each Deposit opens (0008_grants.sql): category default, priority 100. */
const GRANTS_SQL = `
  insert into grants (tenant_id, grant_id, wallet_id, asset, category, priority, is_default, amount,
                      remaining, held, consumed, starts_at, created_at, metadata)
  select $1::uuid, 'grant_' || bench_growth_uuidv7(min(at), $1::uuid::text || ' grant ' || wallet_id), wallet_id, $2, 'default', 100, true,
         $3::bigint, min(posted), 0, $3::bigint - min(posted), '-infinity', min(at), '{}'
    from bench_growth_rows group by wallet_id order by wallet_id`;

/** The journal, in the staged (time) order; grants breakdowns as the commands write them. */
const TRANSFERS_SQL = `
  insert into transfers (tenant_id, transfer_id, kind, debit_wallet_id, credit_wallet_id, asset, amount,
                         hold_id, metadata, created_at, grants)
  select $1, r.transfer_id, r.kind,
         case when r.kind = 'deposit' then '@world' else r.wallet_id end,
         case when r.kind = 'deposit' then r.wallet_id else '@revenue' end,
         $2, r.amount, r.hold_id, '{}', r.at,
         case r.kind
           when 'deposit' then jsonb_build_array(jsonb_build_object('op', 'credit', 'amount', r.amount, 'grant_id', g.grant_id))
           when 'reserve' then jsonb_build_array(jsonb_build_object('op', 'hold', 'amount', r.amount, 'grant_id', g.grant_id))
           when 'capture' then jsonb_build_array(jsonb_build_object('op', 'draw', 'amount', r.amount, 'grant_id', g.grant_id),
                                                 jsonb_build_object('op', 'return', 'amount', ${RESERVE_AMOUNT - CAPTURE_AMOUNT}, 'grant_id', g.grant_id))
           else jsonb_build_array(jsonb_build_object('op', 'draw', 'amount', r.amount, 'grant_id', g.grant_id)) end
    from bench_growth_rows r join grants g on g.tenant_id = $1 and g.wallet_id = r.wallet_id and g.is_default`;

/** Every hold, captured by the row after its reserve. */
const HOLDS_SQL = `
  insert into holds (tenant_id, hold_id, wallet_id, asset, amount, captured_amount, status, reserve_transfer_id,
                     expires_at, created_at, closed_at, metadata, allocations)
  select $1, r.hold_id, r.wallet_id, $2, ${RESERVE_AMOUNT}, ${CAPTURE_AMOUNT}, 'captured', r.transfer_id,
         r.at + make_interval(secs => ${HOLD_TTL_SECONDS}), r.at, c.at, '{}',
         jsonb_build_array(jsonb_build_object('amount', ${RESERVE_AMOUNT}, 'grant_id', g.grant_id))
    from bench_growth_rows r
    join bench_growth_rows c on c.wallet_id = r.wallet_id and c.j = r.j + 1
    join grants g on g.tenant_id = $1 and g.wallet_id = r.wallet_id and g.is_default
   where r.kind = 'reserve'`;

/**
 * One event per journal row on its wallet, numbered 1 … n, shaped as ledger_emit writes them:
 * the transfer, the balance right after it, and for a hold's rows the hold as it stood then.
 */
const EVENTS_SQL = `
  insert into events (event_id, tenant_id, wallet_id, seq, type, asset, occurred_at, data, published_at)
  select r.event_id, $1, r.wallet_id, r.j + 1,
         case r.kind when 'deposit' then 'holdfast.deposit.completed' when 'spend' then 'holdfast.spend.completed'
                     when 'reserve' then 'holdfast.hold.created' else 'holdfast.hold.captured' end,
         $2, r.at,
         jsonb_build_object(
           'balance', jsonb_build_object('held', r.held::text, 'asset', $2::text, 'posted', r.posted::text,
                                         'available', (r.posted - r.held)::text, 'scheduled', '0', 'credit_limit', '0'),
           'metadata', '{}'::jsonb,
           'transfer', ledger_transfer_json(t))
         || case when r.kind = 'reserve'
                 then jsonb_build_object('hold', ledger_hold_json(h) || jsonb_build_object('status', 'pending', 'closed_at', null, 'captured_amount', '0'))
                 when r.kind = 'capture' then jsonb_build_object('hold', ledger_hold_json(h))
                 else '{}'::jsonb end,
         now()
    from bench_growth_rows r
    join transfers t on t.tenant_id = $1 and t.transfer_id = r.transfer_id
    left join holds h on h.tenant_id = $1 and h.hold_id = r.hold_id`;

/**
 * Links the tenant's journal rows that have no link yet, after the head of the lane it locks, in
 * transfer_id order, exactly as ledger_chain_append does one at a time (0011_integrity.sql,
 * 0020_chain_lanes.sql), and moves the head.
 */
const CHAIN_FUNCTION_SQL = `
  create function pg_temp.bench_growth_chain(p_tenant uuid) returns bigint language plpgsql as $$
  declare
    v_head journal_chain_heads := ledger_chain_lock_head(p_tenant);
    v_seq bigint := v_head.chain_seq;
    v_prev bytea := v_head.head_hash;
    v_hash bytea;
    v_seqs bigint[] := '{}';
    v_ids uuid[] := '{}';
    v_prevs bytea[] := '{}';
    v_hashes bytea[] := '{}';
    t transfers;
  begin
    for t in select * from transfers x where x.tenant_id = p_tenant
              and not exists (select 1 from journal_chain c where c.tenant_id = p_tenant and c.transfer_id = x.transfer_id)
              order by x.transfer_id loop
      v_seq := v_seq + 1;
      v_hash := ledger_chain_hash(v_prev, t, v_seq);
      v_seqs := v_seqs || v_seq; v_ids := v_ids || t.transfer_id; v_prevs := v_prevs || v_prev; v_hashes := v_hashes || v_hash;
      v_prev := v_hash;
      if cardinality(v_seqs) >= ${CHAIN_FLUSH_ROWS} then
        insert into journal_chain (tenant_id, lane, chain_seq, transfer_id, prev_hash, row_hash)
        select p_tenant, v_head.lane, s, i, p, h from unnest(v_seqs, v_ids, v_prevs, v_hashes) u(s, i, p, h);
        v_seqs := '{}'; v_ids := '{}'; v_prevs := '{}'; v_hashes := '{}';
      end if;
    end loop;
    insert into journal_chain (tenant_id, lane, chain_seq, transfer_id, prev_hash, row_hash)
    select p_tenant, v_head.lane, s, i, p, h from unnest(v_seqs, v_ids, v_prevs, v_hashes) u(s, i, p, h);
    update journal_chain_heads set chain_seq = v_seq, head_hash = v_prev, holder = pg_current_xact_id(), updated_at = now()
     where tenant_id = p_tenant and lane = v_head.lane;
    return v_seq - v_head.chain_seq;
  end $$`;

/**
 * Creates the tenant bench_growth with a reader key and loads it (see the top of this file).
 * `progress` hears each step as it starts.
 */
export async function loadGrowthTenant(pool: pg.Pool, load: GrowthLoad, progress: (text: string) => void = () => undefined): Promise<GrowthTenant> {
  checkGrowthLoad(load);
  const { tenantId } = await createTenant(pool, GROWTH_TENANT);
  const { secret: readerKey } = await createApiKey(pool, { tenantId, name: GROWTH_TENANT, role: "reader" });
  const steps: { step: string; seconds: number }[] = [];
  const client = await pool.connect();
  const step = async (name: string, sql: string, values: unknown[] = []) => {
    progress(`${GROWTH_TENANT}: ${name}`);
    const started = performance.now();
    const result = await client.query(sql, values);
    steps.push({ step: name, seconds: (performance.now() - started) / 1000 });
    return result;
  };
  const historyEnd = Date.now() - HISTORY_END_HOURS_AGO * 3_600_000;
  const historySeconds = HISTORY_DAYS * 86_400;
  const historyStart = new Date(historyEnd - historySeconds * 1000);
  try {
    // The pool's statement timeout is for the bench's checks; each step here runs for minutes.
    await client.query(`set statement_timeout = 0; set work_mem = '${LOAD_WORK_MEM}'; set maintenance_work_mem = '${LOAD_WORK_MEM}'`);
    await client.query("drop table if exists bench_growth_rows; drop function if exists bench_growth_uuidv7(timestamptz, text)");
    await client.query(UUIDV7_SQL);
    await step(`staging ${load.journalRows} rows of ${load.wallets} wallets`, STAGE_SQL, [
      tenantId, load.wallets, load.journalRows, load.bigWalletRows, FUNDS.toString(), historyStart, historySeconds,
    ]);
    await client.query("create index on bench_growth_rows (wallet_id, j); analyze bench_growth_rows");
    await client.query("set session_replication_role = replica");
    await step("wallets", WALLETS_SQL, [tenantId]);
    await step("accounts", ACCOUNTS_SQL, [tenantId, ASSET, FUNDS.toString()]);
    await step("default grants", GRANTS_SQL, [tenantId, ASSET, FUNDS.toString()]);
    await client.query("analyze grants");
    await step("journal rows", TRANSFERS_SQL, [tenantId, ASSET]);
    await step("holds", HOLDS_SQL, [tenantId, ASSET]);
    await client.query("analyze transfers, holds");
    await step("events", EVENTS_SQL, [tenantId, ASSET]);
    await client.query(CHAIN_FUNCTION_SQL);
    const linked = await step("hash chain", "select pg_temp.bench_growth_chain($1) as n", [tenantId]);
    const linkedRows = Number((linked.rows[0] as { n: string }).n);
    if (linkedRows !== load.journalRows) throw new Error(`${GROWTH_TENANT}: linked ${linkedRows} journal rows, loaded ${load.journalRows}`);
    await client.query("set session_replication_role = origin");
    await client.query("drop table bench_growth_rows; drop function bench_growth_uuidv7(timestamptz, text)");
    await step("vacuum analyze", "vacuum analyze");
  } finally {
    await client.query("reset session_replication_role").catch(() => undefined);
    client.release(true);
  }
  return { tenantId, readerKey, bigWalletId: "g0", bigWalletHolds: Math.floor((load.bigWalletRows - 1) / 2), steps };
}
