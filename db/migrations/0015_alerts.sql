-- Balance alerts: edge-triggered events when a wallet's available balance in one asset drops
-- below a threshold, and again when it has recovered (docs/alerts.md).
--
-- - An alert (balance_alerts) names a wallet, or every wallet of the tenant (wallet_id ''), an
--   asset, `below` (minor units) and `hysteresis` (>= 0). Per (alert, wallet) the ledger keeps
--   whether the wallet is low and an episode counter (balance_alert_states, a row only once the
--   wallet first went low). When an evaluation finds available < below and the wallet is not
--   low, it becomes low: the episode counter moves on and holdfast.balance.low is emitted. When
--   an evaluation finds available >= below + hysteresis and the wallet is low, it is no longer
--   low and holdfast.balance.recovered is emitted with the same episode. Anything in between
--   emits nothing, so a balance oscillating inside the band [below, below + hysteresis) after a
--   low event stays quiet.
-- - "Available" is what the balance reads answer (ledger_balance_read, 0008): started,
--   unexpired grants plus the credit line's headroom, with holds past their expiry no longer
--   held, at the change's time.
-- - When: every change to a wallet's available balance appends an event to the outbox under the
--   wallet's lock (invariant 5: reserve, capture, release, spend, deposit, refund, transfer,
--   grants, hold expiry and grant expiry by a command or by the expiry passes, credit limits by
--   UpdateWallet, and every command added later). So the one hook is an AFTER INSERT trigger on
--   events: it evaluates the alerts of the event's wallet and asset (every asset for an event
--   without one, holdfast.wallet.updated), in the same transaction, after the change is
--   complete, at the event's occurred_at. No command function changes, and no round trip is
--   added. A tenant without alerts pays one index probe of balance_alerts per event.
-- - Exactly once: states are written only by that trigger, under the wallet's lock, so
--   concurrent commands on a wallet evaluate one after another and a crossing is seen once.
--   Event ids are derived from (alert generation, wallet, episode, kind), so a relay that
--   publishes an event twice, or a webhook worker that receives it twice, sees the same id.
-- - An alert's generation is new when the alert is created, or when Put changes its wallet or
--   asset; its states (and so its episodes) belong to the generation. A deleted and recreated
--   alert therefore never reuses an event id.

-- 1. Schema.

create table balance_alerts (
  tenant_id  uuid        not null references tenants (id),
  alert_id   text        not null check (alert_id ~ '^[A-Za-z0-9_:-]{1,128}$'),
  -- '' for every wallet of the tenant.
  wallet_id  text        not null check (wallet_id = '' or wallet_id ~ '^[A-Za-z0-9_:-]{1,128}$'),
  asset      text        not null check (asset ~ '^[A-Z][A-Z0-9_]{0,31}$'),
  below      bigint      not null check (below > 0),
  hysteresis bigint      not null default 0 check (hysteresis >= 0),
  metadata   jsonb       not null default '{}'::jsonb,
  generation uuid        not null,
  created_at timestamptz not null,
  updated_at timestamptz not null,
  primary key (tenant_id, alert_id),
  -- below + hysteresis, the recovery level, fits in int64.
  check (below <= 9223372036854775807 - hysteresis)
);

-- The alerts an event can concern: its wallet's and the tenant-wide ones ('').
create index balance_alerts_by_wallet on balance_alerts (tenant_id, wallet_id, asset);

create table balance_alert_states (
  tenant_id  uuid        not null,
  generation uuid        not null,
  wallet_id  text        not null,
  low        boolean     not null,
  -- How many times the wallet went low under this generation; the current (or last) episode.
  episode    bigint      not null check (episode >= 1),
  changed_at timestamptz not null,
  primary key (tenant_id, generation, wallet_id)
);

-- 2. JSON shapes. Amounts are strings so that int64 survives JSON.

create function ledger_balance_alert_json(al balance_alerts) returns jsonb
language sql immutable as $$
  select jsonb_build_object(
    'alert_id', al.alert_id, 'wallet_id', al.wallet_id, 'asset', al.asset,
    'below', al.below::text, 'hysteresis', al.hysteresis::text, 'metadata', al.metadata,
    'created_at', al.created_at, 'updated_at', al.updated_at)
