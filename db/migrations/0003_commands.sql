-- The wallet commands. Each runs whole inside one call of ledger_command, so a command is one
-- round trip from the service: idempotency check, locks, floor check, journal row, balance,
-- hold, outbox event and the idempotency record commit together or not at all.
--
-- Arguments arrive as one jsonb object (amounts as decimal strings, validated by the service).
-- Business refusals are returned, not raised, so that they are recorded for replays; only
-- programmer errors raise.

create function ledger_command_args_metadata(a jsonb) returns jsonb language sql immutable as $$
  select coalesce(a->'metadata', '{}'::jsonb)
$$;

create function ledger_deposit(p_tenant uuid, p_now timestamptz, a jsonb) returns jsonb
language plpgsql volatile as $$
declare
  v_wallet text   := a->>'wallet_id';
  v_asset  text   := a->>'asset';
  v_amount bigint := (a->>'amount')::bigint;
  w        wallets;
  v_acc    accounts;
  v_xfer   transfers;
begin
  perform ledger_ensure_wallet(p_tenant, v_wallet, p_now);
  w := ledger_lock_wallet(p_tenant, v_wallet);
  if w.status = 'closed' then
    return ledger_refusal('WALLET_CLOSED', 'wallet is closed');
  end if;
  perform ledger_expire_due(p_tenant, v_wallet, v_asset, p_now);
  v_acc := ledger_credit(p_tenant, v_wallet, v_asset, v_amount);
  insert into transfers (tenant_id, transfer_id, kind, debit_wallet_id, credit_wallet_id, asset,
                         amount, metadata, created_at)
  values (p_tenant, (a->>'transfer_id')::uuid, 'deposit', '@world', v_wallet, v_asset, v_amount,
          ledger_command_args_metadata(a), p_now)
  returning * into v_xfer;
  perform ledger_emit(p_tenant, v_wallet, 'holdfast.deposit.completed', v_asset, p_now,
    jsonb_build_object('balance', ledger_balance_json(v_acc), 'transfer', ledger_transfer_json(v_xfer),
                       'metadata', v_xfer.metadata));
  return jsonb_build_object('ok', true, 'transfer', ledger_transfer_json(v_xfer),
                            'balance', ledger_balance_json(v_acc));
end $$;

create function ledger_spend(p_tenant uuid, p_now timestamptz, a jsonb) returns jsonb
language plpgsql volatile as $$
declare
  v_wallet  text   := a->>'wallet_id';
  v_asset   text   := a->>'asset';
  v_amount  bigint := (a->>'amount')::bigint;
  w         wallets;
  v_refusal jsonb;
  v_acc     accounts;
  v_xfer    transfers;
begin
  w := ledger_lock_wallet(p_tenant, v_wallet);
  v_refusal := ledger_debit_refusal(w);
  if v_refusal is not null then
    return v_refusal;
  end if;
  perform ledger_expire_due(p_tenant, v_wallet, v_asset, p_now);
  v_acc := ledger_debit(p_tenant, v_wallet, v_asset, v_amount, 0);
  if v_acc.tenant_id is null then
    return ledger_insufficient(p_tenant, v_wallet, v_asset);
  end if;
  insert into transfers (tenant_id, transfer_id, kind, debit_wallet_id, credit_wallet_id, asset,
                         amount, metadata, created_at)
  values (p_tenant, (a->>'transfer_id')::uuid, 'spend', v_wallet, '@revenue', v_asset, v_amount,
          ledger_command_args_metadata(a), p_now)
  returning * into v_xfer;
  perform ledger_emit(p_tenant, v_wallet, 'holdfast.spend.completed', v_asset, p_now,
    jsonb_build_object('balance', ledger_balance_json(v_acc), 'transfer', ledger_transfer_json(v_xfer),
                       'metadata', v_xfer.metadata));
  return jsonb_build_object('ok', true, 'transfer', ledger_transfer_json(v_xfer),
                            'balance', ledger_balance_json(v_acc));
end $$;

