-- Credit grants: a wallet that has nothing but its default grant skips the grants machinery
-- wherever its account's columns say everything the grants would (docs/performance.md,
-- "Credit grants: what a default-grant wallet costs", which also says what is left).
--
-- Measured per command on the database alone (backend CPU of Spend, Reserve and Capture on
-- default-grant wallets, against the schema of before grants), the grants machinery added:
--
-- - JSON shapes that PostgreSQL runs through its SQL-function executor: ledger_transfer_json
--   and ledger_hold_json are SQL functions whose bodies are only stable (jsonb_build_object of
--   a timestamptz), so they are never inlined, and each call that reaches a PL/pgSQL function
--   from there (ledger_grants_json, ledger_allocations_json) costs about 40 µs more than the
--   same expression in PL/pgSQL. ledger_allocations, ledger_allocations_json and
--   ledger_alloc_amount ran a query (jsonb_array_elements) for arrays that hold one entry.
-- - The balance of every answer and event (ledger_balance_at) summed the account's grants in a
--   query, and every read (ledger_balance_read) also joined the lapsed holds' allocations to
--   their grants.
-- - Every debit probed the consumption order and then updated the first grant: two queries
--   where one does.
-- - Every command called ledger_break_expired, a function and a cursor, to find no due grant.
--
-- So:
--
-- 1. accounts.grants_other counts the account's live grants (money left or held) other than
--    its current default grant. A trigger on grants keeps it, in the statement that changes the
--    grant, whatever function that is: creating, voiding, expiring (breakage), exhausting and
--    refilling a grant. When it is 0, the account's columns say everything its grants would:
--    the default grant never expires, is never scheduled and holds every live grant's money,
--    so (docs/grants.md, "Balance") available = posted - held + credit_limit, scheduled = 0,
--    and nothing is about to go to @breakage. The invariant check compares the count with
--    the grants table (invariant 6).
-- 2. The JSON shapes are PL/pgSQL, and their one-entry arrays are built without a query.
-- 3. ledger_balance_at and ledger_balance_read answer from the account's columns when
--    grants_other is 0; otherwise as before.
-- 4. ledger_draw takes from the first grant in the order in one statement when it covers the
--    amount.
-- 5. ledger_expire_due probes for due grants with an index-only existence check before it
--    calls ledger_break_expired.
--
-- Every answer, event and journal row is what it was; only the work to build them changes.

-- 1. The count of live grants other than the default.

alter table accounts
  add column grants_other integer not null default 0 check (grants_other >= 0);

-- Whether a grant counts in grants_other: it is live and it is not the account's current
-- default grant (a voided default grant counts while holds still draw on it).
create function ledger_grant_counts(g grants) returns boolean language sql immutable as $$
  select g.live and not (g.is_default and g.voided_at is null)
$$;

update accounts a
   set grants_other = c.n
  from (select tenant_id, wallet_id, asset, count(*)::integer as n from grants g
         where ledger_grant_counts(g) group by 1, 2, 3) c
 where a.tenant_id = c.tenant_id and a.wallet_id = c.wallet_id and a.asset = c.asset;

-- The trigger's function: moves the account's count by the grant's change. A grant is created
-- after its account (ledger_credit runs first in every command that creates one).
create function ledger_grants_other_count() returns trigger language plpgsql as $$
declare
  v_delta integer := (case when ledger_grant_counts(new) then 1 else 0 end)
                   - (case when tg_op = 'UPDATE' and ledger_grant_counts(old) then 1 else 0 end);
begin
  update accounts set grants_other = grants_other + v_delta
   where tenant_id = new.tenant_id and wallet_id = new.wallet_id and asset = new.asset;
  if not found then
    raise exception 'ledger_grants_other_count: grant % has no account', new.grant_id;
  end if;
  return null;
end $$;

-- The WHEN clauses keep the common update (a draw from, or a credit to, the default grant)
-- free of any trigger call.
create trigger grants_other_insert after insert on grants
  for each row when (new.live and not (new.is_default and new.voided_at is null))
  execute function ledger_grants_other_count();
create trigger grants_other_update after update on grants
  for each row when ((old.live and not (old.is_default and old.voided_at is null))
                     is distinct from (new.live and not (new.is_default and new.voided_at is null)))
  execute function ledger_grants_other_count();

