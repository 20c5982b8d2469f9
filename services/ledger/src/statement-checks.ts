/**
 * The statement invariant (8, see docs/statements.md), which checkInvariants (invariants.ts)
 * runs with the others: every closed statement still agrees with the journal, and the closed
 * periods of a wallet and asset chain. A journal row dated inside a closed period after the
 * close (which the journal's trigger prevents) would break the first; a period that skips or
 * overlaps another, the second. The journal is summed here without the statements' own
 * shortcut (opening balances from the previous closed statement), so a wrong checkpoint cannot
 * hide itself.
 *
 * @module
 */

/** Each check is a query whose rows (a `what` column) are the violations, like invariants.ts's. */
export const STATEMENT_CHECKS: readonly { name: string; sql: string }[] = [
  {
    name: "8: a closed statement differs from its journal, its lines or the previous period",
    sql: `select s.statement_id::text as what from statements s
            join wallets w on w.tenant_id = s.tenant_id and w.wallet_id = s.wallet_id
            cross join lateral (
              select max(p.period_end) as period_end from statements p
               where p.tenant_id = s.tenant_id and p.wallet_id = s.wallet_id and p.asset = s.asset
                 and p.period_end < s.period_end) prev
            cross join lateral (
              select coalesce(sum(t.amount) filter (where t.created_at < s.period_start), 0) as before,
                     coalesce(sum(t.amount) filter (where t.created_at >= s.period_start), 0) as during
                from transfers t
               where t.tenant_id = s.tenant_id and t.credit_wallet_id = s.wallet_id
                 and t.credit_wallet_id not like '@%' and t.kind <> 'usage'
                 and t.asset = s.asset and t.created_at < s.period_end) c
            cross join lateral (
              select coalesce(sum(t.amount) filter (where t.created_at < s.period_start), 0) as before,
                     coalesce(sum(t.amount) filter (where t.created_at >= s.period_start), 0) as during
                from transfers t
               where t.tenant_id = s.tenant_id and t.debit_wallet_id = s.wallet_id
                 and t.debit_wallet_id not like '@%' and t.kind not in ('reserve', 'release', 'expire')
                 and t.asset = s.asset and t.created_at < s.period_end) d
            cross join lateral (
              select coalesce(sum((l->>'amount')::bigint) filter (where l->>'side' = 'debit'), 0) as debits,
                     coalesce(sum((l->>'amount')::bigint) filter (where l->>'side' = 'credit'), 0) as credits
                from jsonb_array_elements(s.lines) l) l
           where s.period_start <> coalesce(prev.period_end, w.created_at)
              or s.opening_posted <> c.before - d.before
              or s.total_credits <> c.during or s.total_debits <> d.during
              or s.total_credits <> l.credits or s.total_debits <> l.debits`,
  },
];
