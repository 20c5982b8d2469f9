-- The double-entry ledger: wallets, accounts, the append-only journal, holds, idempotency
-- records and the event outbox.
--
-- Locking discipline, which every function below follows: a wallet's row in `wallets` is the
-- mutex for everything of that wallet (its accounts, its holds, its event sequence). A command
-- locks the wallet rows it touches first, in wallet_id order, and only then reads or writes
-- anything else of those wallets. Nothing else is ever locked, so commands cannot deadlock.
--
-- The tenant's system accounts (@world where money enters, @revenue where spent money goes)
-- appear in the journal but keep no balance row: every deposit and every spend of a tenant
-- would otherwise update the same row and serialize the whole tenant on it. Their balances are
-- derived from the journal when needed (see ledger_system_balances).

create table wallets (
  tenant_id  uuid        not null references tenants (id),
  wallet_id  text        not null check (wallet_id ~ '^[A-Za-z0-9_:-]{1,128}$'),
  status     text        not null default 'active' check (status in ('active', 'frozen', 'closed')),
  metadata   jsonb       not null default '{}'::jsonb,
  -- The sequence number of the wallet's last event; events of a wallet are numbered 1, 2, ...
  -- without gaps.
  event_seq  bigint      not null default 0,
  created_at timestamptz not null,
  updated_at timestamptz not null,
  primary key (tenant_id, wallet_id)
);

-- One account per (wallet, asset), in the TigerBeetle style.
-- available = credits_posted - debits_posted - debits_pending + credit_limit, never below 0.
create table accounts (
  tenant_id      uuid   not null,
  wallet_id      text   not null,
  asset          text   not null check (asset ~ '^[A-Z][A-Z0-9_]{0,31}$'),
  credits_posted bigint not null default 0 check (credits_posted >= 0),
  debits_posted  bigint not null default 0 check (debits_posted >= 0),
  debits_pending bigint not null default 0 check (debits_pending >= 0),
  credit_limit   bigint not null default 0 check (credit_limit >= 0),
  version        bigint not null default 0,
  primary key (tenant_id, wallet_id, asset),
  foreign key (tenant_id, wallet_id) references wallets (tenant_id, wallet_id),
  check (credits_posted - debits_posted - debits_pending + credit_limit >= 0)
);

-- The journal. Immutable: the triggers below refuse UPDATE, DELETE and TRUNCATE.
create table transfers (
  tenant_id        uuid        not null,
  transfer_id      uuid        not null,
  kind             text        not null check (kind in
                     ('deposit', 'spend', 'reserve', 'capture', 'release', 'expire', 'refund', 'transfer')),
  debit_wallet_id  text        not null,
  credit_wallet_id text        not null,
  asset            text        not null,
  amount           bigint      not null check (amount > 0),
  hold_id          text,
  refund_of        uuid,
  metadata         jsonb       not null default '{}'::jsonb,
  created_at       timestamptz not null,
  primary key (tenant_id, transfer_id),
  check (debit_wallet_id <> credit_wallet_id)
);

-- ListTransfers reads a wallet's journal newest first; transfer ids are UUIDv7, so they sort by
-- time. System accounts are left out of these indexes: nobody pages through @revenue, and
-- leaving them out keeps every spend of a tenant from inserting into one hot index range.
create index transfers_by_debit_wallet on transfers (tenant_id, debit_wallet_id, transfer_id)
  where debit_wallet_id not like '@%';
create index transfers_by_credit_wallet on transfers (tenant_id, credit_wallet_id, transfer_id)
  where credit_wallet_id not like '@%';
create index transfers_refunds on transfers (tenant_id, refund_of) where refund_of is not null;

create function ledger_refuse_change() returns trigger language plpgsql as $$
begin
  raise exception 'the journal is append-only: % on transfers is refused', tg_op
    using errcode = 'insufficient_privilege';
end $$;

create trigger transfers_no_update before update or delete on transfers
  for each row execute function ledger_refuse_change();
create trigger transfers_no_truncate before truncate on transfers
  for each statement execute function ledger_refuse_change();