create function ledger_reserve(p_tenant uuid, p_now timestamptz, a jsonb) returns jsonb
language plpgsql volatile as $$
declare
  v_wallet  text   := a->>'wallet_id';
  v_asset   text   := a->>'asset';
  v_amount  bigint := (a->>'amount')::bigint;
  v_hold_id text   := a->>'hold_id';
  w         wallets;
  v_refusal jsonb;
  v_acc     accounts;
  v_xfer    transfers;
  v_hold    holds;
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
  v_acc := ledger_debit(p_tenant, v_wallet, v_asset, 0, v_amount);
  if v_acc.tenant_id is null then
    return ledger_insufficient(p_tenant, v_wallet, v_asset);
  end if;
  insert into transfers (tenant_id, transfer_id, kind, debit_wallet_id, credit_wallet_id, asset,
                         amount, hold_id, metadata, created_at)
  values (p_tenant, (a->>'transfer_id')::uuid, 'reserve', v_wallet, '@revenue', v_asset, v_amount,
          v_hold_id, ledger_command_args_metadata(a), p_now)
  returning * into v_xfer;
  insert into holds (tenant_id, hold_id, wallet_id, asset, amount, reserve_transfer_id, expires_at,
                     created_at, metadata)
  values (p_tenant, v_hold_id, v_wallet, v_asset, v_amount, v_xfer.transfer_id,
          p_now + make_interval(secs => (a->>'ttl_seconds')::int), p_now, v_xfer.metadata)
  returning * into v_hold;
  perform ledger_emit(p_tenant, v_wallet, 'holdfast.hold.created', v_asset, p_now,
    jsonb_build_object('balance', ledger_balance_json(v_acc), 'hold', ledger_hold_json(v_hold),
                       'transfer', ledger_transfer_json(v_xfer), 'metadata', v_hold.metadata));
  return jsonb_build_object('ok', true, 'hold', ledger_hold_json(v_hold),
                            'balance', ledger_balance_json(v_acc),
                            'transfer', ledger_transfer_json(v_xfer));
end $$;

-- Finds a hold for a command, locks its wallet and expires whatever of that wallet and asset is
-- due. Returns a refusal, or null when the hold is pending; the caller then reads the hold and
-- the wallet, both stable under the lock.
create function ledger_lock_hold(p_tenant uuid, p_now timestamptz, a jsonb) returns jsonb
language plpgsql volatile as $$
declare
  v_scope text := a->>'scope_wallet_id';
  h       holds;
begin
  select * into h from holds where tenant_id = p_tenant and hold_id = a->>'hold_id';
  if not found or (v_scope is not null and h.wallet_id <> v_scope) then
    return ledger_refusal('HOLD_NOT_FOUND', 'hold not found');
  end if;
  perform ledger_lock_wallet(p_tenant, h.wallet_id);
  perform ledger_expire_due(p_tenant, h.wallet_id, h.asset, p_now);
  select * into h from holds where tenant_id = p_tenant and hold_id = h.hold_id;
  if h.status = 'expired' then
    return ledger_refusal('HOLD_EXPIRED', 'hold expired',
                          jsonb_build_object('expires_at', h.expires_at));
  elsif h.status <> 'pending' then
    return ledger_refusal('HOLD_NOT_PENDING', 'hold is ' || h.status,
                          jsonb_build_object('status', h.status));
  end if;
  return null;
end $$;

create function ledger_locked_hold(p_tenant uuid, a jsonb) returns holds language sql stable as $$
  select * from holds where tenant_id = p_tenant and hold_id = a->>'hold_id'
$$;

create function ledger_capture(p_tenant uuid, p_now timestamptz, a jsonb) returns jsonb
language plpgsql volatile as $$
declare
  v_refusal jsonb;
  h         holds;
  v_status  text;
  v_amount  bigint;
  v_acc     accounts;
  v_xfer    transfers;
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
  -- The hold's own funds are already reserved; only an excess beyond it needs the floor.
  update accounts
     set debits_pending = debits_pending - h.amount, debits_posted = debits_posted + v_amount,
         version = version + 1
   where tenant_id = p_tenant and wallet_id = h.wallet_id and asset = h.asset
     and (v_amount <= h.amount
          or credits_posted - debits_posted - debits_pending + credit_limit >= v_amount - h.amount)
  returning * into v_acc;
  if not found then
    return ledger_insufficient(p_tenant, h.wallet_id, h.asset);
  end if;
  update holds set status = 'captured', captured_amount = v_amount, closed_at = p_now
   where tenant_id = p_tenant and hold_id = h.hold_id
  returning * into h;
  insert into transfers (tenant_id, transfer_id, kind, debit_wallet_id, credit_wallet_id, asset,
                         amount, hold_id, metadata, created_at)
  values (p_tenant, (a->>'transfer_id')::uuid, 'capture', h.wallet_id, '@revenue', h.asset,
          v_amount, h.hold_id, h.metadata || ledger_command_args_metadata(a), p_now)
  returning * into v_xfer;
  perform ledger_emit(p_tenant, h.wallet_id, 'holdfast.hold.captured', h.asset, p_now,
    jsonb_build_object('balance', ledger_balance_json(v_acc), 'hold', ledger_hold_json(h),
                       'transfer', ledger_transfer_json(v_xfer), 'metadata', v_xfer.metadata));
  return jsonb_build_object('ok', true, 'transfer', ledger_transfer_json(v_xfer),
                            'hold', ledger_hold_json(h), 'balance', ledger_balance_json(v_acc));