-- 2. JSON shapes (0013's bodies), in PL/pgSQL.

create or replace function ledger_transfer_json(t transfers) returns jsonb
language plpgsql immutable as $$
begin
  return jsonb_build_object(
    'transfer_id', t.transfer_id, 'kind', t.kind,
    'debit_wallet_id', t.debit_wallet_id, 'credit_wallet_id', t.credit_wallet_id,
    'asset', t.asset, 'amount', t.amount::text, 'hold_id', t.hold_id, 'refund_of', t.refund_of,
    'created_at', t.created_at, 'metadata', t.metadata,
    'grants', ledger_grants_json(t.grants, ledger_transfer_ops(t.kind)))
    || case when t.kind = 'transfer'
            then jsonb_build_object('credit_grants', ledger_grants_json(t.grants, '{credit,repay}'))
            else '{}'::jsonb end
    || case when t.usage_id is not null
            then jsonb_build_object('usage_id', t.usage_id, 'model', t.model, 'token_class', t.token_class)
            else '{}'::jsonb end;
end $$;

create or replace function ledger_hold_json(h holds) returns jsonb
language plpgsql immutable as $$
begin
  return jsonb_build_object(
    'hold_id', h.hold_id, 'wallet_id', h.wallet_id, 'asset', h.asset,
    'amount', h.amount::text, 'captured_amount', h.captured_amount::text, 'status', h.status,
    'reserve_transfer_id', h.reserve_transfer_id, 'expires_at', h.expires_at,
    'created_at', h.created_at, 'closed_at', h.closed_at, 'metadata', h.metadata,
    'allocations', ledger_allocations_json(h.allocations),
    'categories', to_jsonb(coalesce(h.categories, '{}'::text[])))
    || case when h.rate_card_id is not null
            then jsonb_build_object('rate_card_id', h.rate_card_id,
                                    'rate_card_version', h.rate_card_version, 'model', h.model)
            else '{}'::jsonb end;
end $$;

-- The arrays below hold a handful of entries (one for a wallet with only its default grant),
-- so they are walked by index rather than through a query.

create or replace function ledger_alloc_amount(p_allocs jsonb, p_grant text) returns bigint
language plpgsql immutable as $$
declare
  v bigint := 0;
begin
  for i in 0 .. coalesce(jsonb_array_length(p_allocs), 0) - 1 loop
    if p_allocs->i->>'grant_id' = p_grant then
      v := v + (p_allocs->i->>'amount')::bigint;
    end if;
  end loop;
  return v;
end $$;

create or replace function ledger_allocations(p_entries jsonb) returns jsonb
language plpgsql immutable as $$
declare
  v_out jsonb := '[]'::jsonb;
begin
  for i in 0 .. coalesce(jsonb_array_length(p_entries), 0) - 1 loop
    v_out := v_out || jsonb_build_array(jsonb_build_object(
      'grant_id', p_entries->i->>'grant_id', 'amount', (p_entries->i->>'amount')::bigint));
  end loop;
  return v_out;
end $$;

create or replace function ledger_allocations_json(p_allocs jsonb) returns jsonb
language plpgsql immutable as $$
declare
  v_out jsonb := '[]'::jsonb;
begin
  for i in 0 .. coalesce(jsonb_array_length(p_allocs), 0) - 1 loop
    v_out := v_out || jsonb_build_array(jsonb_build_object(
      'grant_id', p_allocs->i->>'grant_id', 'amount', p_allocs->i->>'amount'));
  end loop;
  return v_out;
end $$;

-- 3. Balances. With grants_other = 0 the default grant is the account's only live grant, so
--    its remaining is (credits - debits + credit_used) - (debits_pending - credit_held) and
--    the sums of ledger_grant_sums are known: active = that, scheduled = dead = 0.

create or replace function ledger_balance_at(a accounts, p_now timestamptz) returns jsonb
language plpgsql stable as $$
declare
  s record;
begin
  if a.grants_other = 0 then
    return jsonb_build_object(
      'asset', a.asset,
      'posted', (a.credits_posted - a.debits_posted)::text,
      'held', a.debits_pending::text,
      'available', (a.credits_posted - a.debits_posted - a.debits_pending + a.credit_limit)::text,
      'credit_limit', a.credit_limit::text,
      'scheduled', '0');
  end if;
  s := ledger_grant_sums(a.tenant_id, a.wallet_id, a.asset, p_now);
  return jsonb_build_object(
    'asset', a.asset,
    'posted', (a.credits_posted - a.debits_posted - s.dead)::text,
    'held', a.debits_pending::text,
    'available', (s.active + a.credit_limit - a.credit_used - a.credit_held)::text,
    'credit_limit', a.credit_limit::text,
    'scheduled', s.scheduled::text);
end $$;

-- Reads: with grants_other = 0 a lapsed hold's allocations are on the default grant or the
-- credit line, neither of which is dead, so only the lapsed holds' sum is needed (the balance
-- of before grants).
create or replace function ledger_balance_read(a accounts, p_now timestamptz) returns jsonb
language plpgsql stable as $$
declare
  v_lapsed bigint;
