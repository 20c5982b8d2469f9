-- Credit grants: a wallet whose default grant is its only live grant no longer writes the
-- default grant's row on every debit and every hold's return (docs/performance.md, "Credit
-- grants: what a default-grant wallet costs"; docs/grants.md, "A grant's amounts").
--
-- After 0017 the one grants cost left on such a wallet was the default grant's own row: every
-- Spend, Reserve and Capture (and every hold's release or expiry) updated its remaining, held
-- and consumed, a second row beside the account in a table with six indexes (ledger_draw,
-- about 0.2 ms a command on the database alone).
--
-- While the account's other grants are all spent, expired or voided (grants_other = 0, 0017),
-- those three amounts follow from the account's columns (0008: credits - debits =
-- sum(remaining + held) - credit_used, debits_pending = sum(held) + credit_held, and
-- amount = remaining + held + consumed + expired + voided):
--   held      = debits_pending - credit_held
--   remaining = credits_posted - debits_posted + credit_used - held
--   consumed  = amount - expired - voided - remaining - held
-- So:
--
-- 1. accounts.grants_lazy says that the account's current default grant keeps only its
--    `amount` (and expired, voided) current in its row; its remaining, held and consumed are
--    the account's, as above. Only an account with grants_other = 0 may be lazy (a CHECK).
-- 2. Writers, under the wallet lock: while lazy, ledger_draw answers from the account (one
--    read of the account and of the default grant's id, no write), and ledger_grant_back and
--    ledger_net do not write the default grant's row. Credits to the default grant still add
--    to its amount (and, to keep the row's own CHECK, to its stale remaining).
-- 3. A new account is lazy. A Spend or Reserve (ledger_debit_drawn) makes an account with
--    grants_other = 0 lazy again after one of the commands below; its draw has just brought the
--    row up to date, so the row and the account agree at that point.
-- 4. Commands that can bring a second live grant to the account (CreateGrant, Refund, which
--    can refill a spent grant, and VoidGrant, whose voided default grant stays live while
--    holds draw on it) first write the amounts into the row and clear the flag
--    (ledger_grants_materialise), under the wallet lock and before they change anything, and
--    then run exactly as before (a Refund always does: its repayments of the credit line are
--    computed grant by grant, each from the grant's remaining at that step). The CHECK makes
--    any other path to a second live grant fail. The grants_other trigger cannot do this
--    itself: it fires in the middle of a command, when the account's columns may already
--    hold money that the grants have not received yet (CreateGrant credits the account before
--    it inserts the grant), so the amounts cannot be derived there.
-- 5. Readers compute them: ledger_grant_current (GetGrant, ListGrants), ledger_insufficient_for
--    and the view grants_current (the invariant check).
--
-- Every answer, event and journal row is what it was; only the rows kept change.

-- 1. The flag. Every account with grants_other = 0 has its rows up to date now, and a new
--    account has no grant at all (the default grant it gets from its first credit is created
--    with the amounts the account's columns give).

alter table accounts add column grants_lazy boolean not null default true;
update accounts set grants_lazy = false where grants_other > 0;
alter table accounts add constraint accounts_grants_lazy check (not grants_lazy or grants_other = 0);

-- The default grant's held and remaining while the account is lazy.
create function ledger_default_held(a accounts) returns bigint language sql immutable as $$
  select a.debits_pending - a.credit_held
$$;
create function ledger_default_remaining(a accounts) returns bigint language sql immutable as $$
  select a.credits_posted - a.debits_posted + a.credit_used - a.debits_pending + a.credit_held
$$;

-- A grant with the amounts it has now: the default grant of a lazy account takes them from the
-- account, every other grant is its row.
create function ledger_grant_current(g grants) returns grants language plpgsql stable as $$
declare
  a accounts;
begin
  if g.is_default and g.voided_at is null then
    select * into a from accounts
     where tenant_id = g.tenant_id and wallet_id = g.wallet_id and asset = g.asset;
    if found and a.grants_lazy then
      g.held := ledger_default_held(a);
      g.remaining := ledger_default_remaining(a);
      g.consumed := g.amount - g.expired - g.voided - g.remaining - g.held;
      g.live := g.remaining > 0 or g.held > 0;
    end if;
  end if;
  return g;
end $$;

-- Every grant with its current amounts, for the invariant check (the grants table's columns).
create view grants_current as
select g.tenant_id, g.grant_id, g.wallet_id, g.asset, g.category, g.priority, g.is_default,
       g.amount,
       case when a.grants_lazy then ledger_default_remaining(a) else g.remaining end as remaining,
       case when a.grants_lazy then ledger_default_held(a) else g.held end as held,
       case when a.grants_lazy
            then g.amount - g.expired - g.voided - ledger_default_remaining(a) - ledger_default_held(a)
            else g.consumed end as consumed,
       g.expired, g.voided, g.starts_at, g.expires_at, g.voided_at, g.created_at, g.metadata,
       g.expires_key,
       case when a.grants_lazy then ledger_default_remaining(a) > 0 or ledger_default_held(a) > 0
            else g.live end as live
  from grants g
  left join accounts a
    on a.tenant_id = g.tenant_id and a.wallet_id = g.wallet_id and a.asset = g.asset
   and a.grants_lazy and g.is_default and g.voided_at is null;

-- 4. Writes the default grant's amounts into its row and clears the flag. The wallet must be
--    locked. Nothing to do when the account is not lazy (or does not exist yet).
create function ledger_grants_materialise(p_tenant uuid, p_wallet text, p_asset text)
returns void language plpgsql volatile as $$
declare
  a accounts;
begin
  update accounts set grants_lazy = false
   where tenant_id = p_tenant and wallet_id = p_wallet and asset = p_asset and grants_lazy
  returning * into a;
  if found then
    update grants g
       set held = ledger_default_held(a), remaining = ledger_default_remaining(a),
           consumed = g.amount - g.expired - g.voided - ledger_default_remaining(a)
                    - ledger_default_held(a)
     where g.tenant_id = p_tenant and g.wallet_id = p_wallet and g.asset = p_asset
       and g.is_default and g.voided_at is null;
  end if;
end $$;

-- 2. Draws (0017's body): a lazy account's draw reads the account and its default grant's id,
--    and writes nothing; the entries are those the grants would give (the default grant is
--    the only live grant, started since forever and never expiring, then the credit line).
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
  v_lazy    boolean;
  v_rem     bigint;
  v_cat     text;
  g         record;
begin
  select a.grants_lazy, ledger_default_remaining(a), a.credit_limit - a.credit_used - a.credit_held,
         d.grant_id, d.category
    into v_lazy, v_rem, v_headroom, v_first, v_cat
    from accounts a
    left join grants d
      on d.tenant_id = a.tenant_id and d.wallet_id = a.wallet_id and d.asset = a.asset
     and d.is_default and d.voided_at is null
   where a.tenant_id = p_tenant and a.wallet_id = p_wallet and a.asset = p_asset;
  if v_lazy then
    if v_first is null or not (p_categories is null or v_cat = any (p_categories)) then
      v_rem := 0;
    end if;
    if v_rem >= p_amount then
      return jsonb_build_array(ledger_entry(v_first, p_amount, p_op));
    end if;
    if v_headroom < p_amount - v_rem then
      return null;
    end if;
    if v_rem > 0 then
      return jsonb_build_array(ledger_entry(v_first, v_rem, p_op),
                               ledger_entry('@credit', p_amount - v_rem, p_op));
    end if;
    return jsonb_build_array(ledger_entry('@credit', p_amount, p_op));
  end if;
  v_first := null;
  -- The first grant in the order covers it: one statement.
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

-- 3. Debits the account for what ledger_draw took (0008's body); an account whose only live
--    grant is its default grant becomes lazy here, its row just brought up to date by the draw.
create or replace function ledger_debit_drawn(p_tenant uuid, p_wallet text, p_asset text, p_posted bigint,
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
         grants_lazy = grants_lazy or grants_other = 0,
         version = version + 1
   where tenant_id = p_tenant and wallet_id = p_wallet and asset = p_asset
     and credits_posted - debits_posted - debits_pending + credit_limit >= p_posted + p_pending
  returning * into v_acc;
  if not found then
    raise exception 'ledger_debit_drawn: % % would go below its floor', p_wallet, p_asset;
  end if;
  return v_acc;
end $$;

-- 2. Money landing in the default grant repays the credit line (0008's body): a lazy default
--    grant's remaining is the account's, and its row is not written.
create or replace function ledger_net(p_tenant uuid, g grants, p_now timestamptz) returns jsonb
language plpgsql volatile as $$
declare
  v_acc     accounts;
  v_lazy    boolean;
  v_rem     bigint;
  v_part    bigint;
  v_entries jsonb := '[]'::jsonb;
  h         holds;
begin
  select * into v_acc from accounts
   where tenant_id = p_tenant and wallet_id = g.wallet_id and asset = g.asset;
  v_lazy := v_acc.grants_lazy and g.is_default and g.voided_at is null;
  v_rem := case when v_lazy then ledger_default_remaining(v_acc) else g.remaining end;
  if v_acc.credit_used > 0 and v_rem > 0 then
    v_part := least(v_rem, v_acc.credit_used);
    if not v_lazy then
      update grants set remaining = remaining - v_part, consumed = consumed + v_part
       where tenant_id = p_tenant and grant_id = g.grant_id;
    end if;
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
      if not v_lazy then
        update grants set remaining = remaining - v_part, held = held + v_part
         where tenant_id = p_tenant and grant_id = g.grant_id;
      end if;
      update accounts set credit_held = credit_held - v_part
       where tenant_id = p_tenant and wallet_id = g.wallet_id and asset = g.asset;
      v_rem := v_rem - v_part;
      exit when v_rem = 0;
    end loop;
  end if;
  return v_entries;
end $$;

-- 2. Gives money back to one grant (0008's body): a lazy default grant's row is not written.
create or replace function ledger_grant_back(p_tenant uuid, p_grant text, p_now timestamptz,
                                             p_unheld bigint, p_consume bigint, p_unconsume bigint,
                                             p_net boolean, out o_entries jsonb, out o_dead boolean)
language plpgsql volatile as $$
declare
  g      grants;
  v_back bigint := p_unheld - p_consume + p_unconsume;
begin
  select * into g from grants where tenant_id = p_tenant and grant_id = p_grant;
  if not found then
    raise exception 'ledger_grant_back: grant % not found', p_grant;
  end if;
  if not (g.is_default and g.voided_at is null
          and exists (select 1 from accounts
                       where tenant_id = p_tenant and wallet_id = g.wallet_id and asset = g.asset
                         and grants_lazy)) then
    update grants
       set held = held - p_unheld, consumed = consumed + p_consume - p_unconsume,
           remaining = remaining + v_back
     where tenant_id = p_tenant and grant_id = p_grant
    returning * into g;
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

-- 5. INSUFFICIENT_FUNDS (0008's body) with the grants' current amounts.
create or replace function ledger_insufficient_for(p_tenant uuid, p_wallet text, p_asset text,
                                                   p_categories text[], p_now timestamptz) returns jsonb
language sql stable as $$
  select ledger_refusal('INSUFFICIENT_FUNDS', 'insufficient funds',
    jsonb_build_object('available', coalesce((
      select (a.credit_limit - a.credit_used - a.credit_held + coalesce((
                select sum(case when a.grants_lazy and g.is_default and g.voided_at is null
                                then ledger_default_remaining(a) else g.remaining end)
                  from grants g
                 where g.tenant_id = p_tenant and g.wallet_id = p_wallet and g.asset = p_asset
                   and (g.live or (a.grants_lazy and g.is_default))
                   and g.voided_at is null and g.starts_at <= p_now and g.expires_key > p_now
                   and (p_categories is null or g.category = any (p_categories))), 0))::text
        from accounts a
       where a.tenant_id = p_tenant and a.wallet_id = p_wallet and a.asset = p_asset), '0'))
    || case when p_categories is null then '{}'::jsonb
            else jsonb_build_object('categories', array_to_string(p_categories, ',')) end)
$$;

-- 5. GetGrant and ListGrants (0008's bodies) with the grants' current amounts.
create or replace function ledger_get_grant(p_tenant uuid, p_grant text, p_scope text, p_now timestamptz)
returns jsonb language sql stable as $$
  select ledger_grant_json(ledger_grant_current(g), p_now) from grants g
   where g.tenant_id = p_tenant and g.grant_id = p_grant
     and (p_scope is null or g.wallet_id = p_scope)
$$;

create or replace function ledger_list_grants(p_tenant uuid, p_wallet text, p_asset text,
                                              p_include_closed boolean, p_after text, p_limit integer,
                                              p_now timestamptz)
returns setof jsonb language sql stable as $$
  select ledger_grant_json(c, p_now) from grants g cross join lateral ledger_grant_current(g) c
   where g.tenant_id = p_tenant and g.wallet_id = p_wallet
     and (p_asset = '' or g.asset = p_asset)
     and (p_include_closed or (c.live and g.voided_at is null and g.expires_key > p_now))
     and (p_after is null
          or (g.asset, g.priority, g.expires_key, g.starts_at, g.created_at, g.grant_id)
             > (select x.asset, x.priority, x.expires_key, x.starts_at, x.created_at, x.grant_id
                  from grants x
                 where x.tenant_id = p_tenant and x.grant_id = p_after and x.wallet_id = p_wallet))
   order by g.asset, g.priority, g.expires_key, g.starts_at, g.created_at, g.grant_id
   limit p_limit
$$;

-- 4. The commands that can bring a second live grant to the account write the default grant's
--    amounts into its row first, after their lazy expiry and before any change (bodies of
--    0017, 0008 and 0008).

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
  perform ledger_grants_materialise(p_tenant, v_wallet, v_asset);
  v_acc := ledger_credit(p_tenant, v_wallet, v_asset, v_amount);
  -- An account that ledger_credit has just created has no default grant yet: only its flag.
  perform ledger_grants_materialise(p_tenant, v_wallet, v_asset);
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
  perform ledger_grants_materialise(p_tenant, t.debit_wallet_id, t.asset);
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

create or replace function ledger_void_grant(p_tenant uuid, p_now timestamptz, a jsonb) returns jsonb
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
  perform ledger_grants_materialise(p_tenant, g.wallet_id, g.asset);
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

call holdfast_secure_functions();