$$;

-- The event id of one crossing: a UUID (version 8, RFC 9562) made of the first 128 bits of
-- SHA-256 over the alert's generation, the wallet, the episode and the kind (low, recovered).
create function ledger_alert_event_id(p_generation uuid, p_wallet text, p_episode bigint,
                                      p_kind text) returns uuid
language plpgsql immutable as $$
declare
  v_bytes bytea := substring(sha256(convert_to(
    p_generation::text || ' ' || p_wallet || ' ' || p_episode::text || ' ' || p_kind, 'UTF8')) from 1 for 16);
begin
  v_bytes := set_byte(v_bytes, 6, (get_byte(v_bytes, 6) & 15) | 128);
  v_bytes := set_byte(v_bytes, 8, (get_byte(v_bytes, 8) & 63) | 128);
  return encode(v_bytes, 'hex')::uuid;
end $$;

-- 3. Evaluation. The wallet must be locked by the caller (it is: events are appended under it).

-- Appends holdfast.balance.<kind> for one crossing. It goes through ledger_emit, so the event
-- takes the wallet's next sequence number and whatever else ledger_emit records, and then gets
-- its deterministic id (ledger_emit draws a UUIDv7).
create function ledger_alert_emit(al balance_alerts, p_wallet text, p_kind text, p_episode bigint,
                                  p_balance jsonb, p_now timestamptz) returns void
language plpgsql volatile as $$
declare
  v_seq bigint;
begin
  v_seq := ledger_emit(al.tenant_id, p_wallet, 'holdfast.balance.' || p_kind, al.asset, p_now,
    jsonb_build_object('balance', p_balance, 'alert', ledger_balance_alert_json(al),
                       'episode', p_episode::text, 'metadata', al.metadata));
  update events set event_id = ledger_alert_event_id(al.generation, p_wallet, p_episode, p_kind)
   where tenant_id = al.tenant_id and wallet_id = p_wallet and seq = v_seq;
end $$;

-- Compares one wallet's balance (as ledger_balance_read answers it) with one alert, moves the
-- wallet's state for the alert and emits the crossing, if any.
create function ledger_alert_check(al balance_alerts, p_wallet text, p_balance jsonb,
                                   p_now timestamptz) returns void
language plpgsql volatile as $$
declare
  v_available bigint := (p_balance->>'available')::bigint;
  v_low       boolean;
  v_episode   bigint;
begin
  select low, episode into v_low, v_episode from balance_alert_states
   where tenant_id = al.tenant_id and generation = al.generation and wallet_id = p_wallet;
  if coalesce(v_low, false) then
    if v_available >= al.below + al.hysteresis then
      update balance_alert_states set low = false, changed_at = p_now
       where tenant_id = al.tenant_id and generation = al.generation and wallet_id = p_wallet;
      perform ledger_alert_emit(al, p_wallet, 'recovered', v_episode, p_balance, p_now);
    end if;
  elsif v_available < al.below then
    insert into balance_alert_states as s (tenant_id, generation, wallet_id, low, episode, changed_at)
    values (al.tenant_id, al.generation, p_wallet, true, 1, p_now)
    on conflict (tenant_id, generation, wallet_id) do update
      set low = true, episode = s.episode + 1, changed_at = p_now
    returning episode into v_episode;
    perform ledger_alert_emit(al, p_wallet, 'low', v_episode, p_balance, p_now);
  end if;
end $$;