create table holds (
  tenant_id           uuid        not null,
  hold_id             text        not null check (hold_id ~ '^[A-Za-z0-9_:-]{1,128}$'),
  wallet_id           text        not null,
  asset               text        not null,
  amount              bigint      not null check (amount > 0),
  captured_amount     bigint      not null default 0 check (captured_amount >= 0),
  status              text        not null default 'pending'
                        check (status in ('pending', 'captured', 'released', 'expired')),
  reserve_transfer_id uuid        not null,
  expires_at          timestamptz not null,
  created_at          timestamptz not null,
  closed_at           timestamptz,
  metadata            jsonb       not null default '{}'::jsonb,
  primary key (tenant_id, hold_id),
  foreign key (tenant_id, wallet_id) references wallets (tenant_id, wallet_id)
);

-- Due holds of one wallet and asset, probed by every debit so that an expired hold never
-- blocks funds even before the expiry worker runs.
create index holds_pending_by_wallet on holds (tenant_id, wallet_id, asset, expires_at)
  where status = 'pending';
-- Due holds of every wallet, for the expiry worker.
create index holds_pending_by_expiry on holds (expires_at) where status = 'pending';
-- ListHolds, newest first.
create index holds_by_wallet on holds (tenant_id, wallet_id, created_at, hold_id);

-- Idempotency records: the fingerprint of the request and the response it got, successes and
-- business refusals alike. `response` is null only inside the transaction that claims the key.
create table idempotency_keys (
  tenant_id       uuid        not null,
  idempotency_key text        not null,
  command         text        not null,
  fingerprint     bytea       not null,
  response        jsonb,
  created_at      timestamptz not null,
  primary key (tenant_id, idempotency_key)
);
create index idempotency_keys_by_age on idempotency_keys (created_at);

-- The transactional outbox: one row per event, written in the same transaction as the change.
-- A relay publishes unpublished rows and marks them; it never relies on ids being committed in
-- order.
create table events (
  event_id    uuid        primary key,
  position    bigint      generated always as identity,
  tenant_id   uuid        not null,
  wallet_id   text        not null,
  seq         bigint      not null,
  type        text        not null,
  asset       text        not null default '',
  occurred_at timestamptz not null,
  data        jsonb       not null,
  published_at timestamptz,
  unique (tenant_id, wallet_id, seq)
);
create index events_unpublished on events (position) where published_at is null;

-- A UUIDv7 (RFC 9562): 48 bits of Unix milliseconds, then random bits, so ids sort by time.
-- PostgreSQL 15 has no built-in generator.
create function ledger_uuidv7(p_at timestamptz) returns uuid language plpgsql volatile as $$
declare
  v_bytes bytea := uuid_send(gen_random_uuid());
  v_ms    bigint := floor(extract(epoch from p_at) * 1000)::bigint;
begin
  for i in 0..5 loop
    v_bytes := set_byte(v_bytes, i, ((v_ms >> (40 - 8 * i)) & 255)::int);
  end loop;
  -- Version 7 in the high nibble of byte 6; gen_random_uuid already set the variant bits.
  v_bytes := set_byte(v_bytes, 6, (get_byte(v_bytes, 6) & 15) | 112);
  return encode(v_bytes, 'hex')::uuid;
end $$;

-- JSON shapes shared by responses, idempotency records and events. Amounts are strings so that
-- int64 values survive JSON intact.
-- p_expired is the sum of holds past their expiry that no command or worker has voided yet:
-- they no longer block funds, so reads leave them out of held.
create function ledger_balance_json(a accounts, p_expired bigint default 0) returns jsonb
language sql immutable as $$
  select jsonb_build_object(
    'asset', a.asset,
    'posted', (a.credits_posted - a.debits_posted)::text,
    'held', (a.debits_pending - p_expired)::text,
    'available',
      (a.credits_posted - a.debits_posted - a.debits_pending + p_expired + a.credit_limit)::text,
    'credit_limit', a.credit_limit::text)
$$;

