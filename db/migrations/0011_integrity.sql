-- Tamper evidence: an owner role apart from the runtime role, a per-tenant hash chain over the
-- journal, who did it (the API key on every journal row and event), and an append-only audit
-- log of admin actions. See docs/security.md, "Tamper evidence: roles, hash chain and
-- holdfast verify".
--
-- Roles. Migrations run as the owner: the role that owns every table and function here. The
-- processes (ledger, workers, CLI) connect as a login role that is a member of the NOLOGIN
-- group role holdfast_runtime, which this file creates when missing. The runtime role may
-- execute the ledger's entry points (SECURITY DEFINER functions with a fixed search_path, so
-- they write as the owner), read what queries read, and write directly only the tables the
-- service writes itself (API keys, webhooks, billing dead letters, rate cards, the audit log,
-- marking events published, the idempotency sweep). It cannot ALTER a table, DISABLE TRIGGER,
-- or UPDATE, DELETE or INSERT the journal.
--
-- A later migration that adds or replaces functions ends with `call holdfast_secure_functions()`
-- (CONTRIBUTING.md, "Add a migration"): CREATE OR REPLACE FUNCTION resets SECURITY DEFINER and the
-- search_path, and a new function is executable by PUBLIC until the procedure revokes it.

-- 1. The runtime group role. Roles are cluster-wide: the first database migrated creates it,
--    and every other one on the server grants to the same role.

do $$
begin
  if not exists (select 1 from pg_roles where rolname = 'holdfast_runtime') then
    begin
      create role holdfast_runtime nologin;
    exception
      when duplicate_object or unique_violation then
        null; -- Another database's migration created it at the same moment.
      when insufficient_privilege then
        raise exception 'migration 0011 needs the role holdfast_runtime: create it first '
          '(CREATE ROLE holdfast_runtime NOLOGIN, then GRANT holdfast_runtime TO <the processes'' login role>), '
          'or migrate as a role with CREATEROLE';
    end;
  end if;
end $$;

-- Nobody but the owner creates objects in the ledger's schema (PostgreSQL 15 already refuses
-- PUBLIC; older clusters upgraded in place may still allow it).
do $$
begin
  execute format('revoke create on schema %I from public', current_schema());
  execute format('grant usage on schema %I to holdfast_runtime', current_schema());
end $$;

-- 2. Who did it: the API key id of the call that wrote a journal row or an event. The service
--    passes it as args.key_id; the entry points put it in the transaction-local setting
--    holdfast.key_id, which the insert triggers below copy, whatever function inserts the row.
--    Null for what no key caused (hold expiry by the worker, grant expiry).

alter table transfers add column key_id text;
alter table events add column key_id text;

create function ledger_stamp_key() returns trigger language plpgsql as $$
begin
  new.key_id := coalesce(new.key_id, nullif(current_setting('holdfast.key_id', true), ''));
  return new;
end $$;

create trigger transfers_key before insert on transfers
  for each row execute function ledger_stamp_key();
create trigger events_key before insert on events
  for each row execute function ledger_stamp_key();

-- 3. The hash chain. Each journal row has one link in journal_chain: its tenant's sequence
--    number (1, 2, ...), the previous link's hash (32 zero bytes for the first) and
--    row_hash = sha256(prev_hash || canonical row). The canonical row (ledger_chain_canonical)
--    is rebuilt independently by `holdfast verify`.
--
--    Links are made at commit, by a deferred trigger, in the inserting transaction: it locks the
--    tenant's chain head, links the transaction's journal rows in the order they were inserted,
--    and moves the head; the head stays locked until the commit is done, so a tenant's links
--    follow commit order. Linking at commit rather than at insert keeps the head locked for the
--    commit alone instead of the whole command (or group-commit batch): a tenant's journal
--    inserts serialise on the head, and this is what bounds that cost (docs/security.md).

create table journal_chain (
  tenant_id   uuid   not null,
  chain_seq   bigint not null check (chain_seq >= 1),
  transfer_id uuid   not null,
  prev_hash   bytea  not null check (octet_length(prev_hash) = 32),
  row_hash    bytea  not null check (octet_length(row_hash) = 32),
  primary key (tenant_id, chain_seq)
);

-- The last link of each tenant's chain: its chain_seq and row_hash, or (0, 32 zero bytes)
-- before the first.
create table journal_chain_heads (
  tenant_id  uuid        primary key,
  chain_seq  bigint      not null check (chain_seq >= 0),
  head_hash  bytea       not null check (octet_length(head_hash) = 32),
  updated_at timestamptz not null
);