end $$;

create function ledger_release(p_tenant uuid, p_now timestamptz, a jsonb) returns jsonb
language plpgsql volatile as $$
declare
  v_refusal jsonb;
begin
  v_refusal := ledger_lock_hold(p_tenant, p_now, a);
  if v_refusal is not null then
    return v_refusal;
  end if;
  return jsonb_build_object('ok', true)
      || ledger_void_hold(ledger_locked_hold(p_tenant, a), 'release', p_now);
end $$;

create function ledger_extend_hold(p_tenant uuid, p_now timestamptz, a jsonb) returns jsonb
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
    jsonb_build_object('balance', ledger_balance_json(v_acc), 'hold', ledger_hold_json(h),
                       'metadata', h.metadata));
  return jsonb_build_object('ok', true, 'hold', ledger_hold_json(h));
end $$;

create function ledger_refund(p_tenant uuid, p_now timestamptz, a jsonb) returns jsonb
language plpgsql volatile as $$
declare
  v_scope     text := a->>'scope_wallet_id';
  t           transfers;
  w           wallets;
  v_remaining bigint;
  v_amount    bigint;
  v_acc       accounts;
  v_xfer      transfers;
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
  -- Refunds of one transfer serialize on its wallet's lock, so the sum below is current.
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
  v_acc := ledger_credit(p_tenant, t.debit_wallet_id, t.asset, v_amount);
  insert into transfers (tenant_id, transfer_id, kind, debit_wallet_id, credit_wallet_id, asset,
                         amount, hold_id, refund_of, metadata, created_at)
  values (p_tenant, (a->>'transfer_id')::uuid, 'refund', '@revenue', t.debit_wallet_id, t.asset,
          v_amount, t.hold_id, t.transfer_id, ledger_command_args_metadata(a), p_now)
  returning * into v_xfer;
  perform ledger_emit(p_tenant, t.debit_wallet_id, 'holdfast.refund.completed', t.asset, p_now,
    jsonb_build_object('balance', ledger_balance_json(v_acc), 'transfer', ledger_transfer_json(v_xfer),
                       'metadata', v_xfer.metadata));
  return jsonb_build_object('ok', true, 'transfer', ledger_transfer_json(v_xfer),
                            'balance', ledger_balance_json(v_acc));
end $$;

-- Locks two wallets in wallet_id order. A destination that does not exist yet is created only
-- after the source passed its checks, so a refused transfer leaves no empty wallet behind.
create function ledger_transfer(p_tenant uuid, p_now timestamptz, a jsonb) returns jsonb
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
  v_from_acc accounts;
  v_to_acc  accounts;
  v_xfer    transfers;
  v_data    jsonb;
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
  v_from_acc := ledger_debit(p_tenant, v_from, v_asset, v_amount, 0);
  if v_from_acc.tenant_id is null then
    return ledger_insufficient(p_tenant, v_from, v_asset);
  end if;
  if wt.wallet_id is null then
    perform ledger_ensure_wallet(p_tenant, v_to, p_now);
    wt := ledger_lock_wallet(p_tenant, v_to);
  end if;
  perform ledger_expire_due(p_tenant, v_to, v_asset, p_now);
  v_to_acc := ledger_credit(p_tenant, v_to, v_asset, v_amount);
  insert into transfers (tenant_id, transfer_id, kind, debit_wallet_id, credit_wallet_id, asset,
                         amount, metadata, created_at)
  values (p_tenant, (a->>'transfer_id')::uuid, 'transfer', v_from, v_to, v_asset, v_amount,
          ledger_command_args_metadata(a), p_now)
  returning * into v_xfer;
  v_data := jsonb_build_object('transfer', ledger_transfer_json(v_xfer), 'metadata', v_xfer.metadata);
  perform ledger_emit(p_tenant, v_from, 'holdfast.transfer.sent', v_asset, p_now,
    v_data || jsonb_build_object('balance', ledger_balance_json(v_from_acc)));
  perform ledger_emit(p_tenant, v_to, 'holdfast.transfer.received', v_asset, p_now,
    v_data || jsonb_build_object('balance', ledger_balance_json(v_to_acc)));
  return jsonb_build_object('ok', true, 'transfer', ledger_transfer_json(v_xfer),
                            'from_balance', ledger_balance_json(v_from_acc),
                            'to_balance', ledger_balance_json(v_to_acc));
end $$;

-- The single entry point of every wallet command.
create function ledger_command(p_tenant uuid, p_command text, p_key text, p_fingerprint bytea,
                               p_now timestamptz, p_args jsonb) returns jsonb
language plpgsql volatile as $$
declare
  v jsonb;
