import type pg from "pg";

/** Rows reported per broken invariant: enough to find the fault, bounded on a badly broken database. */
const VIOLATIONS_PER_CHECK_MAX = 10;

/** Each check is a query whose rows (a `what` column) are the violations of one invariant. */
const INVARIANT_CHECKS: readonly { name: string; sql: string }[] = [
  {
    name: "1: posted balances per tenant and asset do not sum to zero",
    sql: `select tenant_id || ' ' || asset as what from (
            select tenant_id, asset, sum(case when credit_wallet_id like '@%' then amount else 0 end)
                 - sum(case when debit_wallet_id like '@%' then amount else 0 end) as system_net
              from transfers where kind in ('deposit', 'spend', 'capture', 'refund', 'transfer')
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
                from transfers where kind in ('deposit', 'refund', 'transfer')
              union all
              select tenant_id, debit_wallet_id, asset, 0, amount
                from transfers where kind in ('spend', 'capture', 'transfer')) x
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
    // it stays n log n whatever the planner thinks of the jsonb expression.
    sql: `with expected as (
            select t.tenant_id || ' ' || t.transfer_id || ' on ' || w.wallet_id as what
              from transfers t cross join lateral (values (t.debit_wallet_id), (t.credit_wallet_id)) w(wallet_id)
             where w.wallet_id not like '@%'),
          published as (
            select tenant_id || ' ' || (data->'transfer'->>'transfer_id') || ' on ' || wallet_id as what
              from events where data ? 'transfer')
          select what from ((table expected except all table published)
                            union all (table published except all table expected)) d`,
  },
  {
    name: "5: a wallet's event sequence has a gap",
    sql: `select w.wallet_id as what from wallets w
            left join (select tenant_id, wallet_id, count(*) as n, max(seq) as top, min(seq) as bottom
                         from events group by tenant_id, wallet_id) e using (tenant_id, wallet_id)
           where coalesce(e.n, 0) <> w.event_seq or coalesce(e.top, 0) <> w.event_seq
              or (w.event_seq > 0 and e.bottom <> 1)`,
  },
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
 *    events are numbered 1..event_seq without gaps or duplicates.
 * (3, exactly-once replays, is checked by the tests that send the replays.)
 */
export async function checkInvariants(db: pg.Pool | pg.PoolClient): Promise<string[]> {
  const violations: string[] = [];
  for (const check of INVARIANT_CHECKS) {
    const result = await db.query<{ what: string }>(`${check.sql} limit ${VIOLATIONS_PER_CHECK_MAX}`);
    for (const row of result.rows) {
      violations.push(`${check.name}: ${row.what}`);
    }
  }
  return violations;
}
