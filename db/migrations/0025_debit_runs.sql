-- Group commit runs a batch's Spends, Reserves and Captures of one wallet account as one set
-- (docs/performance.md, "A batch's debits as one set").
--
-- Until now ledger_command_batch (0006, 0022) ran a batch's commands one at a time through
-- ledger_command, so N commands on a hot wallet cost N wallet locks, N expiry probes, N draws,
-- N account and N wallet updates, N idempotency claims and N answers recorded. A set now costs
-- one of each of those, plus multi-row statements (journal rows, holds created and captured,
-- events, idempotency records) of the same rows the one-at-a-time path writes: the same transfer
-- and hold rows, the same events with consecutive sequence numbers, the same answers.
--
-- Which commands run as a set: those of the batch, not yet run, on the same wallet and asset as
-- the first Spend, Reserve or Capture not yet run, in batch order, whose outcome is plain
-- arithmetic on the account:
--   - each carries an idempotency key seen neither before (in idempotency_keys) nor earlier in
--     the batch;
--   - a Spend or a Reserve names no categories, and the account's default grant covers it in
--     full after the set's commands before it; the set stops at the first one it does not
--     cover, which runs alone with every command after it (refusal and credit line included);
--   - a Reserve's hold id belongs to no hold and to no other command of the batch, and its hold
--     outlives every command's time;
--   - a Capture's hold is pending on that account, drawn wholly from the default grant, named by
--     no other command of the batch, and the Capture takes at most its amount.
-- The wallet must be active, the account on its lazy default grant (no other grant, no credit
-- in use or held), no balance alert watching it, and no hold or grant of it due to expire by the
-- latest command's time; otherwise the batch runs one command at a time, as before. Anything
-- that does not join the set runs alone after it, in batch order.
--
-- The set runs at the position of its first command, so a later command of the batch may run
-- before an earlier one that is not in the set. The commands of one group-commit batch are
-- concurrent requests, all waiting for their answers, so any order among them is one they could
-- have arrived in; the answers are those of the commands run one at a time in that order.
-- ExecuteBatch, whose commands apply in request order, does not use this.

-- The wallet and asset a command of a batch works on: its args', or its hold's for a Capture.
create function ledger_batch_account(p_tenant uuid, c jsonb, out o_wallet text, out o_asset text)
language plpgsql stable as $$
begin
  if c->>'command' = 'Capture' then
    select h.wallet_id, h.asset into o_wallet, o_asset from holds h
     where h.tenant_id = p_tenant and h.hold_id = c->'args'->>'hold_id';
  elsif c->>'command' in ('Spend', 'Reserve') then
    o_wallet := c->'args'->>'wallet_id';
    o_asset := c->'args'->>'asset';
  end if;
end $$;

create function ledger_debit_run(p_commands jsonb, p_from integer, p_done boolean[])
returns table (pos integer, result jsonb)
language plpgsql volatile as $$
declare
  c0         jsonb := p_commands->(p_from - 1);
  v_tenant   uuid := (c0->>'tenant_id')::uuid;
  v_wallet   text;
  v_asset    text;
  v_pos      integer[];
  v_names    text[];
  v_amounts  bigint[];
  v_nows     timestamptz[];
  v_holds    text[];
  v_held     bigint[];
  v_until    timestamptz;
  v_max_now  timestamptz;
  v_taken    integer := 0;
  v_free     bigint;
  v_posted   bigint := 0;
  v_pending  bigint := 0;
  v_seq      bigint;
  w          wallets;
  g          grants;
  v_acc      accounts;
  v_a        accounts;
  v_xfers    transfers[];
  v_hold_row holds[];
  v_created  holds[];
  v_hold     holds;
  v_body     jsonb;
  v_entries  jsonb[] := '{}';
  v_balances jsonb[] := '{}';
  v_results  jsonb[] := '{}';
  v_events   jsonb[] := '{}';