begin
  if a.grants_other = 0 then
    select coalesce(sum(h.amount), 0)::bigint into v_lapsed
      from holds h
     where h.tenant_id = a.tenant_id and h.wallet_id = a.wallet_id and h.asset = a.asset
       and h.status = 'pending' and h.expires_at <= p_now;
    return jsonb_build_object(
      'asset', a.asset,
      'posted', (a.credits_posted - a.debits_posted)::text,
      'held', (a.debits_pending - v_lapsed)::text,
      'available', (a.credits_posted - a.debits_posted - a.debits_pending + v_lapsed
                    + a.credit_limit)::text,
      'credit_limit', a.credit_limit::text,
      'scheduled', '0');
  end if;
  return (
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
       and h.status = 'pending' and h.expires_at <= p_now) x);
end $$;

-- CreateGrant (0008's body): the balance is read from the account after the grant's insert,
-- which counted the grant in grants_other.
create or replace function ledger_create_grant(p_tenant uuid, p_now timestamptz, a jsonb) returns jsonb
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
     where tenant_id = p_tenant and wallet_id = v_wallet and asset = v_asset;
    v_entries := v_entries || ledger_entry(v_grant, v_repay, 'repay');
  end if;
  select * into v_acc from accounts
   where tenant_id = p_tenant and wallet_id = v_wallet and asset = v_asset;
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

-- 4. Draws (0008's body): the first grant in the order is probed and, when it covers the
--    amount, taken from in the same statement.
create or replace function ledger_draw(p_tenant uuid, p_wallet text, p_asset text, p_amount bigint,
                                       p_categories text[], p_now timestamptz, p_op text) returns jsonb
language plpgsql volatile as $$
declare
  v_ids     text[] := '{}';
  v_takes   bigint[] := '{}';
  v_sum     bigint := 0;
  v_headroom bigint;
  v_entries jsonb := '[]'::jsonb;
  v_first   text;
  g         record;
begin
  -- The first grant in the order covers it: always so for a funded wallet with only its
  -- default grant, so that case costs one statement.
  update grants
     set remaining = remaining - p_amount,
         consumed = consumed + case when p_op = 'draw' then p_amount else 0 end,
         held = held + case when p_op = 'hold' then p_amount else 0 end
   where tenant_id = p_tenant and remaining >= p_amount
     and grant_id = (
       select grant_id from grants
        where tenant_id = p_tenant and wallet_id = p_wallet and asset = p_asset and live
          and remaining > 0 and voided_at is null and starts_at <= p_now and expires_key > p_now
          and (p_categories is null or category = any (p_categories))
        order by priority, expires_key, starts_at, created_at, grant_id
        limit 1)
  returning grant_id into v_first;
  if found then
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

-- 5. Due breakage (0008's body): an index-only probe of the account's live grants by expiry
--    (grants_live_expiry) before the function that posts them.
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
  if exists (select 1 from grants
              where tenant_id = p_tenant and wallet_id = p_wallet and asset = p_asset and live
                and expires_key <= p_now) then
    perform ledger_break_expired(p_tenant, p_wallet, p_asset, p_now);
  end if;
  return n;
end $$;

call holdfast_secure_functions();
