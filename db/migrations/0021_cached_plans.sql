-- The command path's small SQL functions, made cheap to call (docs/performance.md, "Plans
-- made once per connection").
--
-- A LANGUAGE sql function that the planner cannot inline is parsed, analysed and planned again
-- each time a new query or transaction calls it: its plan lives only as long as the calling
-- expression's state. The planner inlines a scalar SQL function only when its body is one
-- SELECT with no FROM, and when an IMMUTABLE function's body holds nothing merely STABLE.
-- Measured at one caller on the benchmark machine, in every command: ledger_lock_wallet
-- 0.12 ms a call, ledger_locked_hold 0.11, ledger_transfer_ops 0.05 and ledger_entry 0.03 (one
-- to two calls), about a quarter of a millisecond of a Spend, Reserve or Capture.
-- test/cached-plans.test.ts runs every kind of command and checks that none of them calls a
-- LANGUAGE sql function any more.
--
-- So: the functions that read or write a table become PL/pgSQL, whose statements are prepared
-- once per connection and kept, each with its signature, its volatility and what it returned
-- (the SQL null of the row type when no row matches); the pure ones are rewritten or declared
-- STABLE so that the planner inlines them; ledger_uuidv7 (one call per event) becomes one
-- inlined expression instead of a PL/pgSQL loop.

create or replace function ledger_lock_wallet(p_tenant uuid, p_wallet text) returns wallets
language plpgsql volatile as $$
declare
  w wallets;
begin
  select * into w from wallets where tenant_id = p_tenant and wallet_id = p_wallet
     for no key update;
  if not found then
    return null;
  end if;
  return w;
end $$;

create or replace function ledger_locked_hold(p_tenant uuid, a jsonb) returns holds
language plpgsql stable as $$
declare
  h holds;
begin
  select * into h from holds where tenant_id = p_tenant and hold_id = a->>'hold_id';
  if not found then
    return null;
  end if;
  return h;
end $$;

create or replace function ledger_credit(p_tenant uuid, p_wallet text, p_asset text, p_amount bigint)
returns accounts language plpgsql volatile as $$
declare
  v accounts;
begin
  insert into accounts as a (tenant_id, wallet_id, asset, credits_posted, version)
  values (p_tenant, p_wallet, p_asset, p_amount, 1)
  on conflict (tenant_id, wallet_id, asset) do update
    set credits_posted = a.credits_posted + excluded.credits_posted, version = a.version + 1
  returning * into v;
  return v;
end $$;

create or replace function ledger_debit(p_tenant uuid, p_wallet text, p_asset text, p_posted bigint,
                                        p_pending bigint) returns accounts
language plpgsql volatile as $$
declare
  v accounts;
begin
  update accounts
     set debits_posted = debits_posted + p_posted, debits_pending = debits_pending + p_pending,
         version = version + 1
   where tenant_id = p_tenant and wallet_id = p_wallet and asset = p_asset
     and credits_posted - debits_posted - debits_pending + credit_limit >= p_posted + p_pending
  returning * into v;
  if not found then
    return null;
  end if;
  return v;
end $$;

create or replace function ledger_ensure_wallet(p_tenant uuid, p_wallet text, p_now timestamptz)
returns void language plpgsql volatile as $$
begin
  insert into wallets (tenant_id, wallet_id, created_at, updated_at)
  values (p_tenant, p_wallet, p_now, p_now)
  on conflict do nothing;
end $$;

create or replace function ledger_usage_account(p_tenant uuid, p_wallet text, p_asset text)
returns accounts language plpgsql stable as $$
declare
  v accounts;
begin
  select * into v from accounts
   where tenant_id = p_tenant and wallet_id = p_wallet and asset = p_asset;
  if not found then
    return null;
  end if;
  return v;
end $$;

-- Array constructors of constants instead of text cast to text[] (an I/O conversion, which
-- the planner counts as STABLE and so would not inline into an IMMUTABLE function).
create or replace function ledger_transfer_ops(p_kind text) returns text[] language sql immutable as $$
  select case p_kind
    when 'reserve'  then array['hold']
    when 'release'  then array['return', 'repay']
    when 'expire'   then array['return', 'repay']
    when 'deposit'  then array['credit', 'repay']
    when 'grant'    then array['credit', 'repay']
    when 'refund'   then array['refund', 'overflow', 'repay']
    when 'breakage' then array['break']
    else array['draw'] end
$$;

-- jsonb_build_object is STABLE (it formats arguments of any type), so an IMMUTABLE function
-- around it is never inlined; declared STABLE, which is what they are, the planner inlines them.
alter function ledger_entry(text, bigint, text) stable;
alter function ledger_grant_json(grants, timestamptz) stable;

-- A UUIDv7 for time p_at in one expression, which the planner inlines, instead of a loop of
-- set_byte calls: the 48-bit Unix millisecond timestamp in hex, version 7, then the random
-- bits and variant of a version 4 UUID after its version nibble.
create or replace function ledger_uuidv7(p_at timestamptz) returns uuid language sql volatile as $$
  select (lpad(to_hex(floor(extract(epoch from p_at) * 1000)::bigint), 12, '0') || '7'
          || substr(replace(gen_random_uuid()::text, '-', ''), 14))::uuid
$$;

call holdfast_secure_functions();