begin
  select o_wallet, o_asset into v_wallet, v_asset from ledger_batch_account(v_tenant, c0);
  if v_wallet is null then
    return;
  end if;
  w := ledger_lock_wallet(v_tenant, v_wallet);
  if ledger_debit_refusal(w) is not null then
    return;
  end if;
  select * into v_acc from accounts
   where tenant_id = v_tenant and wallet_id = v_wallet and asset = v_asset for no key update;
  if not found or not v_acc.grants_lazy or v_acc.credit_used <> 0 or v_acc.credit_held <> 0 then
    return;
  end if;
  select * into g from grants d
   where d.tenant_id = v_tenant and d.wallet_id = v_wallet and d.asset = v_asset
     and d.is_default and d.voided_at is null;
  if not found then
    return;
  end if;

  -- The account's own conditions first, at the latest time of the batch's commands not run
  -- yet, so that an account that cannot have a set costs no look at the commands. What
  -- ledger_expire_due would do at any of the commands' times: nothing, or no set (a Capture's
  -- hold is among the pending holds looked at). And no balance alert watches the account: its
  -- trigger reads the account as it is when the events are inserted, which for a set is after
  -- its last command, not after each.
  select max((b.c->>'now')::timestamptz) into v_max_now
    from jsonb_array_elements(p_commands) with ordinality b (c, ord)
   where b.ord >= p_from and not p_done[b.ord];
  if ledger_grant_dead(g, v_max_now)
     or exists (select 1 from balance_alerts al
                 where al.tenant_id = v_tenant and al.wallet_id = any (array['', v_wallet])
                   and al.asset = v_asset)
     or exists (select 1 from holds h
                 where h.tenant_id = v_tenant and h.wallet_id = v_wallet and h.asset = v_asset
                   and h.status = 'pending' and h.expires_at <= v_max_now)
     or exists (select 1 from grants e
                 where e.tenant_id = v_tenant and e.wallet_id = v_wallet and e.asset = v_asset
                   and e.live and e.expires_key <= v_max_now) then
    return;
  end if;

  -- The candidates, in batch order: each key's first command among those not run yet. A
  -- Capture's amount is its hold's when it names none; v_held is the hold's amount.
  select array_agg(x.ord order by x.ord), array_agg(x.c->>'command' order by x.ord),
         array_agg(coalesce((x.c->'args'->>'amount')::bigint, h.amount) order by x.ord),
         array_agg((x.c->>'now')::timestamptz order by x.ord),
         array_agg(x.c->'args'->>'hold_id' order by x.ord), array_agg(h.amount order by x.ord),
         min((x.c->>'now')::timestamptz + make_interval(secs => (x.c->'args'->>'ttl_seconds')::int))
    into v_pos, v_names, v_amounts, v_nows, v_holds, v_held, v_until
    from (select b.c, b.ord::integer as ord,
                 row_number() over (partition by b.c->>'tenant_id', b.c->>'key' order by b.ord) as nth,
                 count(*) over (partition by b.c->>'tenant_id', b.c->'args'->>'hold_id') as holders
            from jsonb_array_elements(p_commands) with ordinality b (c, ord)
           where b.ord >= p_from and not p_done[b.ord]) x
    left join holds h
      on x.c->>'command' = 'Capture' and h.tenant_id = v_tenant and h.hold_id = x.c->'args'->>'hold_id'
   where x.nth = 1 and (x.c->>'tenant_id')::uuid = v_tenant
     and not exists (select 1 from idempotency_keys k
                      where k.tenant_id = v_tenant and k.idempotency_key = x.c->>'key')
     and (   (x.c->>'command' in ('Spend', 'Reserve')
              and x.c->'args'->>'wallet_id' = v_wallet and x.c->'args'->>'asset' = v_asset
              and ledger_args_categories(x.c->'args') is null
              and (x.c->>'command' = 'Spend'
                   or (x.holders = 1
                       and not exists (select 1 from holds o
                                        where o.tenant_id = v_tenant
                                          and o.hold_id = x.c->'args'->>'hold_id'))))
          or (x.c->>'command' = 'Capture' and x.holders = 1
              and h.wallet_id = v_wallet and h.asset = v_asset and h.status = 'pending'
              and coalesce(x.c->'args'->>'scope_wallet_id', v_wallet) = v_wallet
              and h.allocations = jsonb_build_array(jsonb_build_object('grant_id', g.grant_id,
                                                                      'amount', h.amount))
              and coalesce((x.c->'args'->>'amount')::bigint, h.amount) between 1 and h.amount));
  if coalesce(array_length(v_pos, 1), 0) < 2 or v_until <= v_max_now then
    return;
  end if;
  -- One pass in memory: each command in turn, its entries against the default grant as
  -- ledger_draw and ledger_capture_core make them, and the account after it as
  -- ledger_debit_drawn and ledger_capture_core leave it. v_free is what the grant still covers.
  v_free := ledger_default_remaining(v_acc);
  v_a := v_acc;
  for k in 1 .. array_length(v_pos, 1) loop
    if v_names[k] = 'Capture' then
      v_a.debits_pending := v_a.debits_pending - v_held[k];
      v_a.debits_posted := v_a.debits_posted + v_amounts[k];
      v_pending := v_pending - v_held[k];
      v_posted := v_posted + v_amounts[k];
      v_free := v_free + v_held[k] - v_amounts[k];
      v_entries := v_entries || (jsonb_build_array(ledger_entry(g.grant_id, v_amounts[k], 'draw'))
        || case when v_held[k] > v_amounts[k]
                then jsonb_build_array(ledger_entry(g.grant_id, v_held[k] - v_amounts[k], 'return'))
                else '[]'::jsonb end);
    else
      exit when v_amounts[k] is null or v_amounts[k] <= 0 or v_amounts[k] > v_free;
      v_free := v_free - v_amounts[k];
      if v_names[k] = 'Spend' then
        v_a.debits_posted := v_a.debits_posted + v_amounts[k];
        v_posted := v_posted + v_amounts[k];
      else
        v_a.debits_pending := v_a.debits_pending + v_amounts[k];
        v_pending := v_pending + v_amounts[k];
      end if;
      v_entries := v_entries || jsonb_build_array(ledger_entry(g.grant_id, v_amounts[k],
        case v_names[k] when 'Spend' then 'draw' else 'hold' end));
    end if;
    v_taken := k;
    v_a.version := v_a.version + 1;
    v_balances := v_balances || ledger_balance_at(v_a, v_nows[k]);
  end loop;
  if v_taken < 2 then
    return;
  end if;

  update accounts
     set debits_posted = debits_posted + v_posted, debits_pending = debits_pending + v_pending,
         version = version + v_taken, grants_lazy = grants_lazy or grants_other = 0
   where tenant_id = v_tenant and wallet_id = v_wallet and asset = v_asset
     and credits_posted - debits_posted - debits_pending + credit_limit >= v_posted + v_pending;
  if not found then
    raise exception 'ledger_debit_run: % % would go below its floor', v_wallet, v_asset;
  end if;
  update wallets set event_seq = event_seq + v_taken, updated_at = v_nows[v_taken]
   where tenant_id = v_tenant and wallet_id = v_wallet
  returning event_seq - v_taken into v_seq;

  -- The captured holds closed, before their journal rows take their metadata.
  with s as (
    select s.k from generate_subscripts(v_pos[1:v_taken], 1) as s (k)
     where v_names[s.k] = 'Capture'
  ), upd as (
    update holds h
       set status = 'captured', captured_amount = v_amounts[s.k], closed_at = v_nows[s.k]
      from s
     where h.tenant_id = v_tenant and h.hold_id = v_holds[s.k]
    returning h.*
  )
  select array_agg(upd) into v_hold_row from upd;

  -- The key of each row is stamped from the command's own args, not from the transaction.
  perform set_config('holdfast.key_id', '', true);
  with s as (
    select s.k, p_commands->(s.pos - 1) as c,
           (select h from unnest(v_hold_row) h where h.hold_id = v_holds[s.k]) as captured
      from unnest(v_pos[1:v_taken]) with ordinality as s (pos, k)
  ), ins as (
    insert into transfers (tenant_id, transfer_id, kind, debit_wallet_id, credit_wallet_id, asset,
                           amount, hold_id, metadata, created_at, grants, key_id)
    select v_tenant, (s.c->'args'->>'transfer_id')::uuid, lower(v_names[s.k]), v_wallet,
           '@revenue', v_asset, v_amounts[s.k],
           case when v_names[s.k] <> 'Spend' then v_holds[s.k] end,
           case when v_names[s.k] = 'Capture'
                then (s.captured).metadata || ledger_command_args_metadata(s.c->'args')
                else ledger_command_args_metadata(s.c->'args') end,
           v_nows[s.k], v_entries[s.k], nullif(s.c->'args'->>'key_id', '')
      from s order by s.k
    returning *
  )
  select array_agg(ins order by s.k) into v_xfers
    from ins join s on (s.c->'args'->>'transfer_id')::uuid = ins.transfer_id;

  with s as (
    select s.k, p_commands->(s.pos - 1) as c
      from unnest(v_pos[1:v_taken]) with ordinality as s (pos, k)
     where v_names[s.k] = 'Reserve'
  ), ins as (
    insert into holds (tenant_id, hold_id, wallet_id, asset, amount, reserve_transfer_id,
                       expires_at, created_at, metadata, allocations)
    select v_tenant, v_holds[s.k], v_wallet, v_asset, v_amounts[s.k], (v_xfers[s.k]).transfer_id,
           v_nows[s.k] + make_interval(secs => (s.c->'args'->>'ttl_seconds')::int), v_nows[s.k],
           (v_xfers[s.k]).metadata, ledger_allocations(v_entries[s.k])
      from s order by s.k
    returning *
  )
  select array_agg(ins) into v_created from ins;
  v_hold_row := v_hold_row || v_created;

  -- Each answer and event as ledger_spend_core, ledger_reserve_core and ledger_capture_core
  -- build them.
  for k in 1 .. v_taken loop
    if v_names[k] = 'Spend' then
      v_body := jsonb_build_object('transfer', ledger_transfer_json(v_xfers[k]),
                                   'balance', v_balances[k]);
      v_events := v_events || (v_body || jsonb_build_object('metadata', v_xfers[k].metadata));
    else
      select * into v_hold from unnest(v_hold_row) h where h.hold_id = v_holds[k];
      v_body := jsonb_build_object('hold', ledger_hold_json(v_hold), 'balance', v_balances[k],
                                   'transfer', ledger_transfer_json(v_xfers[k]));
      v_events := v_events || (v_body || jsonb_build_object('metadata',
        case v_names[k] when 'Reserve' then v_hold.metadata else v_xfers[k].metadata end));
    end if;
    v_results := v_results || (jsonb_build_object('ok', true) || v_body);
  end loop;

  insert into events (event_id, tenant_id, wallet_id, seq, type, asset, occurred_at, data, key_id)
  select ledger_uuidv7(v_nows[s.k]), v_tenant, v_wallet, v_seq + s.k,
         case v_names[s.k] when 'Spend' then 'holdfast.spend.completed'
                           when 'Reserve' then 'holdfast.hold.created'
                           else 'holdfast.hold.captured' end,
         v_asset, v_nows[s.k], v_events[s.k], nullif(p_commands->(s.pos - 1)->'args'->>'key_id', '')
    from unnest(v_pos[1:v_taken]) with ordinality as s (pos, k)
   order by s.k;

  -- A concurrent transaction holding one of these keys makes this wait for its end; if it
  -- commits, the unique violation aborts the batch, whose commands then run alone and replay.
  insert into idempotency_keys (tenant_id, idempotency_key, command, fingerprint, created_at, response)
  select v_tenant, p_commands->(s.pos - 1)->>'key', v_names[s.k],
         decode(p_commands->(s.pos - 1)->>'fingerprint', 'hex'), v_nows[s.k], v_results[s.k]
    from unnest(v_pos[1:v_taken]) with ordinality as s (pos, k);

  return query
  select s.pos, v_results[s.k] || '{"replayed": false}'::jsonb
    from unnest(v_pos[1:v_taken]) with ordinality as s (pos, k);
