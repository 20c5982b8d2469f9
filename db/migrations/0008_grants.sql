-- Credit grants: a wallet's money in one asset is a set of grants, each with a category, a
-- priority and a validity window, consumed in a fixed order; see docs/grants.md.
--
-- The model, in the terms of the columns below:
--
-- - A grant holds `remaining` (spendable while it is valid) and `held` (reserved by pending
--   holds). What left it is `consumed` (spent, captured, sent, or used to repay the credit
--   line), `expired` or `voided` (posted to the tenant's @breakage account). Always
--   amount = remaining + held + consumed + expired + voided.
-- - Deposits, transfers in and refunds that cannot go back to a grant credit the wallet's
--   default grant for the asset (category `default`, priority 100, started since forever,
--   never expiring), created on first use. A wallet that only ever sees Deposit has only that
--   grant and behaves exactly as before this migration.
-- - The credit limit is drawn on only after every eligible grant is exhausted. The account
--   keeps what is drawn: `credit_used` (posted overdraft) and `credit_held` (the part of
--   pending holds the credit line backs); credit_used + credit_held <= credit_limit.
-- - So, per wallet and asset, with sums over all the account's grants:
--     credits_posted - debits_posted = sum(remaining + held) - credit_used
--     debits_pending                 = sum(held) + credit_held
--   and the TigerBeetle floor (credits - debits - pending + credit_limit >= 0) follows from
--   remaining >= 0 and credit_used + credit_held <= credit_limit.
-- - Which grants a journal row moved money out of or into is stored on the row
--   (`transfers.grants`), and which grants a hold draws on on the hold (`holds.allocations`).
--   Journal entries are {grant_id, amount, op}; `@credit` stands for the credit line. Ops:
--   draw (consumed by this row), hold (reserved), return (a hold's reservation given back),
--   credit (new money into the grant), repay (the grant's money repaid the credit line:
--   consumed), refund (consumption undone), overflow (a refund of credit-line money that the
--   overdraft no longer needs, credited to the default grant as new money), break (breakage).
-- - A grant whose expires_at has passed, or which is voided, is never spendable, whether or
--   not any worker ran. What is left in it, and whatever a hold or refund later brings back to
--   it, is posted to @breakage: lazily by the next command on the wallet and asset, or by the
--   grant-expiry pass (ledger_expire_grants_batch).
--
-- Locking is unchanged: the wallet row is the mutex for its grants, as for its accounts and
-- holds, and every command still takes one wallet lock (two for Transfer) in one round trip.

-- 1. Schema.

alter table accounts
  add column credit_used bigint not null default 0 check (credit_used >= 0),
  add column credit_held bigint not null default 0 check (credit_held >= 0);

alter table transfers drop constraint transfers_kind_check;
alter table transfers add constraint transfers_kind_check check (kind in
  ('deposit', 'spend', 'reserve', 'capture', 'release', 'expire', 'refund', 'transfer',
   'grant', 'breakage'));
-- The grant breakdown of the row (see above); null on rows written before this migration.
alter table transfers add column grants jsonb;

alter table holds
  -- [{grant_id, amount}] in consumption order, summing to the hold's amount.
  add column allocations jsonb not null default '[]'::jsonb,
  -- The Reserve's category filter, which an over-capture honours too; null means every one.
  add column categories text[];

create table grants (
  tenant_id   uuid        not null,
  grant_id    text        not null check (grant_id ~ '^[A-Za-z0-9_:-]{1,128}$'),
  wallet_id   text        not null,
  asset       text        not null,
  category    text        not null check (category ~ '^[a-z0-9_-]{1,64}$'),
  priority    integer     not null check (priority between 0 and 1000),
  -- The wallet's default grant for the asset, which Deposit credits.
  is_default  boolean     not null default false,
  amount      bigint      not null check (amount >= 0),
  remaining   bigint      not null default 0 check (remaining >= 0),
  held        bigint      not null default 0 check (held >= 0),
  consumed    bigint      not null default 0 check (consumed >= 0),
  expired     bigint      not null default 0 check (expired >= 0),
  voided      bigint      not null default 0 check (voided >= 0),
  -- Inclusive; '-infinity' for default grants.
  starts_at   timestamptz not null,
  -- Exclusive; null: never.
  expires_at  timestamptz,
  voided_at   timestamptz,
  created_at  timestamptz not null,
  metadata    jsonb       not null default '{}'::jsonb,
  -- The consumption order sorts never-expiring grants last; a non-null key lets the order
  -- be compared as a row (page tokens) and served by one index.
  expires_key timestamptz generated always as (coalesce(expires_at, 'infinity')) stored,
  -- Whether the grant can still matter to a command: money left in it or held from it. Only
  -- live grants are indexed for the commands, so exhausted and expired grants cost nothing.
  -- It changes rarely, so most updates of a grant stay HOT.
  live        boolean     generated always as (remaining > 0 or held > 0) stored,
  primary key (tenant_id, grant_id),
  foreign key (tenant_id, wallet_id) references wallets (tenant_id, wallet_id),
  check (expires_at is null or expires_at > starts_at),
  check (amount = remaining + held + consumed + expired + voided)
) with (fillfactor = 70);

-- 2. Backfill: every existing account gets its default grant, holding what the account holds,
-- and every pending hold its allocation (the default grant first, then the credit line).

insert into grants (tenant_id, grant_id, wallet_id, asset, category, priority, is_default,
                    amount, remaining, held, starts_at, created_at, metadata)
select a.tenant_id, 'grant_' || ledger_uuidv7(w.created_at), a.wallet_id, a.asset, 'default',
       100, true, x.funded, x.funded - x.held, x.held, '-infinity', w.created_at,
       jsonb_build_object('opening_balance', x.funded::text)
  from accounts a
  join wallets w using (tenant_id, wallet_id)
  cross join lateral (
    select greatest(a.credits_posted - a.debits_posted, 0) as funded,
           least(a.debits_pending, greatest(a.credits_posted - a.debits_posted, 0)) as held) x;

update accounts a
   set credit_used = greatest(a.debits_posted - a.credits_posted, 0),
       credit_held = a.debits_pending - g.held
  from grants g
 where g.tenant_id = a.tenant_id and g.wallet_id = a.wallet_id and g.asset = a.asset
   and g.is_default;

with p as (
  select h.tenant_id, h.hold_id, h.amount, g.grant_id, g.held,
         coalesce(sum(h.amount) over (partition by h.tenant_id, h.wallet_id, h.asset
                                      order by h.created_at, h.hold_id
                                      rows between unbounded preceding and 1 preceding), 0) as before
    from holds h
    join grants g on g.tenant_id = h.tenant_id and g.wallet_id = h.wallet_id
                 and g.asset = h.asset and g.is_default
   where h.status = 'pending'),
s as (
  select *, greatest(0, least(amount, held - before)) as from_grant from p)
update holds h
   set allocations =
         (case when s.from_grant > 0
               then jsonb_build_array(jsonb_build_object('grant_id', s.grant_id, 'amount', s.from_grant))
               else '[]'::jsonb end)
      || (case when s.amount > s.from_grant
               then jsonb_build_array(jsonb_build_object('grant_id', '@credit', 'amount', s.amount - s.from_grant))
               else '[]'::jsonb end)
  from s
 where h.tenant_id = s.tenant_id and h.hold_id = s.hold_id;

alter table accounts add constraint accounts_credit_in_use
  check (credit_used + credit_held <= credit_limit);

-- The wallet's default grant for an asset (Deposit).
create unique index grants_default on grants (tenant_id, wallet_id, asset)
  where is_default and voided_at is null;
-- The consumption order of a wallet's live grants: what every debit walks.
create index grants_live_order
  on grants (tenant_id, wallet_id, asset, priority, expires_key, starts_at, created_at, grant_id)
  where live;
-- A wallet's live grants by expiry: the probe every command makes for due breakage.
create index grants_live_expiry on grants (tenant_id, wallet_id, asset, expires_key) where live;
-- Every live grant by expiry, for the grant-expiry pass.
create index grants_due on grants (expires_key) where live;
-- ListGrants with closed grants, in consumption order.
create index grants_by_wallet
  on grants (tenant_id, wallet_id, asset, priority, expires_key, starts_at, created_at, grant_id);

-- 3. JSON shapes. Amounts are strings so that int64 survives JSON.

create function ledger_entry(p_grant text, p_amount bigint, p_op text) returns jsonb
language sql immutable as $$
  select jsonb_build_object('grant_id', p_grant, 'amount', p_amount, 'op', p_op)
$$;

-- Functions on the hot path are plpgsql or single expressions: PostgreSQL plans the query of
-- any other SQL function again at every call, which would cost more than the work itself.

-- The sum of the entries (or allocations) naming one grant.
create function ledger_alloc_amount(p_allocs jsonb, p_grant text) returns bigint
language plpgsql immutable as $$
declare
  e jsonb;
  v bigint := 0;
begin
  for e in select value from jsonb_array_elements(coalesce(p_allocs, '[]'::jsonb)) loop
    if e->>'grant_id' = p_grant then
      v := v + (e->>'amount')::bigint;
    end if;
  end loop;
  return v;
end $$;

-- Journal entries as a hold's allocations: [{grant_id, amount}].
create function ledger_allocations(p_entries jsonb) returns jsonb
language plpgsql immutable as $$
begin
  return (select coalesce(jsonb_agg(jsonb_build_object('grant_id', e->>'grant_id',
                                                       'amount', (e->>'amount')::bigint)
                                    order by ord), '[]'::jsonb)
            from jsonb_array_elements(p_entries) with ordinality x(e, ord));
end $$;

-- A hold's allocations as callers see them: [{grant_id, amount}] with amounts as strings.
create function ledger_allocations_json(p_allocs jsonb) returns jsonb
language plpgsql immutable as $$
begin
  return (select coalesce(jsonb_agg(jsonb_build_object('grant_id', e->>'grant_id',
                                                       'amount', e->>'amount') order by ord),
                          '[]'::jsonb)
            from jsonb_array_elements(p_allocs) with ordinality x(e, ord));
end $$;

-- The entries of the given ops as callers see them: one {grant_id, amount} per grant in order
-- of first appearance, a repayment shown as money that went to `@credit` instead of the grant.
create function ledger_grants_json(p_entries jsonb, p_ops text[]) returns jsonb
language plpgsql immutable as $$
declare
  v_one jsonb;
begin
  if p_entries is null or jsonb_array_length(p_entries) = 0 then
    return '[]'::jsonb;
  end if;
  -- One entry, the common case: no aggregation needed.
  if jsonb_array_length(p_entries) = 1 then
    v_one := p_entries->0;
    if v_one->>'op' = any (p_ops) and v_one->>'op' <> 'repay' then
      return jsonb_build_array(jsonb_build_object('grant_id', v_one->>'grant_id',
                                                  'amount', v_one->>'amount'));
    end if;
  end if;
  return (
  select coalesce(jsonb_agg(jsonb_build_object('grant_id', grant_id, 'amount', amount::text)
                            order by first), '[]'::jsonb)
    from (
      select grant_id, sum(amount) as amount, min(ord) as first from (
        select case when e->>'op' = 'repay' then '@credit' else e->>'grant_id' end as grant_id,
               (e->>'amount')::bigint as amount, ord
          from jsonb_array_elements(coalesce(p_entries, '[]'::jsonb)) with ordinality x(e, ord)
         where e->>'op' = any (p_ops)
        union all
        select e->>'grant_id', -(e->>'amount')::bigint, ord
          from jsonb_array_elements(coalesce(p_entries, '[]'::jsonb)) with ordinality x(e, ord)
         where e->>'op' = 'repay' and 'repay' = any (p_ops)
      ) s
      group by grant_id
      having sum(amount) <> 0) g);
end $$;

-- Which entries a row of each kind shows as its `grants`: where the money came from for
-- debits, where it went for credits.
create function ledger_transfer_ops(p_kind text) returns text[] language sql immutable as $$
  select (case p_kind
    when 'reserve'  then '{hold}'
    when 'release'  then '{return,repay}'
    when 'expire'   then '{return,repay}'
    when 'deposit'  then '{credit,repay}'
    when 'grant'    then '{credit,repay}'
    when 'refund'   then '{refund,overflow,repay}'
    when 'breakage' then '{break}'
    else '{draw}' end)::text[]
$$;

create or replace function ledger_transfer_json(t transfers) returns jsonb
language sql immutable as $$
  select jsonb_build_object(
    'transfer_id', t.transfer_id, 'kind', t.kind,
    'debit_wallet_id', t.debit_wallet_id, 'credit_wallet_id', t.credit_wallet_id,
    'asset', t.asset, 'amount', t.amount::text, 'hold_id', t.hold_id, 'refund_of', t.refund_of,
    'created_at', t.created_at, 'metadata', t.metadata,
    'grants', ledger_grants_json(t.grants, ledger_transfer_ops(t.kind)))
    || case when t.kind = 'transfer'
            then jsonb_build_object('credit_grants', ledger_grants_json(t.grants, '{credit,repay}'))
            else '{}'::jsonb end
$$;

create or replace function ledger_hold_json(h holds) returns jsonb language sql immutable as $$
  select jsonb_build_object(
    'hold_id', h.hold_id, 'wallet_id', h.wallet_id, 'asset', h.asset,
    'amount', h.amount::text, 'captured_amount', h.captured_amount::text, 'status', h.status,
    'reserve_transfer_id', h.reserve_transfer_id, 'expires_at', h.expires_at,
    'created_at', h.created_at, 'closed_at', h.closed_at, 'metadata', h.metadata,
    'allocations', ledger_allocations_json(h.allocations),
    'categories', to_jsonb(coalesce(h.categories, '{}'::text[])))
$$;

create function ledger_grant_dead(g grants, p_now timestamptz) returns boolean
language sql immutable as $$
  select g.voided_at is not null or g.expires_key <= p_now
$$;

create function ledger_grant_status(g grants, p_now timestamptz) returns text
language sql immutable as $$
  select case
    when g.voided_at is not null then 'voided'
    when g.expires_key <= p_now then 'expired'
    when g.starts_at > p_now then 'scheduled'
    when g.remaining = 0 then 'exhausted'
    else 'active'
  end
$$;

-- A grant as callers see it at p_now: what is left in an expired or voided grant that no
-- command or worker has posted to @breakage yet is reported as expired (voided) already.
create function ledger_grant_json(g grants, p_now timestamptz) returns jsonb
language sql immutable as $$
  select jsonb_build_object(
    'grant_id', g.grant_id, 'wallet_id', g.wallet_id, 'asset', g.asset,
    'category', g.category, 'priority', g.priority, 'amount', g.amount::text,
    'remaining', (case when ledger_grant_dead(g, p_now) then 0 else g.remaining end)::text,
    'held', g.held::text, 'consumed', g.consumed::text,
    'expired', (g.expired + case when ledger_grant_dead(g, p_now) and g.voided_at is null
                                 then g.remaining else 0 end)::text,
    'voided', (g.voided + case when g.voided_at is not null then g.remaining else 0 end)::text,
    'starts_at', case when g.is_default then g.created_at else g.starts_at end,
    'expires_at', g.expires_at, 'voided_at', g.voided_at,
    'status', ledger_grant_status(g, p_now), 'created_at', g.created_at, 'metadata', g.metadata)
$$;

-- What the live grants of an account hold at p_now: spendable, not yet started, and left in
-- expired or voided grants (not yet posted to @breakage).
create function ledger_grant_sums(p_tenant uuid, p_wallet text, p_asset text, p_now timestamptz,
                                  out active bigint, out scheduled bigint, out dead bigint)
language plpgsql stable as $$
begin
  select coalesce(sum(remaining) filter (where voided_at is null and starts_at <= p_now
                                           and expires_key > p_now), 0)::bigint,
         coalesce(sum(remaining) filter (where voided_at is null and starts_at > p_now), 0)::bigint,
         coalesce(sum(remaining) filter (where voided_at is not null or expires_key <= p_now), 0)::bigint
    into active, scheduled, dead
    from grants
   where tenant_id = p_tenant and wallet_id = p_wallet and asset = p_asset and live;
end $$;

-- The balance a command answers with (its lazy expiry has run for the asset):
--   posted    = credits - debits, less what is about to go to @breakage,
--   held      = debits_pending,
--   available = the remaining of started, unexpired grants + credit_limit - credit in use,
--   scheduled = the remaining of grants not yet started (in posted, not in available).
-- For a wallet with only its default grant this is exactly the balance of before grants.
create function ledger_balance_at(a accounts, p_now timestamptz) returns jsonb
language plpgsql stable as $$
declare
  s record;
begin
  s := ledger_grant_sums(a.tenant_id, a.wallet_id, a.asset, p_now);
  return jsonb_build_object(
    'asset', a.asset,
    'posted', (a.credits_posted - a.debits_posted - s.dead)::text,
    'held', a.debits_pending::text,
    'available', (s.active + a.credit_limit - a.credit_used - a.credit_held)::text,
    'credit_limit', a.credit_limit::text,
    'scheduled', s.scheduled::text);
end $$;

-- The balance reads answer with: as ledger_balance_at, and holds past their expiry that no
-- command or worker has voided yet no longer count as held; what they would give back to an
-- expired or voided grant counts as gone.
create function ledger_balance_read(a accounts, p_now timestamptz) returns jsonb
language sql stable as $$
  select jsonb_build_object(
    'asset', a.asset,
    'posted', (a.credits_posted - a.debits_posted - s.dead - x.lapsed_dead)::text,
    'held', (a.debits_pending - x.lapsed)::text,
    'available', (s.active + a.credit_limit - a.credit_used - a.credit_held
                  + x.lapsed - x.lapsed_dead)::text,
    'credit_limit', a.credit_limit::text,
    'scheduled', s.scheduled::text)
  from ledger_grant_sums(a.tenant_id, a.wallet_id, a.asset, p_now) s
  cross join lateral (
    select coalesce(sum(h.amount), 0)::bigint as lapsed,
           coalesce(sum(d.amount), 0)::bigint as lapsed_dead
      from holds h
      cross join lateral (
        select coalesce(sum((e->>'amount')::bigint), 0) as amount
          from jsonb_array_elements(h.allocations) e
          join grants g on g.tenant_id = h.tenant_id and g.grant_id = e->>'grant_id'
         where ledger_grant_dead(g, p_now)) d
     where h.tenant_id = a.tenant_id and h.wallet_id = a.wallet_id and h.asset = a.asset
       and h.status = 'pending' and h.expires_at <= p_now) x
$$;

-- 4. Moving money between grants. The wallet must be locked by the caller.

-- Posts what is left in an expired or voided grant to @breakage: one journal row and one
-- event (p_event: holdfast.grant.expired, or holdfast.grant.voided from VoidGrant). Returns the
-- journal row, or a row of nulls when nothing was left.
create function ledger_break(p_tenant uuid, p_grant text, p_now timestamptz, p_event text)
returns transfers language plpgsql volatile as $$
declare
  g      grants;
  v_amt  bigint;
  v_acc  accounts;
  v_xfer transfers;
begin
  select remaining into v_amt from grants where tenant_id = p_tenant and grant_id = p_grant;
  if coalesce(v_amt, 0) = 0 then
    return v_xfer;
  end if;
  update grants
     set remaining = 0,
         expired = expired + case when voided_at is null then v_amt else 0 end,
         voided = voided + case when voided_at is null then 0 else v_amt end
   where tenant_id = p_tenant and grant_id = p_grant
  returning * into g;
  update accounts set debits_posted = debits_posted + v_amt, version = version + 1
   where tenant_id = p_tenant and wallet_id = g.wallet_id and asset = g.asset
  returning * into v_acc;
  insert into transfers (tenant_id, transfer_id, kind, debit_wallet_id, credit_wallet_id, asset,
                         amount, metadata, created_at, grants)
  values (p_tenant, ledger_uuidv7(p_now), 'breakage', g.wallet_id, '@breakage', g.asset, v_amt,
          g.metadata, p_now, jsonb_build_array(ledger_entry(p_grant, v_amt, 'break')))
  returning * into v_xfer;
  perform ledger_emit(p_tenant, g.wallet_id, p_event, g.asset, p_now,
    jsonb_build_object('balance', ledger_balance_at(v_acc, p_now),
                       'grant', ledger_grant_json(g, p_now),
                       'transfer', ledger_transfer_json(v_xfer), 'metadata', g.metadata));
  return v_xfer;
end $$;

-- Posts to @breakage what the given grants (expired or voided ones that just got money back)
-- hold. Returns the amount posted.
create function ledger_break_grants(p_tenant uuid, p_grants text[], p_now timestamptz)
returns bigint language plpgsql volatile as $$
declare
  v_id    text;
  v_total bigint := 0;
begin
  for v_id in select distinct unnest(p_grants) order by 1 loop
    v_total := v_total + coalesce((ledger_break(p_tenant, v_id, p_now, 'holdfast.grant.expired')).amount, 0);
  end loop;
  return v_total;
end $$;

-- Breakage of the account's grants whose expiry has passed. Returns how many grants it posted.
create function ledger_break_expired(p_tenant uuid, p_wallet text, p_asset text, p_now timestamptz)
returns integer language plpgsql volatile as $$
declare
  v_id text;
  n    integer := 0;
begin
  for v_id in
    select grant_id from grants
     where tenant_id = p_tenant and wallet_id = p_wallet and asset = p_asset and live
       and expires_key <= p_now and remaining > 0
     order by expires_key, grant_id
  loop
    perform ledger_break(p_tenant, v_id, p_now, 'holdfast.grant.expired');
    n := n + 1;
  end loop;
  return n;
end $$;

-- Expires the due holds of one wallet and asset, then posts the breakage of its expired
-- grants. The wallet must be locked. Returns the number of holds expired, as before.
create or replace function ledger_expire_due(p_tenant uuid, p_wallet text, p_asset text,
                                             p_now timestamptz)
returns integer language plpgsql volatile as $$
declare
  h holds;
  n integer := 0;
begin
  for h in
    select * from holds
     where tenant_id = p_tenant and wallet_id = p_wallet and asset = p_asset
       and status = 'pending' and expires_at <= p_now
     order by expires_at, hold_id
  loop
    perform ledger_void_hold(h, 'expire', p_now);
    n := n + 1;
  end loop;
  perform ledger_break_expired(p_tenant, p_wallet, p_asset, p_now);
  return n;
end $$;

-- Moves y from the allocation of p_from (the credit line) to p_to on a hold's allocations,
-- keeping the consumption order: p_to's entry goes before p_from's.
create function ledger_alloc_move(p_allocs jsonb, p_from text, p_to text, p_amount bigint)
returns jsonb language plpgsql immutable as $$
declare
  e      jsonb;
  v_out  jsonb := '[]'::jsonb;
  v_has  boolean := p_allocs @> jsonb_build_array(jsonb_build_object('grant_id', p_to));
  v_amt  bigint;
begin
  for e in select value from jsonb_array_elements(p_allocs) loop
    v_amt := (e->>'amount')::bigint;
    if e->>'grant_id' = p_to then
      v_out := v_out || jsonb_build_object('grant_id', p_to, 'amount', v_amt + p_amount);
    elsif e->>'grant_id' = p_from then
      if not v_has then
        v_out := v_out || jsonb_build_object('grant_id', p_to, 'amount', p_amount);
      end if;
      if v_amt > p_amount then
        v_out := v_out || jsonb_build_object('grant_id', p_from, 'amount', v_amt - p_amount);
      end if;
    else
      v_out := v_out || e;
    end if;
  end loop;
  return v_out;
end $$;

-- Money that lands in the default grant first pays back the credit line: the posted overdraft
-- (a `repay` entry: the grant's money is consumed) and then the credit-line part of pending
-- holds whose categories allow the grant (their allocation moves to the grant; no money
-- moves, so no entry). So credit stays in use only while the default grant is empty, and the
-- credit limit can be lowered exactly as far as posted - held + credit_limit allowed before
-- grants.
create function ledger_net(p_tenant uuid, g grants, p_now timestamptz) returns jsonb
language plpgsql volatile as $$
declare
  v_acc     accounts;
  v_rem     bigint := g.remaining;
  v_part    bigint;
  v_entries jsonb := '[]'::jsonb;
  h         holds;
begin
  select * into v_acc from accounts
   where tenant_id = p_tenant and wallet_id = g.wallet_id and asset = g.asset;
  if v_acc.credit_used > 0 and v_rem > 0 then
    v_part := least(v_rem, v_acc.credit_used);
    update grants set remaining = remaining - v_part, consumed = consumed + v_part
     where tenant_id = p_tenant and grant_id = g.grant_id;
    update accounts set credit_used = credit_used - v_part
     where tenant_id = p_tenant and wallet_id = g.wallet_id and asset = g.asset
    returning * into v_acc;
    v_rem := v_rem - v_part;
    v_entries := v_entries || ledger_entry(g.grant_id, v_part, 'repay');
  end if;
  if v_acc.credit_held > 0 and v_rem > 0 then
    for h in
      select * from holds
       where tenant_id = p_tenant and wallet_id = g.wallet_id and asset = g.asset
         and status = 'pending' and allocations @> '[{"grant_id": "@credit"}]'
         and (categories is null or g.category = any (categories))
       order by created_at, hold_id
    loop
      v_part := least(v_rem, ledger_alloc_amount(h.allocations, '@credit'));
      update holds set allocations = ledger_alloc_move(allocations, '@credit', g.grant_id, v_part)
       where tenant_id = p_tenant and hold_id = h.hold_id;
      update grants set remaining = remaining - v_part, held = held + v_part
       where tenant_id = p_tenant and grant_id = g.grant_id;
      update accounts set credit_held = credit_held - v_part
       where tenant_id = p_tenant and wallet_id = g.wallet_id and asset = g.asset;
      v_rem := v_rem - v_part;
      exit when v_rem = 0;
    end loop;
  end if;
  return v_entries;
end $$;

-- Gives money back to one grant: p_unheld leaves its held (of which p_consume is consumed, as
-- a capture does, and the rest returns to remaining), p_unconsume is a refund of what it paid.
-- Returns the journal entries, and whether the grant is expired or voided, in which case the
-- caller posts it to @breakage after its own journal row. p_net: the account uses credit, so
-- money landing in the default grant repays it (ledger_net).
create function ledger_grant_back(p_tenant uuid, p_grant text, p_now timestamptz,
                                  p_unheld bigint, p_consume bigint, p_unconsume bigint,
                                  p_net boolean, out o_entries jsonb, out o_dead boolean)
language plpgsql volatile as $$
declare
  g      grants;
  v_back bigint := p_unheld - p_consume + p_unconsume;
begin
  update grants
     set held = held - p_unheld, consumed = consumed + p_consume - p_unconsume,
         remaining = remaining + v_back
   where tenant_id = p_tenant and grant_id = p_grant
  returning * into g;
  if not found then
    raise exception 'ledger_grant_back: grant % not found', p_grant;
  end if;
  o_entries := '[]'::jsonb;
  if p_consume > 0 then
    o_entries := o_entries || ledger_entry(p_grant, p_consume, 'draw');
  end if;
  if p_unheld > p_consume then
    o_entries := o_entries || ledger_entry(p_grant, p_unheld - p_consume, 'return');
  end if;
  if p_unconsume > 0 then
    o_entries := o_entries || ledger_entry(p_grant, p_unconsume, 'refund');
  end if;
  o_dead := v_back > 0 and ledger_grant_dead(g, p_now);
  if v_back > 0 and not o_dead and g.is_default and p_net then
    o_entries := o_entries || ledger_net(p_tenant, g, p_now);
  end if;
end $$;

-- Credits new money (op `credit`, or `overflow` for a refund) to the wallet's default grant
-- for the asset, creating it on first use. The account must exist. p_net as above.
create function ledger_credit_default(p_tenant uuid, p_wallet text, p_asset text,
                                      p_amount bigint, p_op text, p_now timestamptz,
                                      p_net boolean) returns jsonb
language plpgsql volatile as $$
declare
  g grants;
begin
  update grants set amount = amount + p_amount, remaining = remaining + p_amount
   where tenant_id = p_tenant and wallet_id = p_wallet and asset = p_asset
     and is_default and voided_at is null
  returning * into g;
  if not found then
    insert into grants (tenant_id, grant_id, wallet_id, asset, category, priority, is_default,
                        amount, remaining, starts_at, created_at)
    values (p_tenant, 'grant_' || ledger_uuidv7(p_now), p_wallet, p_asset, 'default', 100, true,
            p_amount, p_amount, '-infinity', p_now)
    returning * into g;
  end if;
  if p_net then
    return jsonb_build_array(ledger_entry(g.grant_id, p_amount, p_op)) || ledger_net(p_tenant, g, p_now);
  end if;
  return jsonb_build_array(ledger_entry(g.grant_id, p_amount, p_op));
end $$;

-- Takes p_amount from the account's eligible grants in consumption order (op `draw`: consumed,
-- or `hold`: reserved), and what they lack from the credit line. Returns the journal entries,
-- the credit line's last as `@credit`, or null, having changed nothing, when the grants and
-- the credit line together cannot pay. The caller updates the account.
create function ledger_draw(p_tenant uuid, p_wallet text, p_asset text, p_amount bigint,
                            p_categories text[], p_now timestamptz, p_op text) returns jsonb
language plpgsql volatile as $$
declare
  v_ids     text[] := '{}';
  v_takes   bigint[] := '{}';
  v_sum     bigint := 0;
  v_headroom bigint;
  v_entries jsonb := '[]'::jsonb;
  v_first   text;
  v_rem     bigint;
  g         record;
begin
  -- The first grant in the order covers it: always so for a funded wallet with only its
  -- default grant, so that case costs one index probe and one update.
  select grant_id, remaining into v_first, v_rem from grants
   where tenant_id = p_tenant and wallet_id = p_wallet and asset = p_asset and live
     and remaining > 0 and voided_at is null and starts_at <= p_now and expires_key > p_now
     and (p_categories is null or category = any (p_categories))
   order by priority, expires_key, starts_at, created_at, grant_id
   limit 1;
  if v_rem >= p_amount then
    update grants
       set remaining = remaining - p_amount,
           consumed = consumed + case when p_op = 'draw' then p_amount else 0 end,
           held = held + case when p_op = 'hold' then p_amount else 0 end
     where tenant_id = p_tenant and grant_id = v_first;
    return jsonb_build_array(ledger_entry(v_first, p_amount, p_op));
  end if;
  for g in
    select grant_id, remaining from grants
     where tenant_id = p_tenant and wallet_id = p_wallet and asset = p_asset and live
       and remaining > 0 and voided_at is null and starts_at <= p_now and expires_key > p_now
       and (p_categories is null or category = any (p_categories))
     order by priority, expires_key, starts_at, created_at, grant_id
  loop
    v_ids := v_ids || g.grant_id;
    v_takes := v_takes || least(g.remaining, p_amount - v_sum);
    v_sum := v_sum + least(g.remaining, p_amount - v_sum);
    exit when v_sum = p_amount;
  end loop;
  if v_sum < p_amount then
    select credit_limit - credit_used - credit_held into v_headroom from accounts
     where tenant_id = p_tenant and wallet_id = p_wallet and asset = p_asset;
    if coalesce(v_headroom, 0) < p_amount - v_sum then
      return null;
    end if;
  end if;
  if v_sum > 0 then
    update grants g2
       set remaining = g2.remaining - x.take,
           consumed = g2.consumed + case when p_op = 'draw' then x.take else 0 end,
           held = g2.held + case when p_op = 'hold' then x.take else 0 end
      from unnest(v_ids, v_takes) x(grant_id, take)
     where g2.tenant_id = p_tenant and g2.grant_id = x.grant_id;
    select jsonb_agg(ledger_entry(x.grant_id, x.take, p_op) order by x.ord) into v_entries
      from unnest(v_ids, v_takes) with ordinality x(grant_id, take, ord);
  end if;
  if v_sum < p_amount then
    v_entries := v_entries || ledger_entry('@credit', p_amount - v_sum, p_op);
  end if;
  return v_entries;
end $$;

-- A command's category filter: null (every category) when absent or empty.
create function ledger_args_categories(a jsonb) returns text[] language plpgsql immutable as $$
begin
  if jsonb_typeof(a->'categories') = 'array' and jsonb_array_length(a->'categories') > 0 then
    return array(select jsonb_array_elements_text(a->'categories'));
  end if;
  return null;
end $$;

-- INSUFFICIENT_FUNDS with what the wallet could pay in the requested categories (all when
-- null): their spendable grants plus the credit line's headroom.
create function ledger_insufficient_for(p_tenant uuid, p_wallet text, p_asset text,
                                        p_categories text[], p_now timestamptz) returns jsonb
language sql stable as $$
  select ledger_refusal('INSUFFICIENT_FUNDS', 'insufficient funds',
    jsonb_build_object('available', coalesce((
      select (a.credit_limit - a.credit_used - a.credit_held + coalesce((
                select sum(g.remaining) from grants g
                 where g.tenant_id = p_tenant and g.wallet_id = p_wallet and g.asset = p_asset
                   and g.live and g.voided_at is null and g.starts_at <= p_now
                   and g.expires_key > p_now
                   and (p_categories is null or g.category = any (p_categories))), 0))::text
        from accounts a
       where a.tenant_id = p_tenant and a.wallet_id = p_wallet and a.asset = p_asset), '0'))
    || case when p_categories is null then '{}'::jsonb
            else jsonb_build_object('categories', array_to_string(p_categories, ',')) end)
$$;

-- 5. Holds.

-- Voids one pending hold (release or expiry): its allocations go back to their grants (and
-- on to @breakage for grants that expired or were voided meanwhile), journal row, balance,
-- hold status, event. A hold that expires leaves PENDING at its expires_at, whenever a command
-- or the worker gets to it.
create or replace function ledger_void_hold(h holds, p_kind text, p_now timestamptz) returns jsonb
language plpgsql volatile as $$
declare
  v_status  text := case p_kind when 'release' then 'released' else 'expired' end;
  v_hold    holds;
  v_acc     accounts;
  v_credit  bigint := ledger_alloc_amount(h.allocations, '@credit');
  v_net     boolean;
  v_entries jsonb := '[]'::jsonb;
  v_part    jsonb;
  v_dead    boolean;
  v_deads   text[] := '{}';
  e         jsonb;
  v_xfer    transfers;
  v_result  jsonb;
begin
  update holds set status = v_status,
                   closed_at = case when p_kind = 'expire' then h.expires_at else p_now end
   where tenant_id = h.tenant_id and hold_id = h.hold_id and status = 'pending'
  returning * into v_hold;
  if not found then
    raise exception 'ledger_void_hold: hold % is not pending', h.hold_id;
  end if;
  update accounts set debits_pending = debits_pending - h.amount,
                      credit_held = credit_held - v_credit, version = version + 1
   where tenant_id = h.tenant_id and wallet_id = h.wallet_id and asset = h.asset
  returning * into v_acc;
  v_net := v_acc.credit_used > 0 or v_acc.credit_held > 0;
  for e in select value from jsonb_array_elements(h.allocations) loop
    continue when e->>'grant_id' = '@credit';
    select o_entries, o_dead into v_part, v_dead
      from ledger_grant_back(h.tenant_id, e->>'grant_id', p_now, (e->>'amount')::bigint, 0, 0, v_net);
    v_entries := v_entries || v_part;
    if v_dead then
      v_deads := v_deads || (e->>'grant_id');
    end if;
  end loop;
  if v_credit > 0 then
    v_entries := v_entries || ledger_entry('@credit', v_credit, 'return');
  end if;
  if v_net then
    select * into v_acc from accounts
     where tenant_id = h.tenant_id and wallet_id = h.wallet_id and asset = h.asset;
  end if;
  insert into transfers (tenant_id, transfer_id, kind, debit_wallet_id, credit_wallet_id, asset,
                         amount, hold_id, metadata, created_at, grants)
  values (h.tenant_id, ledger_uuidv7(p_now), p_kind, h.wallet_id, '@revenue', h.asset, h.amount,
          h.hold_id, h.metadata, p_now, v_entries)
  returning * into v_xfer;
  v_result := jsonb_build_object('hold', ledger_hold_json(v_hold),
                                 'balance', ledger_balance_at(v_acc, p_now),
                                 'transfer', ledger_transfer_json(v_xfer));
  perform ledger_emit(h.tenant_id, h.wallet_id, 'holdfast.hold.' || v_status, h.asset, p_now,
    v_result || jsonb_build_object('metadata', h.metadata));
  perform ledger_break_grants(h.tenant_id, v_deads, p_now);
  return v_result;
end $$;

-- 6. Commands.

create or replace function ledger_deposit(p_tenant uuid, p_now timestamptz, a jsonb) returns jsonb
language plpgsql volatile as $$
declare
  v_wallet  text   := a->>'wallet_id';
  v_asset   text   := a->>'asset';
  v_amount  bigint := (a->>'amount')::bigint;
  w         wallets;
  v_acc     accounts;
  v_net     boolean;
  v_entries jsonb;
  v_xfer    transfers;
  v_result  jsonb;
begin
  perform ledger_ensure_wallet(p_tenant, v_wallet, p_now);
  w := ledger_lock_wallet(p_tenant, v_wallet);
  if w.status = 'closed' then
    return ledger_refusal('WALLET_CLOSED', 'wallet is closed');
  end if;
  perform ledger_expire_due(p_tenant, v_wallet, v_asset, p_now);
  v_acc := ledger_credit(p_tenant, v_wallet, v_asset, v_amount);
  v_net := v_acc.credit_used > 0 or v_acc.credit_held > 0;
  v_entries := ledger_credit_default(p_tenant, v_wallet, v_asset, v_amount, 'credit', p_now, v_net);
  if v_net then
    select * into v_acc from accounts
     where tenant_id = p_tenant and wallet_id = v_wallet and asset = v_asset;
  end if;
  insert into transfers (tenant_id, transfer_id, kind, debit_wallet_id, credit_wallet_id, asset,
                         amount, metadata, created_at, grants)
  values (p_tenant, (a->>'transfer_id')::uuid, 'deposit', '@world', v_wallet, v_asset, v_amount,
          ledger_command_args_metadata(a), p_now, v_entries)
  returning * into v_xfer;
  v_result := jsonb_build_object('transfer', ledger_transfer_json(v_xfer),
                                 'balance', ledger_balance_at(v_acc, p_now));
  perform ledger_emit(p_tenant, v_wallet, 'holdfast.deposit.completed', v_asset, p_now,
    v_result || jsonb_build_object('metadata', v_xfer.metadata));
  return jsonb_build_object('ok', true) || v_result;
end $$;

-- Debits the account for what ledger_draw took: p_posted to debits_posted (or p_pending to
-- debits_pending), and the credit line's part to credit_used (credit_held).
create function ledger_debit_drawn(p_tenant uuid, p_wallet text, p_asset text, p_posted bigint,
                                   p_pending bigint, p_entries jsonb) returns accounts
language plpgsql volatile as $$
declare
  v_credit bigint := ledger_alloc_amount(p_entries, '@credit');
  v_acc    accounts;
begin
  update accounts
     set debits_posted = debits_posted + p_posted, debits_pending = debits_pending + p_pending,
         credit_used = credit_used + case when p_posted > 0 then v_credit else 0 end,
         credit_held = credit_held + case when p_pending > 0 then v_credit else 0 end,
         version = version + 1
   where tenant_id = p_tenant and wallet_id = p_wallet and asset = p_asset
     and credits_posted - debits_posted - debits_pending + credit_limit >= p_posted + p_pending
  returning * into v_acc;
  if not found then
    raise exception 'ledger_debit_drawn: % % would go below its floor', p_wallet, p_asset;
  end if;
  return v_acc;
end $$;

create or replace function ledger_spend(p_tenant uuid, p_now timestamptz, a jsonb) returns jsonb
language plpgsql volatile as $$
declare
  v_wallet  text   := a->>'wallet_id';
  v_asset   text   := a->>'asset';
  v_amount  bigint := (a->>'amount')::bigint;
  v_cats    text[] := ledger_args_categories(a);
  w         wallets;
  v_refusal jsonb;
  v_entries jsonb;
  v_acc     accounts;
  v_xfer    transfers;
  v_result  jsonb;
begin
  w := ledger_lock_wallet(p_tenant, v_wallet);
  v_refusal := ledger_debit_refusal(w);
  if v_refusal is not null then
    return v_refusal;
  end if;
  perform ledger_expire_due(p_tenant, v_wallet, v_asset, p_now);
  v_entries := ledger_draw(p_tenant, v_wallet, v_asset, v_amount, v_cats, p_now, 'draw');
  if v_entries is null then
    return ledger_insufficient_for(p_tenant, v_wallet, v_asset, v_cats, p_now);
  end if;
  v_acc := ledger_debit_drawn(p_tenant, v_wallet, v_asset, v_amount, 0, v_entries);
  insert into transfers (tenant_id, transfer_id, kind, debit_wallet_id, credit_wallet_id, asset,
                         amount, metadata, created_at, grants)
  values (p_tenant, (a->>'transfer_id')::uuid, 'spend', v_wallet, '@revenue', v_asset, v_amount,
          ledger_command_args_metadata(a), p_now, v_entries)
  returning * into v_xfer;
  v_result := jsonb_build_object('transfer', ledger_transfer_json(v_xfer),
                                 'balance', ledger_balance_at(v_acc, p_now));
  perform ledger_emit(p_tenant, v_wallet, 'holdfast.spend.completed', v_asset, p_now,
    v_result || jsonb_build_object('metadata', v_xfer.metadata));
  return jsonb_build_object('ok', true) || v_result;
end $$;

create or replace function ledger_reserve(p_tenant uuid, p_now timestamptz, a jsonb) returns jsonb
language plpgsql volatile as $$
declare
  v_wallet  text   := a->>'wallet_id';
  v_asset   text   := a->>'asset';
  v_amount  bigint := (a->>'amount')::bigint;
  v_hold_id text   := a->>'hold_id';
  v_cats    text[] := ledger_args_categories(a);
  w         wallets;
  v_refusal jsonb;
  v_entries jsonb;
  v_acc     accounts;
  v_xfer    transfers;
  v_hold    holds;
  v_result  jsonb;
begin
  w := ledger_lock_wallet(p_tenant, v_wallet);
  v_refusal := ledger_debit_refusal(w);
  if v_refusal is not null then
    return v_refusal;
  end if;
  -- A concurrent Reserve that creates the same hold_id makes the insert below fail with a
  -- unique violation; the service retries the call, which then lands here.
  if exists (select 1 from holds where tenant_id = p_tenant and hold_id = v_hold_id) then
    return ledger_refusal('HOLD_ALREADY_EXISTS', 'hold_id is already used by another hold');
  end if;
  perform ledger_expire_due(p_tenant, v_wallet, v_asset, p_now);
  v_entries := ledger_draw(p_tenant, v_wallet, v_asset, v_amount, v_cats, p_now, 'hold');
  if v_entries is null then
    return ledger_insufficient_for(p_tenant, v_wallet, v_asset, v_cats, p_now);
  end if;
  v_acc := ledger_debit_drawn(p_tenant, v_wallet, v_asset, 0, v_amount, v_entries);
  insert into transfers (tenant_id, transfer_id, kind, debit_wallet_id, credit_wallet_id, asset,
                         amount, hold_id, metadata, created_at, grants)
  values (p_tenant, (a->>'transfer_id')::uuid, 'reserve', v_wallet, '@revenue', v_asset, v_amount,
          v_hold_id, ledger_command_args_metadata(a), p_now, v_entries)
  returning * into v_xfer;
  insert into holds (tenant_id, hold_id, wallet_id, asset, amount, reserve_transfer_id, expires_at,
                     created_at, metadata, allocations, categories)
  values (p_tenant, v_hold_id, v_wallet, v_asset, v_amount, v_xfer.transfer_id,
          p_now + make_interval(secs => (a->>'ttl_seconds')::int), p_now, v_xfer.metadata,
          ledger_allocations(v_entries), v_cats)
  returning * into v_hold;
  v_result := jsonb_build_object('hold', ledger_hold_json(v_hold),
                                 'balance', ledger_balance_at(v_acc, p_now),
                                 'transfer', ledger_transfer_json(v_xfer));
  perform ledger_emit(p_tenant, v_wallet, 'holdfast.hold.created', v_asset, p_now,
    v_result || jsonb_build_object('metadata', v_hold.metadata));
  return jsonb_build_object('ok', true) || v_result;
end $$;

-- Capture: the hold's own allocations are consumed first, in order; a partial capture gives
-- the rest back to the same grants; an over-capture takes the excess from the current order
-- (with the Reserve's categories), or fails with INSUFFICIENT_FUNDS, changing nothing.
create or replace function ledger_capture(p_tenant uuid, p_now timestamptz, a jsonb) returns jsonb
language plpgsql volatile as $$
declare
  v_refusal jsonb;
  h         holds;
  v_status  text;
  v_amount  bigint;
  v_left    bigint;
  v_extra   jsonb := '[]'::jsonb;
  v_alloc   bigint;
  v_take    bigint;
  v_credit_take bigint := 0;
  v_credit  bigint;
  v_acc     accounts;
  v_net     boolean;
  v_entries jsonb := '[]'::jsonb;
  v_part    jsonb;
  v_dead    boolean;
  v_deads   text[] := '{}';
  e         jsonb;
  v_xfer    transfers;
  v_result  jsonb;
begin
  v_refusal := ledger_lock_hold(p_tenant, p_now, a);
  if v_refusal is not null then
    return v_refusal;
  end if;
  h := ledger_locked_hold(p_tenant, a);
  select status into v_status from wallets where tenant_id = p_tenant and wallet_id = h.wallet_id;
  if v_status = 'closed' then
    return ledger_refusal('WALLET_CLOSED', 'wallet is closed');
  end if;
  v_amount := coalesce((a->>'amount')::bigint, h.amount);
  if v_amount > h.amount and v_status = 'frozen' then
    return ledger_refusal('WALLET_FROZEN', 'wallet is frozen: cannot capture beyond the hold');
  end if;
  if v_amount > h.amount then
    v_extra := ledger_draw(p_tenant, h.wallet_id, h.asset, v_amount - h.amount, h.categories,
                           p_now, 'draw');
    if v_extra is null then
      return ledger_insufficient_for(p_tenant, h.wallet_id, h.asset, h.categories, p_now);
    end if;
  end if;
  -- What the hold's credit-line allocation contributes, before any grant is touched.
  v_left := least(v_amount, h.amount);
  for e in select value from jsonb_array_elements(h.allocations) loop
    v_take := least((e->>'amount')::bigint, v_left);
    v_left := v_left - v_take;
    if e->>'grant_id' = '@credit' then
      v_credit_take := v_credit_take + v_take;
    end if;
  end loop;
  v_credit := ledger_alloc_amount(h.allocations, '@credit');
  update accounts
     set debits_pending = debits_pending - h.amount, debits_posted = debits_posted + v_amount,
         credit_held = credit_held - v_credit,
         credit_used = credit_used + v_credit_take + ledger_alloc_amount(v_extra, '@credit'),
         version = version + 1
   where tenant_id = p_tenant and wallet_id = h.wallet_id and asset = h.asset
  returning * into v_acc;
  v_net := v_acc.credit_used > 0 or v_acc.credit_held > 0;
  v_left := least(v_amount, h.amount);
  for e in select value from jsonb_array_elements(h.allocations) loop
    v_alloc := (e->>'amount')::bigint;
    v_take := least(v_alloc, v_left);
    v_left := v_left - v_take;
    if e->>'grant_id' = '@credit' then
      if v_take > 0 then
        v_entries := v_entries || ledger_entry('@credit', v_take, 'draw');
      end if;
      if v_alloc > v_take then
        v_entries := v_entries || ledger_entry('@credit', v_alloc - v_take, 'return');
      end if;
    else
      select o_entries, o_dead into v_part, v_dead
        from ledger_grant_back(p_tenant, e->>'grant_id', p_now, v_alloc, v_take, 0, v_net);
      v_entries := v_entries || v_part;
      if v_dead then
        v_deads := v_deads || (e->>'grant_id');
      end if;
    end if;
  end loop;
  v_entries := v_entries || v_extra;
  if v_net then
    select * into v_acc from accounts
     where tenant_id = p_tenant and wallet_id = h.wallet_id and asset = h.asset;
  end if;
  update holds set status = 'captured', captured_amount = v_amount, closed_at = p_now
   where tenant_id = p_tenant and hold_id = h.hold_id
  returning * into h;
  insert into transfers (tenant_id, transfer_id, kind, debit_wallet_id, credit_wallet_id, asset,
                         amount, hold_id, metadata, created_at, grants)
  values (p_tenant, (a->>'transfer_id')::uuid, 'capture', h.wallet_id, '@revenue', h.asset,
          v_amount, h.hold_id, h.metadata || ledger_command_args_metadata(a), p_now, v_entries)
  returning * into v_xfer;
  v_result := jsonb_build_object('transfer', ledger_transfer_json(v_xfer),
                                 'hold', ledger_hold_json(h),
                                 'balance', ledger_balance_at(v_acc, p_now));
  perform ledger_emit(p_tenant, h.wallet_id, 'holdfast.hold.captured', h.asset, p_now,
    v_result || jsonb_build_object('metadata', v_xfer.metadata));
  perform ledger_break_grants(p_tenant, v_deads, p_now);
  return jsonb_build_object('ok', true) || v_result;
end $$;

create or replace function ledger_extend_hold(p_tenant uuid, p_now timestamptz, a jsonb) returns jsonb
language plpgsql volatile as $$
declare
  v_refusal jsonb;
  h         holds;
  v_acc     accounts;
begin
  v_refusal := ledger_lock_hold(p_tenant, p_now, a);
  if v_refusal is not null then
    return v_refusal;
  end if;
  update holds set expires_at = p_now + make_interval(secs => (a->>'ttl_seconds')::int)
   where tenant_id = p_tenant and hold_id = a->>'hold_id'
  returning * into h;
  select * into v_acc from accounts
   where tenant_id = p_tenant and wallet_id = h.wallet_id and asset = h.asset;
  perform ledger_emit(p_tenant, h.wallet_id, 'holdfast.hold.extended', h.asset, p_now,
    jsonb_build_object('balance', ledger_balance_at(v_acc, p_now), 'hold', ledger_hold_json(h),
                       'metadata', h.metadata));
  return jsonb_build_object('ok', true, 'hold', ledger_hold_json(h));
end $$;

-- What each grant a spend or capture drew from may still get back, latest consumed first.
-- A row from before grants counts as drawn from the credit line: its refund is new money.
create function ledger_refund_plan(t transfers) returns table (grant_id text, refundable bigint)
language sql stable as $$
  with drawn as (
    select e->>'grant_id' as grant_id, sum((e->>'amount')::bigint) as amount, max(ord) as last
      from jsonb_array_elements(coalesce(t.grants,
             jsonb_build_array(ledger_entry('@credit', t.amount, 'draw')))) with ordinality x(e, ord)
     where e->>'op' = 'draw'
     group by 1),
  back as (
    select case when e->>'op' = 'overflow' then '@credit' else e->>'grant_id' end as grant_id,
           sum((e->>'amount')::bigint) as amount
      from transfers r cross join jsonb_array_elements(r.grants) e
     where r.tenant_id = t.tenant_id and r.refund_of = t.transfer_id
       and e->>'op' in ('refund', 'overflow')
     group by 1)
  select d.grant_id, (d.amount - coalesce(b.amount, 0))::bigint
    from drawn d left join back b using (grant_id)
   where d.amount > coalesce(b.amount, 0)
   order by d.last desc
$$;

-- Refund: the money goes back to the grants the refunded transfer drew from, latest consumed
-- first; what lands in an expired or voided grant goes on to @breakage (`breakage` in the
-- answer). The credit line's part repays the overdraft; what the overdraft no longer needs
-- (a deposit repaid it meanwhile) is new money for the default grant.
create or replace function ledger_refund(p_tenant uuid, p_now timestamptz, a jsonb) returns jsonb
language plpgsql volatile as $$
declare
  v_scope     text := a->>'scope_wallet_id';
  t           transfers;
  w           wallets;
  v_remaining bigint;
  v_amount    bigint;
  v_acc       accounts;
  v_left      bigint;
  v_ids       text[] := '{}';
  v_ys        bigint[] := '{}';
  v_y         bigint;
  v_credit    bigint := 0;
  v_repay     bigint;
  v_net       boolean;
  v_entries   jsonb := '[]'::jsonb;
  v_part      jsonb;
  v_dead      boolean;
  v_deads     text[] := '{}';
  p           record;
  v_xfer      transfers;
  v_result    jsonb;
begin
  select * into t from transfers
   where tenant_id = p_tenant and transfer_id = (a->>'refund_transfer_id')::uuid;
  if not found or (v_scope is not null and t.debit_wallet_id <> v_scope) then
    return ledger_refusal('TRANSFER_NOT_FOUND', 'transfer not found');
  end if;
  if t.kind not in ('spend', 'capture') then
    return ledger_refusal('NOT_REFUNDABLE', 'only spend and capture transfers can be refunded',
                          jsonb_build_object('kind', t.kind));
  end if;
  -- Refunds of one transfer serialize on its wallet's lock, so the sums below are current.
  w := ledger_lock_wallet(p_tenant, t.debit_wallet_id);
  if w.status = 'closed' then
    return ledger_refusal('WALLET_CLOSED', 'wallet is closed');
  end if;
  select t.amount - coalesce(sum(r.amount), 0) into v_remaining
    from transfers r where r.tenant_id = p_tenant and r.refund_of = t.transfer_id;
  v_amount := coalesce((a->>'amount')::bigint, v_remaining);
  if v_remaining = 0 or v_amount > v_remaining then
    return ledger_refusal('REFUND_EXCEEDS_REMAINING', 'refund exceeds what remains refundable',
                          jsonb_build_object('remaining', v_remaining::text));
  end if;
  perform ledger_expire_due(p_tenant, t.debit_wallet_id, t.asset, p_now);
  v_left := v_amount;
  for p in select * from ledger_refund_plan(t) loop
    v_y := least(p.refundable, v_left);
    v_ids := v_ids || p.grant_id;
    v_ys := v_ys || v_y;
    if p.grant_id = '@credit' then
      v_credit := v_y;
    end if;
    v_left := v_left - v_y;
    exit when v_left = 0;
  end loop;
  select * into v_acc from accounts
   where tenant_id = p_tenant and wallet_id = t.debit_wallet_id and asset = t.asset;
  v_repay := least(v_credit, v_acc.credit_used);
  update accounts
     set credits_posted = credits_posted + v_amount, credit_used = credit_used - v_repay,
         version = version + 1
   where tenant_id = p_tenant and wallet_id = t.debit_wallet_id and asset = t.asset
  returning * into v_acc;
  v_net := v_acc.credit_used > 0 or v_acc.credit_held > 0;
  for i in 1 .. coalesce(array_length(v_ids, 1), 0) loop
    if v_ids[i] = '@credit' then
      if v_repay > 0 then
        v_entries := v_entries || ledger_entry('@credit', v_repay, 'refund');
      end if;
      if v_ys[i] > v_repay then
        v_entries := v_entries || ledger_credit_default(p_tenant, t.debit_wallet_id, t.asset,
                                                        v_ys[i] - v_repay, 'overflow', p_now, v_net);
      end if;
    else
      select o_entries, o_dead into v_part, v_dead
        from ledger_grant_back(p_tenant, v_ids[i], p_now, 0, 0, v_ys[i], v_net);
      v_entries := v_entries || v_part;
      if v_dead then
        v_deads := v_deads || v_ids[i];
      end if;
    end if;
  end loop;
  select * into v_acc from accounts
   where tenant_id = p_tenant and wallet_id = t.debit_wallet_id and asset = t.asset;
  insert into transfers (tenant_id, transfer_id, kind, debit_wallet_id, credit_wallet_id, asset,
                         amount, hold_id, refund_of, metadata, created_at, grants)
  values (p_tenant, (a->>'transfer_id')::uuid, 'refund', '@revenue', t.debit_wallet_id, t.asset,
          v_amount, t.hold_id, t.transfer_id, ledger_command_args_metadata(a), p_now, v_entries)
  returning * into v_xfer;
  v_result := jsonb_build_object('transfer', ledger_transfer_json(v_xfer),
                                 'balance', ledger_balance_at(v_acc, p_now));
  perform ledger_emit(p_tenant, t.debit_wallet_id, 'holdfast.refund.completed', t.asset, p_now,
    v_result || jsonb_build_object('metadata', v_xfer.metadata));
  return jsonb_build_object('ok', true,
                            'breakage', ledger_break_grants(p_tenant, v_deads, p_now)::text)
      || v_result;
end $$;

-- Locks two wallets in wallet_id order. A destination that does not exist yet is created only
-- after the source passed its checks, so a refused transfer leaves no empty wallet behind. The
-- sender pays from its grants in order; the receiver's default grant is credited.
create or replace function ledger_transfer(p_tenant uuid, p_now timestamptz, a jsonb) returns jsonb
language plpgsql volatile as $$
declare
  v_from    text   := a->>'from_wallet_id';
  v_to      text   := a->>'to_wallet_id';
  v_asset   text   := a->>'asset';
  v_amount  bigint := (a->>'amount')::bigint;
  v_to_new  boolean;
  wf        wallets;
  wt        wallets;
  v_refusal jsonb;
  v_entries jsonb;
  v_from_acc accounts;
  v_to_acc  accounts;
  v_net     boolean;
  v_xfer    transfers;
  v_xjson   jsonb;
  v_data    jsonb;
  v_from_bal jsonb;
  v_to_bal  jsonb;
begin
  v_to_new := not exists (select 1 from wallets where tenant_id = p_tenant and wallet_id = v_to);
  if v_to_new or v_from < v_to then
    wf := ledger_lock_wallet(p_tenant, v_from);
    wt := ledger_lock_wallet(p_tenant, v_to);
  else
    wt := ledger_lock_wallet(p_tenant, v_to);
    wf := ledger_lock_wallet(p_tenant, v_from);
  end if;
  v_refusal := ledger_debit_refusal(wf);
  if v_refusal is not null then
    return v_refusal;
  end if;
  if wt.status = 'closed' then
    return ledger_refusal('WALLET_CLOSED', 'destination wallet is closed');
  end if;
  perform ledger_expire_due(p_tenant, v_from, v_asset, p_now);
  v_entries := ledger_draw(p_tenant, v_from, v_asset, v_amount, null, p_now, 'draw');
  if v_entries is null then
    return ledger_insufficient_for(p_tenant, v_from, v_asset, null, p_now);
  end if;
  v_from_acc := ledger_debit_drawn(p_tenant, v_from, v_asset, v_amount, 0, v_entries);
  if wt.wallet_id is null then
    perform ledger_ensure_wallet(p_tenant, v_to, p_now);
    wt := ledger_lock_wallet(p_tenant, v_to);
  end if;
  perform ledger_expire_due(p_tenant, v_to, v_asset, p_now);
  v_to_acc := ledger_credit(p_tenant, v_to, v_asset, v_amount);
  v_net := v_to_acc.credit_used > 0 or v_to_acc.credit_held > 0;
  v_entries := v_entries
            || ledger_credit_default(p_tenant, v_to, v_asset, v_amount, 'credit', p_now, v_net);
  if v_net then
    select * into v_to_acc from accounts
     where tenant_id = p_tenant and wallet_id = v_to and asset = v_asset;
  end if;
  insert into transfers (tenant_id, transfer_id, kind, debit_wallet_id, credit_wallet_id, asset,
                         amount, metadata, created_at, grants)
  values (p_tenant, (a->>'transfer_id')::uuid, 'transfer', v_from, v_to, v_asset, v_amount,
          ledger_command_args_metadata(a), p_now, v_entries)
  returning * into v_xfer;
  v_xjson := ledger_transfer_json(v_xfer);
  v_data := jsonb_build_object('transfer', v_xjson, 'metadata', v_xfer.metadata);
  v_from_bal := ledger_balance_at(v_from_acc, p_now);
  v_to_bal := ledger_balance_at(v_to_acc, p_now);
  perform ledger_emit(p_tenant, v_from, 'holdfast.transfer.sent', v_asset, p_now,
    v_data || jsonb_build_object('balance', v_from_bal));
  perform ledger_emit(p_tenant, v_to, 'holdfast.transfer.received', v_asset, p_now,
    v_data || jsonb_build_object('balance', v_to_bal));
  return jsonb_build_object('ok', true, 'transfer', v_xjson,
                            'from_balance', v_from_bal, 'to_balance', v_to_bal);
end $$;

-- CreateGrant: @world credits the wallet (journal kind `grant`), creating the wallet on first
-- use like Deposit. A grant that has started repays the posted overdraft first (counted as
-- consumed); a scheduled one repays nothing until money is drawn from it.
create function ledger_create_grant(p_tenant uuid, p_now timestamptz, a jsonb) returns jsonb
language plpgsql volatile as $$
declare
  v_wallet  text        := a->>'wallet_id';
  v_asset   text        := a->>'asset';
  v_amount  bigint      := (a->>'amount')::bigint;
  v_grant   text        := coalesce(nullif(a->>'grant_id', ''), 'grant_' || ledger_uuidv7(p_now));
  v_starts  timestamptz := coalesce((a->>'starts_at')::timestamptz, p_now);
  v_expires timestamptz := (a->>'expires_at')::timestamptz;
  w         wallets;
  v_acc     accounts;
  v_repay   bigint := 0;
  g         grants;
  v_entries jsonb;
  v_xfer    transfers;
  v_result  jsonb;
begin
  if v_expires is not null and v_expires <= v_starts then
    return ledger_refusal('INVALID_FIELD', 'expires_at: must be after starts_at',
                          jsonb_build_object('field', 'expires_at'));
  end if;
  if v_expires is not null and v_expires <= p_now then
    return ledger_refusal('INVALID_FIELD', 'expires_at: must be in the future',
                          jsonb_build_object('field', 'expires_at'));
  end if;
  -- A concurrent CreateGrant with the same grant_id makes the insert below fail with a unique
  -- violation; the service retries the call, which then lands here.
  if exists (select 1 from grants where tenant_id = p_tenant and grant_id = v_grant) then
    return ledger_refusal('GRANT_ALREADY_EXISTS', 'grant_id is already used by another grant');
  end if;
  perform ledger_ensure_wallet(p_tenant, v_wallet, p_now);
  w := ledger_lock_wallet(p_tenant, v_wallet);
  if w.status = 'closed' then
    return ledger_refusal('WALLET_CLOSED', 'wallet is closed');
  end if;
  perform ledger_expire_due(p_tenant, v_wallet, v_asset, p_now);
  v_acc := ledger_credit(p_tenant, v_wallet, v_asset, v_amount);
  if v_starts <= p_now then
    v_repay := least(v_amount, v_acc.credit_used);
  end if;
  insert into grants (tenant_id, grant_id, wallet_id, asset, category, priority, amount,
                      remaining, consumed, starts_at, expires_at, created_at, metadata)
  values (p_tenant, v_grant, v_wallet, v_asset, coalesce(nullif(a->>'category', ''), 'default'),
          coalesce((a->>'priority')::integer, 100), v_amount, v_amount - v_repay, v_repay,
          v_starts, v_expires, p_now, ledger_command_args_metadata(a))
  returning * into g;
  v_entries := jsonb_build_array(ledger_entry(v_grant, v_amount, 'credit'));
  if v_repay > 0 then
    update accounts set credit_used = credit_used - v_repay
     where tenant_id = p_tenant and wallet_id = v_wallet and asset = v_asset
    returning * into v_acc;
    v_entries := v_entries || ledger_entry(v_grant, v_repay, 'repay');
  end if;
  insert into transfers (tenant_id, transfer_id, kind, debit_wallet_id, credit_wallet_id, asset,
                         amount, metadata, created_at, grants)
  values (p_tenant, (a->>'transfer_id')::uuid, 'grant', '@world', v_wallet, v_asset, v_amount,
          g.metadata, p_now, v_entries)
  returning * into v_xfer;
  v_result := jsonb_build_object('grant', ledger_grant_json(g, p_now),
                                 'balance', ledger_balance_at(v_acc, p_now),
                                 'transfer', ledger_transfer_json(v_xfer));
  perform ledger_emit(p_tenant, v_wallet, 'holdfast.grant.created', v_asset, p_now,
    v_result || jsonb_build_object('metadata', g.metadata));
  return jsonb_build_object('ok', true) || v_result;
end $$;

-- VoidGrant: what remains unheld leaves the wallet for @breakage now; what is held stays with
-- its holds, and whatever they give back later goes to @breakage too.
create function ledger_void_grant(p_tenant uuid, p_now timestamptz, a jsonb) returns jsonb
language plpgsql volatile as $$
declare
  v_scope  text := a->>'scope_wallet_id';
  g        grants;
  w        wallets;
  v_acc    accounts;
  v_xfer   transfers;
  v_result jsonb;
begin
  select * into g from grants where tenant_id = p_tenant and grant_id = a->>'grant_id';
  if not found or (v_scope is not null and g.wallet_id <> v_scope) then
    return ledger_refusal('GRANT_NOT_FOUND', 'grant not found');
  end if;
  w := ledger_lock_wallet(p_tenant, g.wallet_id);
  if w.status = 'closed' then
    return ledger_refusal('WALLET_CLOSED', 'wallet is closed');
  end if;
  perform ledger_expire_due(p_tenant, g.wallet_id, g.asset, p_now);
  select * into g from grants where tenant_id = p_tenant and grant_id = g.grant_id;
  if ledger_grant_dead(g, p_now) then
    return ledger_refusal('GRANT_NOT_ACTIVE', 'grant is ' || ledger_grant_status(g, p_now),
                          jsonb_build_object('status', ledger_grant_status(g, p_now)));
  end if;
  update grants set voided_at = p_now where tenant_id = p_tenant and grant_id = g.grant_id;
  v_xfer := ledger_break(p_tenant, g.grant_id, p_now, 'holdfast.grant.voided');
  select * into g from grants where tenant_id = p_tenant and grant_id = g.grant_id;
  select * into v_acc from accounts
   where tenant_id = p_tenant and wallet_id = g.wallet_id and asset = g.asset;
  v_result := jsonb_build_object('grant', ledger_grant_json(g, p_now),
                                 'balance', ledger_balance_at(v_acc, p_now),
                                 'transfer', case when v_xfer.transfer_id is null then null
                                                  else ledger_transfer_json(v_xfer) end);
  if v_xfer.transfer_id is null then
    -- Nothing was left unheld: the event carries no journal row.
    perform ledger_emit(p_tenant, g.wallet_id, 'holdfast.grant.voided', g.asset, p_now,
      jsonb_build_object('balance', v_result->'balance', 'grant', v_result->'grant',
                         'metadata', g.metadata));
  end if;
  return jsonb_build_object('ok', true) || v_result;
end $$;

-- The single entry point of every wallet command.
create or replace function ledger_command(p_tenant uuid, p_command text, p_key text,
                                          p_fingerprint bytea, p_now timestamptz, p_args jsonb)
returns jsonb language plpgsql volatile as $$
declare
  v jsonb;
begin
  v := ledger_idem_begin(p_tenant, p_key, p_command, p_fingerprint, p_now);
  if v is not null then
    return v;
  end if;
  v := case p_command
    when 'Deposit'     then ledger_deposit(p_tenant, p_now, p_args)
    when 'Spend'       then ledger_spend(p_tenant, p_now, p_args)
    when 'Reserve'     then ledger_reserve(p_tenant, p_now, p_args)
    when 'Capture'     then ledger_capture(p_tenant, p_now, p_args)
    when 'Release'     then ledger_release(p_tenant, p_now, p_args)
    when 'ExtendHold'  then ledger_extend_hold(p_tenant, p_now, p_args)
    when 'Refund'      then ledger_refund(p_tenant, p_now, p_args)
    when 'Transfer'    then ledger_transfer(p_tenant, p_now, p_args)
    when 'CreateGrant' then ledger_create_grant(p_tenant, p_now, p_args)
    when 'VoidGrant'   then ledger_void_grant(p_tenant, p_now, p_args)
  end;
  if v is null then
    raise exception 'ledger_command: unknown command %', p_command;
  end if;
  return ledger_idem_finish(p_tenant, p_key, v);
end $$;

-- 7. Wallet admin and reads.

-- Wallet as callers see it: holds past their expiry no longer count as held, and what is left
-- in expired grants no longer counts as the wallet's.
create or replace function ledger_wallet_json(p_tenant uuid, p_wallet text, p_now timestamptz)
returns jsonb language sql stable as $$
  select jsonb_build_object(
    'wallet_id', w.wallet_id, 'status', w.status, 'metadata', w.metadata,
    'event_seq', w.event_seq::text, 'created_at', w.created_at, 'updated_at', w.updated_at,
    'balances', coalesce((
      select jsonb_agg(ledger_balance_read(a, p_now) order by a.asset)
        from accounts a
       where a.tenant_id = w.tenant_id and a.wallet_id = w.wallet_id), '[]'::jsonb))
  from wallets w where w.tenant_id = p_tenant and w.wallet_id = p_wallet
$$;

-- Admin changes to a wallet: status, credit limits, metadata. All checks run before any write,
-- so a refusal changes nothing. A credit limit cannot go below the credit in use (the posted
-- overdraft plus the credit line's part of pending holds).
create or replace function ledger_update_wallet(p_tenant uuid, p_now timestamptz, a jsonb)
returns jsonb language plpgsql volatile as $$
declare
  v_wallet text := a->>'wallet_id';
  v_status text := a->>'status';
  w        wallets;
  l        jsonb;
  v_acc    accounts;
begin
  w := ledger_lock_wallet(p_tenant, v_wallet);
  if w.wallet_id is null then
    return ledger_refusal('WALLET_NOT_FOUND', 'wallet not found');
  end if;
  if w.status = 'closed' and v_status is not null and v_status <> 'closed' then
    return ledger_refusal('WALLET_CLOSED', 'a closed wallet cannot be reopened');
  end if;
  for l in select * from jsonb_array_elements(coalesce(a->'credit_limits', '[]'::jsonb)) loop
    perform ledger_expire_due(p_tenant, v_wallet, l->>'asset', p_now);
    select * into v_acc from accounts
     where tenant_id = p_tenant and wallet_id = v_wallet and asset = l->>'asset';
    if found and v_acc.credit_used + v_acc.credit_held > (l->>'credit_limit')::bigint then
      return ledger_refusal('INSUFFICIENT_FUNDS',
        'credit_limit is below what the wallet already uses',
        jsonb_build_object('asset', l->>'asset',
          'used', (v_acc.credit_used + v_acc.credit_held)::text));
    end if;
  end loop;
  for l in select * from jsonb_array_elements(coalesce(a->'credit_limits', '[]'::jsonb)) loop
    insert into accounts as acc (tenant_id, wallet_id, asset, credit_limit, version)
    values (p_tenant, v_wallet, l->>'asset', (l->>'credit_limit')::bigint, 1)
    on conflict (tenant_id, wallet_id, asset) do update
      set credit_limit = excluded.credit_limit, version = acc.version + 1;
  end loop;
  update wallets
     set status = coalesce(v_status, status),
         metadata = (select coalesce(jsonb_object_agg(key, value), '{}'::jsonb)
                       from jsonb_each(metadata || ledger_command_args_metadata(a))
                      where value <> '""'::jsonb)
   where tenant_id = p_tenant and wallet_id = v_wallet;
  perform ledger_emit(p_tenant, v_wallet, 'holdfast.wallet.updated', '', p_now,
    jsonb_build_object('wallet', ledger_wallet_json(p_tenant, v_wallet, p_now)));
  return jsonb_build_object('ok', true, 'wallet', ledger_wallet_json(p_tenant, v_wallet, p_now));
end $$;

-- GetGrant: the grant, or null when it does not exist or lies outside the key's wallet scope.
create function ledger_get_grant(p_tenant uuid, p_grant text, p_scope text, p_now timestamptz)
returns jsonb language sql stable as $$
  select ledger_grant_json(g, p_now) from grants g
   where g.tenant_id = p_tenant and g.grant_id = p_grant
     and (p_scope is null or g.wallet_id = p_scope)
$$;

-- ListGrants: a wallet's grants (of one asset, or all when p_asset is empty) in consumption
-- order, by asset. Without p_include_closed only grants that are scheduled or active, or
-- exhausted while pending holds still draw on them. p_after: the last grant_id of the previous
-- page (null for the first); a grant of another wallet ends the listing.
create function ledger_list_grants(p_tenant uuid, p_wallet text, p_asset text,
                                   p_include_closed boolean, p_after text, p_limit integer,
                                   p_now timestamptz)
returns setof jsonb language sql stable as $$
  select ledger_grant_json(g, p_now) from grants g
   where g.tenant_id = p_tenant and g.wallet_id = p_wallet
     and (p_asset = '' or g.asset = p_asset)
     and (p_include_closed or (g.live and g.voided_at is null and g.expires_key > p_now))
     and (p_after is null
          or (g.asset, g.priority, g.expires_key, g.starts_at, g.created_at, g.grant_id)
             > (select c.asset, c.priority, c.expires_key, c.starts_at, c.created_at, c.grant_id
                  from grants c
                 where c.tenant_id = p_tenant and c.grant_id = p_after and c.wallet_id = p_wallet))
   order by g.asset, g.priority, g.expires_key, g.starts_at, g.created_at, g.grant_id
   limit p_limit
$$;

-- The grant-expiry pass, beside ledger_expire_batch: posts to @breakage what is left in the
-- expired grants of up to p_wallets_max accounts whose wallet lock is free. Busy wallets are
-- skipped, never waited for: their own commands post their breakage, and the next pass takes
-- them. Under the wallet lock a grant's remainder is posted once, however many passes run.
create function ledger_expire_grants_batch(p_now timestamptz, p_wallets_max integer)
returns table (expired integer, oldest_due timestamptz)
language plpgsql volatile as $$
declare
  c        record;
  v_n      integer := 0;
  v_oldest timestamptz;
begin
  for c in
    select d.tenant_id, d.wallet_id, d.asset, min(d.expires_key) as due
      from (select tenant_id, wallet_id, asset, expires_key from grants
             where live and expires_key <= p_now and remaining > 0
             order by expires_key limit p_wallets_max * 4) d
     group by d.tenant_id, d.wallet_id, d.asset
     order by d.tenant_id, d.wallet_id, d.asset
     limit p_wallets_max
  loop
    perform 1 from wallets where tenant_id = c.tenant_id and wallet_id = c.wallet_id
      for no key update skip locked;
    if found then
      v_n := v_n + ledger_break_expired(c.tenant_id, c.wallet_id, c.asset, p_now);
      v_oldest := least(v_oldest, c.due);
    end if;
  end loop;
  return query select v_n, v_oldest;
end $$;