create function ledger_transfer_json(t transfers) returns jsonb language sql immutable as $$
  select jsonb_build_object(
    'transfer_id', t.transfer_id, 'kind', t.kind,
    'debit_wallet_id', t.debit_wallet_id, 'credit_wallet_id', t.credit_wallet_id,
    'asset', t.asset, 'amount', t.amount::text, 'hold_id', t.hold_id, 'refund_of', t.refund_of,
    'created_at', t.created_at, 'metadata', t.metadata)
$$;

create function ledger_hold_json(h holds) returns jsonb language sql immutable as $$
  select jsonb_build_object(
    'hold_id', h.hold_id, 'wallet_id', h.wallet_id, 'asset', h.asset,
    'amount', h.amount::text, 'captured_amount', h.captured_amount::text, 'status', h.status,
    'reserve_transfer_id', h.reserve_transfer_id, 'expires_at', h.expires_at,
    'created_at', h.created_at, 'closed_at', h.closed_at, 'metadata', h.metadata)
$$;

create function ledger_refusal(p_reason text, p_message text, p_metadata jsonb default '{}'::jsonb)
returns jsonb language sql immutable as $$
  select jsonb_build_object('ok', false, 'reason', p_reason, 'message', p_message,
                            'metadata', p_metadata)
$$;

-- Takes the wallet's lock. Returns null when the wallet does not exist.
create function ledger_lock_wallet(p_tenant uuid, p_wallet text) returns wallets
language sql volatile as $$
  select * from wallets where tenant_id = p_tenant and wallet_id = p_wallet for no key update
$$;

-- Appends an event to the outbox with the wallet's next sequence number. The wallet must be
-- locked by the caller.
create function ledger_emit(p_tenant uuid, p_wallet text, p_type text, p_asset text,
                            p_now timestamptz, p_data jsonb) returns bigint
language plpgsql volatile as $$
declare
  v_seq bigint;
begin
  update wallets set event_seq = event_seq + 1, updated_at = p_now
   where tenant_id = p_tenant and wallet_id = p_wallet
  returning event_seq into v_seq;
  insert into events (event_id, tenant_id, wallet_id, seq, type, asset, occurred_at, data)
  values (ledger_uuidv7(p_now), p_tenant, p_wallet, v_seq, p_type, p_asset, p_now, p_data);
  return v_seq;
end $$;

-- Voids one pending hold (release or expiry): journal row, balance, hold status, event. The
-- wallet must be locked and the hold pending; this is the one code path for both.
create function ledger_void_hold(h holds, p_kind text, p_now timestamptz) returns jsonb
language plpgsql volatile as $$
declare
  v_acc   accounts;
  v_hold  holds;
  v_xfer  transfers;
  v_status text := case p_kind when 'release' then 'released' else 'expired' end;
begin
  update holds set status = v_status, closed_at = p_now
   where tenant_id = h.tenant_id and hold_id = h.hold_id and status = 'pending'
  returning * into v_hold;
  if not found then
    raise exception 'ledger_void_hold: hold % is not pending', h.hold_id;
  end if;
  update accounts set debits_pending = debits_pending - h.amount, version = version + 1
   where tenant_id = h.tenant_id and wallet_id = h.wallet_id and asset = h.asset
  returning * into v_acc;
  insert into transfers (tenant_id, transfer_id, kind, debit_wallet_id, credit_wallet_id, asset,
                         amount, hold_id, metadata, created_at)
  values (h.tenant_id, ledger_uuidv7(p_now), p_kind, h.wallet_id, '@revenue', h.asset, h.amount,
          h.hold_id, h.metadata, p_now)
  returning * into v_xfer;
  perform ledger_emit(h.tenant_id, h.wallet_id, 'holdfast.hold.' || v_status, h.asset, p_now,
    jsonb_build_object('balance', ledger_balance_json(v_acc), 'hold', ledger_hold_json(v_hold),
                       'transfer', ledger_transfer_json(v_xfer), 'metadata', h.metadata));
  return jsonb_build_object('hold', ledger_hold_json(v_hold), 'balance', ledger_balance_json(v_acc),
                            'transfer', ledger_transfer_json(v_xfer));
end $$;