begin
  v := ledger_idem_begin(p_tenant, p_key, p_command, p_fingerprint, p_now);
  if v is not null then
    return v;
  end if;
  v := case p_command
    when 'Deposit'    then ledger_deposit(p_tenant, p_now, p_args)
    when 'Spend'      then ledger_spend(p_tenant, p_now, p_args)
    when 'Reserve'    then ledger_reserve(p_tenant, p_now, p_args)
    when 'Capture'    then ledger_capture(p_tenant, p_now, p_args)
    when 'Release'    then ledger_release(p_tenant, p_now, p_args)
    when 'ExtendHold' then ledger_extend_hold(p_tenant, p_now, p_args)
    when 'Refund'     then ledger_refund(p_tenant, p_now, p_args)
    when 'Transfer'   then ledger_transfer(p_tenant, p_now, p_args)
  end;
  if v is null then
    raise exception 'ledger_command: unknown command %', p_command;
  end if;
  return ledger_idem_finish(p_tenant, p_key, v);
end $$;

-- Wallet as callers see it: holds past their expiry no longer count as held.
create function ledger_wallet_json(p_tenant uuid, p_wallet text, p_now timestamptz) returns jsonb
language sql stable as $$
  select jsonb_build_object(
    'wallet_id', w.wallet_id, 'status', w.status, 'metadata', w.metadata,
    'event_seq', w.event_seq::text, 'created_at', w.created_at, 'updated_at', w.updated_at,
    'balances', coalesce((
      select jsonb_agg(ledger_balance_json(a, x.expired) order by a.asset)
        from accounts a
        cross join lateral (
          select coalesce(sum(h.amount), 0)::bigint as expired from holds h
           where h.tenant_id = a.tenant_id and h.wallet_id = a.wallet_id and h.asset = a.asset
             and h.status = 'pending' and h.expires_at <= p_now) x
       where a.tenant_id = w.tenant_id and a.wallet_id = w.wallet_id), '[]'::jsonb))
  from wallets w where w.tenant_id = p_tenant and w.wallet_id = p_wallet
$$;

create function ledger_create_wallet(p_tenant uuid, p_now timestamptz, a jsonb) returns jsonb
language plpgsql volatile as $$
begin
  insert into wallets (tenant_id, wallet_id, metadata, created_at, updated_at)
  values (p_tenant, a->>'wallet_id', ledger_command_args_metadata(a), p_now, p_now)
  on conflict do nothing;
  if not found then
    return ledger_refusal('WALLET_ALREADY_EXISTS', 'wallet already exists');
  end if;
  return jsonb_build_object('ok', true,
                            'wallet', ledger_wallet_json(p_tenant, a->>'wallet_id', p_now));
end $$;

-- Admin changes to a wallet: status, credit limits, metadata. All checks run before any write,
-- so a refusal changes nothing.
create function ledger_update_wallet(p_tenant uuid, p_now timestamptz, a jsonb) returns jsonb
language plpgsql volatile as $$
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
    if found and v_acc.credits_posted - v_acc.debits_posted - v_acc.debits_pending
                 + (l->>'credit_limit')::bigint < 0 then
      return ledger_refusal('INSUFFICIENT_FUNDS',
        'credit_limit is below what the wallet already uses',
        jsonb_build_object('asset', l->>'asset',
          'used', (v_acc.debits_posted + v_acc.debits_pending - v_acc.credits_posted)::text));
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

-- Expiry for the worker: voids the due holds of up to p_wallets_max wallets whose lock is free,
-- through the same path as Release. Busy wallets are skipped rather than waited for: their own
-- commands expire their due holds, and the next pass takes them. Never waiting on a lock means
-- two workers cannot block each other or a command.
create function ledger_expire_batch(p_now timestamptz, p_wallets_max integer)
returns table (expired integer, oldest_due timestamptz)
language plpgsql volatile as $$
declare
  c record;
  v_n integer := 0;
  v_oldest timestamptz;
begin
  for c in
    select d.tenant_id, d.wallet_id, d.asset, min(d.expires_at) as due
      from (select tenant_id, wallet_id, asset, expires_at from holds
             where status = 'pending' and expires_at <= p_now
             order by expires_at limit p_wallets_max * 4) d
     group by d.tenant_id, d.wallet_id, d.asset
     order by d.tenant_id, d.wallet_id, d.asset
     limit p_wallets_max
  loop
    perform 1 from wallets where tenant_id = c.tenant_id and wallet_id = c.wallet_id
      for no key update skip locked;
    if found then
      v_n := v_n + ledger_expire_due(c.tenant_id, c.wallet_id, c.asset, p_now);
      v_oldest := least(v_oldest, c.due);
    end if;
  end loop;
  return query select v_n, v_oldest;
end $$;
