import type pg from "pg";
import { STATEMENT_CHECKS } from "./statement-checks.js";

/** Rows reported per broken invariant: enough to find the fault, bounded on a badly broken database. */
const VIOLATIONS_PER_CHECK_MAX = 10;

/**
 * The credit-grant invariants (6, see docs/grants.md): an account's grants and credit line add
 * up to its columns, grants never go negative, holds' allocations add up, what each grant
 * consumed, lost to expiry or voiding, and received matches the grant breakdowns in the journal,
 * and each account counts its live grants other than its default grant (`grants_other`). The
 * grants are read through the view `grants_current` (migration 0019): a lazy account's default
 * grant keeps its remaining, held and consumed in the account's columns, not in its row.
 */
const GRANT_CHECKS: readonly { name: string; sql: string }[] = [
  {
    name: "6: an account's grants and credit line do not add up to its columns",
    sql: `with g as (
            select tenant_id, wallet_id, asset, sum(remaining + held) as funded, sum(held) as held
              from grants_current group by tenant_id, wallet_id, asset)
          select a.wallet_id || ' ' || a.asset as what from accounts a
            left join g using (tenant_id, wallet_id, asset)
           where a.credits_posted - a.debits_posted <> coalesce(g.funded, 0) - a.credit_used
              or a.debits_pending <> coalesce(g.held, 0) + a.credit_held
              or a.credit_used + a.credit_held > a.credit_limit`,
  },
  {
    name: "6: a grant is negative or its amounts do not add up",
    sql: `select grant_id as what from grants_current
           where remaining < 0 or held < 0 or consumed < 0 or expired < 0 or voided < 0
              or amount <> remaining + held + consumed + expired + voided
              or (voided_at is null and voided <> 0) or (voided_at is not null and expired <> 0)`,
  },
  {
    name: "6: a hold's allocations do not sum to its amount",
    sql: `select h.hold_id as what from holds h
           where (h.status = 'pending' or h.allocations <> '[]'::jsonb)
             and h.amount <> (select coalesce(sum((e->>'amount')::bigint), 0)
                                from jsonb_array_elements(h.allocations) e)`,
  },
  {
    name: "6: a grant's held or an account's credit_held differs from the pending holds",
    sql: `with p as (
            select h.tenant_id, e->>'grant_id' as grant_id, h.wallet_id, h.asset,
                   sum((e->>'amount')::bigint) as held
              from holds h cross join jsonb_array_elements(h.allocations) e
             where h.status = 'pending' group by 1, 2, 3, 4)
          select g.grant_id as what from grants_current g left join p using (tenant_id, grant_id)
           where g.held <> coalesce(p.held, 0)
          union all
          select a.wallet_id || ' ' || a.asset from accounts a
            left join p on p.tenant_id = a.tenant_id and p.wallet_id = a.wallet_id
                       and p.asset = a.asset and p.grant_id = '@credit'
           where a.credit_held <> coalesce(p.held, 0)`,
  },
  {
    name: "6: a grant's consumed, expired, voided or amount differs from its journal",
    // Backfilled default grants opened with the balance the account had before grants.
    sql: `with j as (
            select t.tenant_id, e->>'grant_id' as grant_id,
                   sum(case when e->>'op' in ('draw', 'repay') then (e->>'amount')::bigint
                            when e->>'op' = 'refund' then -(e->>'amount')::bigint else 0 end) as consumed,
                   sum(case when e->>'op' = 'break' then (e->>'amount')::bigint else 0 end) as broken,
                   sum(case when e->>'op' in ('credit', 'overflow') then (e->>'amount')::bigint
                            else 0 end) as credited
              from transfers t cross join jsonb_array_elements(t.grants) e
             where t.grants is not null and e->>'grant_id' <> '@credit'
             group by 1, 2)
          select g.grant_id as what from grants_current g left join j using (tenant_id, grant_id)
           where g.consumed <> coalesce(j.consumed, 0) or g.expired + g.voided <> coalesce(j.broken, 0)
              or g.amount <> coalesce(j.credited, 0)
                 + case when g.is_default then coalesce((g.metadata->>'opening_balance')::bigint, 0) else 0 end`,
  },
  {
    name: "6: an account's credit_used differs from its journal",
    sql: `with c as (
            select t.tenant_id, case when t.kind = 'refund' then t.credit_wallet_id else t.debit_wallet_id end as wallet_id,
                   t.asset,
                   sum(case when e->>'op' = 'draw' then (e->>'amount')::bigint
                            when e->>'op' = 'refund' then -(e->>'amount')::bigint else 0 end) as used
              from transfers t cross join jsonb_array_elements(t.grants) e
             where t.grants is not null and e->>'grant_id' = '@credit' group by 1, 2, 3),
          r as (
            select g.tenant_id, g.wallet_id, g.asset, sum((e->>'amount')::bigint) as repaid
              from transfers t cross join jsonb_array_elements(t.grants) e
              join grants_current g on g.tenant_id = t.tenant_id and g.grant_id = e->>'grant_id'
             where t.grants is not null and e->>'op' = 'repay' group by 1, 2, 3)
          select a.wallet_id || ' ' || a.asset as what from accounts a
            left join c using (tenant_id, wallet_id, asset)
            left join r using (tenant_id, wallet_id, asset)
           where a.credit_used <> coalesce(c.used, 0) - coalesce(r.repaid, 0)
             and not exists (select 1 from grants_current g
                              where g.tenant_id = a.tenant_id and g.wallet_id = a.wallet_id
                                and g.asset = a.asset and g.is_default and g.metadata ? 'opening_balance')`,
  },
  {
    name: "6: an account's grants_other differs from its live grants other than its default grant",
    // The fast path of a wallet with only its default grant relies on it (migration 0017).
    sql: `with g as (
            select tenant_id, wallet_id, asset, count(*) as other from grants_current
             where live and not (is_default and voided_at is null) group by 1, 2, 3)
          select a.wallet_id || ' ' || a.asset as what from accounts a
            left join g using (tenant_id, wallet_id, asset)
           where a.grants_other <> coalesce(g.other, 0)`,
  },
];