create function ledger_refuse_rewrite() returns trigger language plpgsql as $$
begin
  raise exception '% is append-only: % is refused', tg_table_name, tg_op
    using errcode = 'insufficient_privilege';
end $$;

create trigger journal_chain_append_only before update or delete on journal_chain
  for each row execute function ledger_refuse_rewrite();
create trigger journal_chain_no_truncate before truncate on journal_chain
  for each statement execute function ledger_refuse_rewrite();

-- One field of the canonical row: its UTF-8 length, a colon and the text, or '-' for null, so
-- that no two different rows have the same encoding.
create function ledger_chain_field(p text) returns text language sql immutable as $$
  select case when p is null then '-' else octet_length(p)::text || ':' || p end
$$;

-- The canonical content of a journal row at link p_seq, version 1: every column, as text that
-- does not depend on session settings (timestamps as Unix microseconds, jsonb in its normalised
-- text form). A column added to transfers later is not covered until a new version of this
-- function and of `holdfast verify` covers it.
create function ledger_chain_canonical(t transfers, p_seq bigint) returns text language sql stable as $$
  select 'holdfast.journal.v1'
      || ledger_chain_field(t.tenant_id::text)
      || ledger_chain_field(p_seq::text)
      || ledger_chain_field(t.transfer_id::text)
      || ledger_chain_field(t.kind)
      || ledger_chain_field(t.debit_wallet_id)
      || ledger_chain_field(t.credit_wallet_id)
      || ledger_chain_field(t.asset)
      || ledger_chain_field(t.amount::text)
      || ledger_chain_field(t.hold_id)
      || ledger_chain_field(t.refund_of::text)
      || ledger_chain_field(t.metadata::text)
      || ledger_chain_field((extract(epoch from t.created_at) * 1000000)::bigint::text)
      || ledger_chain_field(t.grants::text)
      || ledger_chain_field(t.key_id)
$$;

create function ledger_chain_hash(p_prev bytea, t transfers, p_seq bigint) returns bytea
language sql stable as $$
  select sha256(p_prev || convert_to(ledger_chain_canonical(t, p_seq), 'UTF8'))
$$;

-- Locks the tenant's chain head, creating it (seq 0, zero hash) before the tenant's first link.
create function ledger_chain_lock_head(p_tenant uuid) returns journal_chain_heads
language plpgsql volatile as $$
declare
  v_head journal_chain_heads;
begin
  select * into v_head from journal_chain_heads where tenant_id = p_tenant for update;
  if found then
    return v_head;
  end if;
  -- A concurrent first link of the same tenant makes this wait for its commit; either way the
  -- row exists afterwards.
  insert into journal_chain_heads (tenant_id, chain_seq, head_hash, updated_at)
  values (p_tenant, 0, decode(repeat('00', 32), 'hex'), now())
  on conflict do nothing;
  select * into v_head from journal_chain_heads where tenant_id = p_tenant for update;
  return v_head;
end $$;

-- Appends the link of journal row t after the tenant's head, and moves the head.
create function ledger_chain_append(t transfers) returns void language plpgsql volatile as $$
declare
  v_head journal_chain_heads := ledger_chain_lock_head(t.tenant_id);
  v_seq  bigint := v_head.chain_seq + 1;
  v_hash bytea := ledger_chain_hash(v_head.head_hash, t, v_seq);
begin
  insert into journal_chain (tenant_id, chain_seq, transfer_id, prev_hash, row_hash)
  values (t.tenant_id, v_seq, t.transfer_id, v_head.head_hash, v_hash);
  update journal_chain_heads set chain_seq = v_seq, head_hash = v_hash, updated_at = now()
   where tenant_id = t.tenant_id;
end $$;

-- The deferred trigger's function. It fires at commit, after the entry point that inserted the
-- row has returned, so it runs as the owner by itself (SECURITY DEFINER): the runtime role has
-- no write on the chain.
create function ledger_chain_link() returns trigger language plpgsql security definer as $$
begin
  perform ledger_chain_append(new);
  return null;
end $$;

-- Rows written before this migration are linked now, in (created_at, transfer_id) order.
do $$
declare
  t transfers;
begin
  for t in select * from transfers order by tenant_id, created_at, transfer_id loop
    perform ledger_chain_append(t);
  end loop;