-- Expires the due holds of one wallet and asset. The wallet must be locked.
create function ledger_expire_due(p_tenant uuid, p_wallet text, p_asset text, p_now timestamptz)
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
  return n;
end $$;

-- Idempotency: returns the recorded answer for the key (a replay, or IDEMPOTENCY_KEY_REUSED),
-- or null after claiming the key for this call. A replay is one indexed read: no lock, no write.
create function ledger_idem_begin(p_tenant uuid, p_key text, p_command text, p_fingerprint bytea,
                                  p_now timestamptz) returns jsonb
language plpgsql volatile as $$
declare
  r idempotency_keys;
begin
  select * into r from idempotency_keys where tenant_id = p_tenant and idempotency_key = p_key;
  if not found then
    -- A concurrent call with the same key makes this insert wait for that call's commit, after
    -- which the conflict is seen and the recorded answer read below.
    insert into idempotency_keys (tenant_id, idempotency_key, command, fingerprint, created_at)
    values (p_tenant, p_key, p_command, p_fingerprint, p_now)
    on conflict do nothing;
    if found then
      return null;
    end if;
    select * into r from idempotency_keys where tenant_id = p_tenant and idempotency_key = p_key;
  end if;
  if r.command <> p_command or r.fingerprint <> p_fingerprint then
    return ledger_refusal('IDEMPOTENCY_KEY_REUSED',
      'idempotency_key was already used for a different request');
  end if;
  return r.response || '{"replayed": true}'::jsonb;
end $$;

create function ledger_idem_finish(p_tenant uuid, p_key text, p_response jsonb) returns jsonb
language plpgsql volatile as $$
begin
  update idempotency_keys set response = p_response
   where tenant_id = p_tenant and idempotency_key = p_key;
  return p_response || '{"replayed": false}'::jsonb;
end $$;

-- Refusal for a wallet that may not be debited, or null when it may.
create function ledger_debit_refusal(w wallets) returns jsonb language sql immutable as $$
  select case
    when w.wallet_id is null then ledger_refusal('WALLET_NOT_FOUND', 'wallet not found')
    when w.status = 'frozen' then ledger_refusal('WALLET_FROZEN', 'wallet is frozen')
    when w.status = 'closed' then ledger_refusal('WALLET_CLOSED', 'wallet is closed')
  end
$$;

create function ledger_insufficient(p_tenant uuid, p_wallet text, p_asset text) returns jsonb
language sql stable as $$
  select ledger_refusal('INSUFFICIENT_FUNDS', 'insufficient funds',
    jsonb_build_object('available', coalesce(
      (select (credits_posted - debits_posted - debits_pending + credit_limit)::text
         from accounts where tenant_id = p_tenant and wallet_id = p_wallet and asset = p_asset),
      '0')))
$$;

-- Debits the wallet's account if the floor allows it. Returns null when it does not.
create function ledger_debit(p_tenant uuid, p_wallet text, p_asset text, p_posted bigint,
                             p_pending bigint) returns accounts
language sql volatile as $$
  update accounts
     set debits_posted = debits_posted + p_posted, debits_pending = debits_pending + p_pending,
         version = version + 1
   where tenant_id = p_tenant and wallet_id = p_wallet and asset = p_asset
     and credits_posted - debits_posted - debits_pending + credit_limit >= p_posted + p_pending
  returning *
$$;

-- Credits the wallet's account, creating it on first use.
create function ledger_credit(p_tenant uuid, p_wallet text, p_asset text, p_amount bigint)
returns accounts language sql volatile as $$
  insert into accounts as a (tenant_id, wallet_id, asset, credits_posted, version)
  values (p_tenant, p_wallet, p_asset, p_amount, 1)
  on conflict (tenant_id, wallet_id, asset) do update
    set credits_posted = a.credits_posted + excluded.credits_posted, version = a.version + 1
  returning *
$$;

create function ledger_ensure_wallet(p_tenant uuid, p_wallet text, p_now timestamptz) returns void
language sql volatile as $$
  insert into wallets (tenant_id, wallet_id, created_at, updated_at)
  values (p_tenant, p_wallet, p_now, p_now)
  on conflict do nothing
$$;