/**
 * The token legs of the usage commands (7, see docs/metering.md): per tenant and token asset
 * the @tokens system account and the wallets' token accounts sum to zero, each token account
 * equals its legs, and each usage has at most one leg per class and at most one money leg, a
 * SPEND or CAPTURE of the wallet its legs credit.
 */
const TOKEN_CHECKS: readonly { name: string; sql: string }[] = [
  {
    name: "7: token legs per tenant and token asset do not sum to zero",
    sql: `select tenant_id || ' ' || asset as what from (
            select tenant_id, asset, sum(case when credit_wallet_id like '@%' then amount else 0 end)
                 - sum(case when debit_wallet_id like '@%' then amount else 0 end) as system_net
              from transfers where kind = 'usage' group by tenant_id, asset) s
          full join (
            select tenant_id, asset, sum(tokens) as wallet_net from token_accounts group by tenant_id, asset) w
            using (tenant_id, asset)
          where coalesce(system_net, 0) + coalesce(wallet_net, 0) <> 0`,
  },
  {
    name: "7: a wallet's token account differs from its token legs",
    sql: `with j as (
            select tenant_id, credit_wallet_id as wallet_id, asset, sum(amount) as tokens
              from transfers where kind = 'usage' group by 1, 2, 3)
          select wallet_id || ' ' || asset as what from token_accounts a full join j using (tenant_id, wallet_id, asset)
           where coalesce(a.tokens, 0) <> coalesce(j.tokens, 0)`,
  },
  {
    name: "7: a usage has two legs of one class, two money legs, or a money leg that is not a spend or capture of its wallet",
    sql: `select usage_id::text as what from transfers where kind = 'usage'
           group by tenant_id, usage_id, token_class having count(*) > 1
          union all
          select usage_id::text from transfers where usage_id is not null and kind <> 'usage'
           group by tenant_id, usage_id having count(*) > 1
          union all
          select m.usage_id::text from transfers m
           where m.usage_id is not null and m.kind <> 'usage'
             and (m.kind not in ('spend', 'capture')
                  or exists (select 1 from transfers l
                              where l.tenant_id = m.tenant_id and l.usage_id = m.usage_id
                                and l.kind = 'usage' and l.credit_wallet_id <> m.debit_wallet_id))`,
  },
];

/** The tables (and the view grants_current) the checks read, each of which has a tenant_id column. */
const TENANT_TABLES = ["transfers", "accounts", "holds", "events", "event_retention", "wallets", "grants", "grants_current", "token_accounts", "statements"] as const;

/**
 * A check limited to the tenant $1: common table expressions named like the tables shadow them
 * in the check (inside its own definition a CTE name still means the table), so every check
 * stays one query whatever its shape. Not materialized, so the tenant filter reaches the indexes.
 */