end $$;

create constraint trigger transfers_chain_link after insert on transfers
  deferrable initially deferred
  for each row execute function ledger_chain_link();

-- 4. The entry points set holdfast.key_id. The command functions themselves are unchanged: the
--    dispatcher keeps its body under a new name, and ledger_command (what the service and
--    ledger_command_batch call) sets the key for the transaction, then dispatches. A migration
--    that changes the dispatch replaces ledger_command_dispatch, not ledger_command.

alter function ledger_command(uuid, text, text, bytea, timestamptz, jsonb) rename to ledger_command_dispatch;

create function ledger_command(p_tenant uuid, p_command text, p_key text, p_fingerprint bytea,
                               p_now timestamptz, p_args jsonb) returns jsonb
language plpgsql volatile as $$
begin
  -- Set for every command, so that in a batch one command's key never carries over to the next.
  perform set_config('holdfast.key_id', coalesce(p_args->>'key_id', ''), true);
  return ledger_command_dispatch(p_tenant, p_command, p_key, p_fingerprint, p_now, p_args - 'key_id');
end $$;

alter function ledger_update_wallet(uuid, timestamptz, jsonb) rename to ledger_update_wallet_apply;

create function ledger_update_wallet(p_tenant uuid, p_now timestamptz, a jsonb) returns jsonb
language plpgsql volatile as $$
begin
  perform set_config('holdfast.key_id', coalesce(a->>'key_id', ''), true);
  return ledger_update_wallet_apply(p_tenant, p_now, a - 'key_id');
end $$;

-- 5. Chain heads published: every few minutes the ledger process copies each tenant's head,
--    when it moved, into this append-only table and logs it ("journal chain head"), so that the
--    head also lives outside the database. `holdfast verify` checks every checkpoint against
--    the recomputed chain: rewriting rows and recomputing every hash after them still disagrees
--    with the checkpoints and the logged heads.

create table journal_chain_checkpoints (
  tenant_id   uuid        not null,
  chain_seq   bigint      not null check (chain_seq >= 1),
  head_hash   bytea       not null check (octet_length(head_hash) = 32),
  recorded_at timestamptz not null,
  primary key (tenant_id, chain_seq)
);

create trigger journal_chain_checkpoints_append_only before update or delete on journal_chain_checkpoints
  for each row execute function ledger_refuse_rewrite();
create trigger journal_chain_checkpoints_no_truncate before truncate on journal_chain_checkpoints
  for each statement execute function ledger_refuse_rewrite();

-- Records the current head of up to p_tenants_max tenants whose head moved since their last
-- checkpoint and whose last checkpoint is at least p_interval_seconds old. Reads the committed
-- heads without locking them, so it never waits for a command.
create function ledger_chain_checkpoint(p_now timestamptz, p_interval_seconds integer,
                                        p_tenants_max integer)
returns table (tenant_id uuid, chain_seq bigint, head_hash bytea)
language sql volatile as $$
  insert into journal_chain_checkpoints as c (tenant_id, chain_seq, head_hash, recorded_at)
  select h.tenant_id, h.chain_seq, h.head_hash, p_now
    from journal_chain_heads h
    left join lateral (select max(l.chain_seq) as chain_seq, max(l.recorded_at) as recorded_at
                         from journal_chain_checkpoints l where l.tenant_id = h.tenant_id) last on true
   where h.chain_seq > coalesce(last.chain_seq, 0)
     and coalesce(last.recorded_at, '-infinity') <= p_now - make_interval(secs => p_interval_seconds)
   order by h.tenant_id
   limit p_tenants_max
  on conflict do nothing
  returning c.tenant_id, c.chain_seq, c.head_hash
$$;

-- 6. The audit log of admin actions: API keys created and revoked, wallets updated (status,
--    credit limits), webhook endpoints created, updated, deleted and their secrets rotated.
--    Written by the service after the action succeeds; append-only like the journal.

create table audit_log (
  tenant_id   uuid        not null references tenants (id),
  -- UUIDv7, so newest first is audit_id descending.
  audit_id    uuid        not null default ledger_uuidv7(clock_timestamp()),
  occurred_at timestamptz not null default now(),
  -- The API key that acted; null for the command line, which acts with database credentials.
  key_id      text,
  -- What was done, e.g. api_key.created, wallet.updated, webhook_endpoint.deleted.
  action      text        not null check (action ~ '^[a-z_]{1,64}\.[a-z_]{1,64}$'),
  -- What it was done to: a key id, a wallet id, an endpoint id.
  target      text        not null check (length(target) between 1 and 256),
  -- The request's relevant fields (never a secret).
  details     jsonb       not null default '{}'::jsonb,
  primary key (tenant_id, audit_id)
);