end $$;

-- The batch: commands one at a time in batch order, except that at the first Spend, Reserve
-- or Capture of each wallet account the batch's commands of that account that can run as one
-- set do (ledger_debit_run), once.
create or replace function ledger_command_batch(p_commands jsonb) returns jsonb
language plpgsql volatile as $$
declare
  v_count   integer := jsonb_array_length(p_commands);
  v_results jsonb[] := array_fill(null::jsonb, array[v_count]);
  v_done    boolean[] := array_fill(false, array[v_count]);
  v_tried   text[] := '{}';
  v_account text;
  c         jsonb;
  r         record;
begin
  for i in 1 .. v_count loop
    continue when v_done[i];
    c := p_commands->(i - 1);
    if c->>'command' in ('Spend', 'Reserve', 'Capture') then
      select concat_ws('/', c->>'tenant_id', o_wallet, o_asset) into v_account
        from ledger_batch_account((c->>'tenant_id')::uuid, c) where o_wallet is not null;
      if v_account is not null and not v_account = any (v_tried) then
        v_tried := v_tried || v_account;
        for r in select * from ledger_debit_run(p_commands, i, v_done) loop
          v_results[r.pos] := r.result;
          v_done[r.pos] := true;
        end loop;
      end if;
    end if;
    if not v_done[i] then
      v_results[i] := ledger_command(
        (c->>'tenant_id')::uuid, c->>'command', c->>'key', decode(c->>'fingerprint', 'hex'),
        (c->>'now')::timestamptz, c->'args');
      v_done[i] := true;
    end if;
  end loop;
  return to_jsonb(v_results);
end $$;

call holdfast_secure_functions();