function scopedToTenant(sql: string): string {
  const scopes = TENANT_TABLES.map((t) => `${t} as not materialized (select * from ${t} where tenant_id = $1::uuid)`).join(",\n");
  const withClause = /^\s*with\s/i.exec(sql);
  return withClause === null ? `with ${scopes}\n${sql}` : `with ${scopes},\n${sql.slice(withClause[0].length)}`;
}

/** Each check is a query whose rows (a `what` column) are the violations of one invariant. */
const INVARIANT_CHECKS: readonly { name: string; sql: string }[] = [
  {
    name: "1: posted balances per tenant and asset do not sum to zero",
    sql: `select tenant_id || ' ' || asset as what from (
            select tenant_id, asset, sum(case when credit_wallet_id like '@%' then amount else 0 end)
                 - sum(case when debit_wallet_id like '@%' then amount else 0 end) as system_net
              from transfers where kind in ('deposit', 'spend', 'capture', 'refund', 'transfer', 'grant', 'breakage')
             group by tenant_id, asset) s
          full join (
            select tenant_id, asset, sum(credits_posted - debits_posted) as wallet_net
              from accounts group by tenant_id, asset) w using (tenant_id, asset)
          where coalesce(system_net, 0) + coalesce(wallet_net, 0) <> 0`,
  },
  {
    name: "1: an account's stored balance differs from its journal",
    sql: `with j as (
            select tenant_id, wallet_id, asset, sum(credit) as credits, sum(debit) as debits from (
              select tenant_id, credit_wallet_id as wallet_id, asset, amount as credit, 0 as debit
                from transfers where kind in ('deposit', 'refund', 'transfer', 'grant')
              union all
              select tenant_id, debit_wallet_id, asset, 0, amount
                from transfers where kind in ('spend', 'capture', 'transfer', 'breakage')) x
            group by tenant_id, wallet_id, asset),
          p as (
            select tenant_id, wallet_id, asset, sum(amount) as pending from holds
             where status = 'pending' group by tenant_id, wallet_id, asset)
          select a.wallet_id || ' ' || a.asset as what from accounts a
            left join j using (tenant_id, wallet_id, asset)
            left join p using (tenant_id, wallet_id, asset)
           where a.credits_posted <> coalesce(j.credits, 0) or a.debits_posted <> coalesce(j.debits, 0)
              or a.debits_pending <> coalesce(p.pending, 0)`,
  },
  {
    name: "2: an available balance is below zero",
    sql: `select wallet_id || ' ' || asset as what from accounts
           where credits_posted - debits_posted - debits_pending + credit_limit < 0`,
  },
  {
    name: "4: a hold's closing journal rows do not match its status",
    sql: `with c as (
            select tenant_id, hold_id, count(*) as closings, max(kind) as kind, max(amount) as amount
              from transfers where kind in ('capture', 'release', 'expire') group by 1, 2)
          select h.hold_id as what from holds h
            left join c using (tenant_id, hold_id)
           where (h.status = 'pending' and coalesce(c.closings, 0) <> 0)
              or (h.status <> 'pending' and coalesce(c.closings, 0) <> 1)
              or (h.status = 'captured' and (c.kind <> 'capture' or c.amount <> h.captured_amount))
              or (h.status = 'released' and c.kind <> 'release')
              or (h.status = 'expired' and c.kind <> 'expire')`,
  },
  {
    name: "5: a journal row has no event, or more than one, on a wallet it touched",
    // A multiset difference both ways (missing events, and extra ones) rather than a join:
    // it stays n log n whatever the planner thinks of the jsonb expression. A wallet whose
    // oldest events were pruned (event_retention, migration 0018) is missing exactly the
    // journal rows the pruned events carried: their number and hash sum are compared instead.
    sql: `with expected as (
            select t.tenant_id, w.wallet_id, t.transfer_id::text as transfer_id
              from transfers t cross join lateral (values (t.debit_wallet_id), (t.credit_wallet_id)) w(wallet_id)
             where w.wallet_id not like '@%'),
          published as (
            select tenant_id, wallet_id, data->'transfer'->>'transfer_id' as transfer_id
              from events where data ? 'transfer'
            union all
            select e.tenant_id, e.wallet_id, l->>'transfer_id'
              from events e cross join jsonb_array_elements(e.data->'token_transfers') l
             where e.data ? 'token_transfers'),
          missing as (table expected except all table published),
          missing_per_wallet as (
            select tenant_id, wallet_id, count(*) as links, sum(hashtextextended(transfer_id, 0)) as digest
              from missing group by tenant_id, wallet_id)
          select tenant_id || ' ' || transfer_id || ' on ' || wallet_id as what
            from (table published except all table expected) extra
          union all
          select m.tenant_id || ' ' || m.transfer_id || ' on ' || m.wallet_id
            from missing m
           where not exists (select 1 from event_retention r where r.tenant_id = m.tenant_id and r.wallet_id = m.wallet_id)
          union all
          select r.tenant_id || ' ' || r.wallet_id || ': ' || coalesce(m.links, 0) || ' journal rows without an event, but '
                 || r.pruned_links || ' pruned'
            from event_retention r left join missing_per_wallet m using (tenant_id, wallet_id)
           where coalesce(m.links, 0) <> r.pruned_links or coalesce(m.digest, 0) <> r.pruned_digest`,
  },
  {
    name: "5: a wallet's event sequence has a gap",
    // Events 1..pruned_seq of a wallet may have been pruned (event_retention); the rest remain.
    sql: `select w.wallet_id as what from wallets w
            left join (select tenant_id, wallet_id, count(*) as n, max(seq) as top, min(seq) as bottom
                         from events group by tenant_id, wallet_id) e using (tenant_id, wallet_id)
            left join event_retention r using (tenant_id, wallet_id)
           where coalesce(e.n, 0) <> w.event_seq - coalesce(r.pruned_seq, 0)
              or (coalesce(e.n, 0) > 0 and (e.top <> w.event_seq or e.bottom <> coalesce(r.pruned_seq, 0) + 1))`,
  },
  ...GRANT_CHECKS,
  ...TOKEN_CHECKS,
  ...STATEMENT_CHECKS,
];