create trigger audit_log_append_only before update or delete on audit_log
  for each row execute function ledger_refuse_rewrite();
create trigger audit_log_no_truncate before truncate on audit_log
  for each statement execute function ledger_refuse_rewrite();

-- 7. Privileges of the runtime role on tables: SELECT on every table (granted by the procedure
--    below), and writes only where the service, the workers or the CLI write directly.

grant insert on tenants to holdfast_runtime;
grant insert, update on api_keys to holdfast_runtime;
grant update (published_at) on events to holdfast_runtime;
grant delete on idempotency_keys to holdfast_runtime;
grant insert, update, delete on webhook_endpoints, webhook_events, webhook_deliveries to holdfast_runtime;
grant insert, update on billing_dead_letters to holdfast_runtime;
grant insert, update on rate_cards to holdfast_runtime;
grant insert on rate_card_versions, rate_card_models to holdfast_runtime;
grant insert on audit_log to holdfast_runtime;

-- 8. Functions. holdfast_entry_points names what the runtime role calls:
--    - definer: writes; runs as the owner (SECURITY DEFINER) with the search_path fixed to this
--      schema, so neither the caller's rights nor its search_path matter inside.
--    - invoker: the runtime role needs to execute it with its own rights (a column default).
--    A trigger function registered as definer runs as the owner wherever it fires.
--    Every other function: stable and immutable ones (pure JSON shapes and reads) stay
--    executable by the runtime role as invoker, since they can only read what it may read;
--    volatile ones (ledger_credit, ledger_emit, ...) are internal steps of the entry points and
--    the runtime role may not call them, or it could move balances without a journal row.

create table holdfast_entry_points (
  function_name text primary key,
  kind          text not null check (kind in ('definer', 'invoker'))
);

insert into holdfast_entry_points (function_name, kind) values
  ('ledger_command', 'definer'),
  ('ledger_command_batch', 'definer'),
  ('ledger_create_wallet', 'definer'),
  ('ledger_update_wallet', 'definer'),
  ('ledger_expire_batch', 'definer'),
  ('ledger_expire_grants_batch', 'definer'),
  ('ledger_chain_checkpoint', 'definer'),
  -- The deferred chain trigger fires at commit, outside the entry point that inserted the row.
  ('ledger_chain_link', 'definer'),
  ('ledger_uuidv7', 'invoker');

-- Applies the rules above to every function and table of the schema; idempotent. Call it at the
-- end of every migration that creates or replaces a function or creates a table.
create procedure holdfast_secure_functions() language plpgsql as $$
declare
  f record;
  v_schema text := current_schema();
begin
  for f in
    select p.oid::regprocedure as signature, p.provolatile, e.kind,
           p.prorettype = 'trigger'::regtype as is_trigger
      from pg_proc p
      left join holdfast_entry_points e on e.function_name = p.proname
     where p.pronamespace = v_schema::regnamespace and p.prokind = 'f'
       and not exists (select 1 from pg_depend d
                        where d.classid = 'pg_proc'::regclass and d.objid = p.oid and d.deptype = 'e')
  loop
    if f.is_trigger then
      -- Nobody calls a trigger function; a registered one runs as the owner wherever it fires.
      if f.kind = 'definer' then
        execute format('alter function %s security definer set search_path = %I, pg_temp', f.signature, v_schema);
      end if;
      continue;
    end if;
    execute format('revoke execute on function %s from public', f.signature);
    if f.kind = 'definer' then
      execute format('alter function %s security definer set search_path = %I, pg_temp', f.signature, v_schema);
      execute format('grant execute on function %s to holdfast_runtime', f.signature);
    elsif f.kind = 'invoker' or f.provolatile <> 'v' then
      execute format('grant execute on function %s to holdfast_runtime', f.signature);
    else
      execute format('revoke execute on function %s from holdfast_runtime', f.signature);
    end if;
  end loop;
  execute format('grant select on all tables in schema %I to holdfast_runtime', v_schema);
end $$;

revoke execute on procedure holdfast_secure_functions() from public;

call holdfast_secure_functions();