-- The hook: after each event (other than the alerts' own), the alerts of its wallet and asset
-- (every asset for an event without one) in (asset, alert_id) order, each asset's balance read
-- once. A wallet without an account in the asset has no balance to compare yet. The account
-- row is read into a variable and ledger_balance_read called on it as an expression: called
-- from inside a query instead, the function costs about ten times as much.
create function ledger_alerts_on_event() returns trigger language plpgsql as $$
declare
  al        balance_alerts;
  v_acc     accounts;
  v_asset   text := '';
  v_balance jsonb;
begin
  for al in
    select * from balance_alerts
     where tenant_id = new.tenant_id and wallet_id = any (array['', new.wallet_id])
       and (new.asset = '' or asset = new.asset)
     order by asset, alert_id
  loop
    if al.asset <> v_asset then
      v_asset := al.asset;
      v_balance := null;
      select * into v_acc from accounts
       where tenant_id = new.tenant_id and wallet_id = new.wallet_id and asset = v_asset;
      if found then
        v_balance := ledger_balance_read(v_acc, new.occurred_at);
      end if;
    end if;
    if v_balance is not null then
      perform ledger_alert_check(al, new.wallet_id, v_balance, new.occurred_at);
    end if;
  end loop;
  return null;
end $$;

create trigger events_balance_alerts after insert on events
  for each row when (new.type not like 'holdfast.balance.%')
  execute function ledger_alerts_on_event();

-- 4. The admin entry points. The service records the audit entry in the same transaction.

-- PutBalanceAlert: creates the alert, or replaces an existing one's fields. A new alert is
-- refused with BALANCE_ALERT_LIMIT when the tenant has p_alerts_max already; puts of one tenant
-- take turns on an advisory lock so that two of them cannot both pass the count. A changed
-- wallet or asset starts a new generation (the old one's states are dropped); a changed
-- threshold keeps the states and applies from the wallet's next change. Nothing is evaluated
-- here: the wallet's next change does it.
create function ledger_put_balance_alert(p_tenant uuid, p_now timestamptz, p_alerts_max integer,
                                         a jsonb) returns jsonb
language plpgsql volatile as $$
declare
  v_id    text := a->>'alert_id';
  v_old   balance_alerts;
  v_alert balance_alerts;
begin
  perform pg_advisory_xact_lock(hashtext('holdfast.balance_alerts'), hashtext(p_tenant::text));
  select * into v_old from balance_alerts where tenant_id = p_tenant and alert_id = v_id;
  if not found then
    if (select count(*) from balance_alerts where tenant_id = p_tenant) >= p_alerts_max then
      return ledger_refusal('BALANCE_ALERT_LIMIT',
        format('a tenant may have at most %s balance alerts', p_alerts_max));
    end if;
    insert into balance_alerts (tenant_id, alert_id, wallet_id, asset, below, hysteresis, metadata,
                                generation, created_at, updated_at)
    values (p_tenant, v_id, a->>'wallet_id', a->>'asset', (a->>'below')::bigint,
            coalesce((a->>'hysteresis')::bigint, 0), coalesce(a->'metadata', '{}'::jsonb), gen_random_uuid(),
            p_now, p_now)
    returning * into v_alert;
    return jsonb_build_object('ok', true, 'created', true, 'alert', ledger_balance_alert_json(v_alert));
  end if;
  update balance_alerts
     set wallet_id = a->>'wallet_id', asset = a->>'asset', below = (a->>'below')::bigint,
         hysteresis = coalesce((a->>'hysteresis')::bigint, 0),
         metadata = coalesce(a->'metadata', '{}'::jsonb), updated_at = p_now,
         generation = case when wallet_id = a->>'wallet_id' and asset = a->>'asset' then generation
                           else gen_random_uuid() end
   where tenant_id = p_tenant and alert_id = v_id
  returning * into v_alert;
  if v_alert.generation <> v_old.generation then
    delete from balance_alert_states where tenant_id = p_tenant and generation = v_old.generation;
  end if;
  return jsonb_build_object('ok', true, 'created', false, 'alert', ledger_balance_alert_json(v_alert));
end $$;

-- DeleteBalanceAlert: the deleted alert, or null when there was none. Its states go with it. A
-- command that read the alert just before the delete committed may still emit one crossing of
-- it, and leave a state row of the dead generation, which nothing reads again.
create function ledger_delete_balance_alert(p_tenant uuid, p_alert text) returns jsonb
language plpgsql volatile as $$
declare
  v_alert balance_alerts;
begin
  delete from balance_alerts where tenant_id = p_tenant and alert_id = p_alert
  returning * into v_alert;
  if not found then
    return null;
  end if;
  delete from balance_alert_states where tenant_id = p_tenant and generation = v_alert.generation;
  return ledger_balance_alert_json(v_alert);
end $$;

insert into holdfast_entry_points (function_name, kind) values
  ('ledger_put_balance_alert', 'definer'),
  ('ledger_delete_balance_alert', 'definer');

call holdfast_secure_functions();