/**
 * The ledger invariants of docs/architecture.md ("Invariants"), checked against the database as a whole. The
 * concurrency tests and the benchmark run this after every run; an empty list means every
 * invariant holds.
 *
 * 1. Per tenant and asset, the posted balances of all accounts sum to zero, and every wallet
 *    account's stored columns equal what its journal rows and pending holds add up to.
 * 2. No wallet account's available balance is below zero.
 * 4. A hold is closed by at most one journal row, which matches its status and captured amount.
 * 5. Every journal row produced exactly one event on each wallet it touched, and each wallet's
 *    events are numbered 1..event_seq without gaps or duplicates. Where a wallet's oldest
 *    events were pruned (HOLDFAST_EVENT_RETENTION_HOURS, retention.ts), its events run from
 *    pruned_seq + 1, and the journal rows without an event must be exactly the pruned ones
 *    (same number, same sum of hashes of their transfer ids, kept in event_retention).
 * 6. Credit grants: per wallet and asset the grants and the credit line add up to the account's
 *    columns; no grant's remaining or held is negative; a hold's allocations sum to its amount
 *    and match the grants' held; every consumed, expired and voided amount (and every grant's
 *    amount) matches the grant breakdowns in the journal, and so does the credit line's use;
 *    each account's grants_other counts its live grants other than its default grant.
 * 7. Token legs: per tenant and token asset @tokens and the wallets' token accounts sum to
 *    zero, each token account equals its legs, and each usage's legs and money leg agree.
 * 8. Statements: every closed statement agrees with the journal and its lines, and each starts
 *    where the previous one of its wallet and asset ended (statement-checks.ts).
 * (3, exactly-once replays, is checked by the tests that send the replays.)
 *
 * With `tenantId` every check reads only that tenant's rows (`holdfast verify --tenant`).
 */
export async function checkInvariants(
  db: pg.Pool | pg.PoolClient,
  options: { tenantId?: string | undefined } = {},
): Promise<string[]> {
  const violations: string[] = [];
  for (const check of INVARIANT_CHECKS) {
    const sql = options.tenantId === undefined ? check.sql : scopedToTenant(check.sql);
    const values = options.tenantId === undefined ? [] : [options.tenantId];
    const result = await db.query<{ what: string }>(`${sql} limit ${VIOLATIONS_PER_CHECK_MAX}`, values);
    for (const row of result.rows) {
      violations.push(`${check.name}: ${row.what}`);
    }
  }
  return violations;
}
