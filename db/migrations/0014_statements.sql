-- Postpaid statements: a wallet's posted balance in one asset over a period, from the journal,
-- and closed periods stored for good (docs/statements.md).
--
-- The posted balance of a wallet account (credits_posted - debits_posted) changes only with a
-- journal row: every function that updates those columns inserts the row in the same
-- transaction (migrations 0003 and 0008), and invariant 1 checks that they agree. So the posted
-- balance just before an instant T is the sum of the wallet's journal rows dated before T:
-- credits (deposit, grant, refund, transfer received) minus debits (spend, capture, transfer
-- sent, breakage). Reserve, release and expire rows move money between posted and held only,
-- and statements leave them out. One thing reads subtract from `posted` without a journal row:
-- what is left in an expired grant (or comes back to it from a hold) before its breakage row is
-- written, by the wallet's next command or the grant-expiry pass (migration 0008). A statement
-- counts that money when its breakage row is dated, never earlier (docs/statements.md,
-- "Expiry and breakage").
--
-- A statement covers [period_start, period_end): a row dated exactly at period_end belongs to
-- the next one. Closing one (ledger_close_statement) stores it for good and fixes its period:
-- from then on no journal row of that wallet and asset may be dated before period_end. The
-- trigger below enforces it whatever function inserts the row: a row whose command's clock
-- reads earlier (a replica whose clock lags the one that closed) is dated at that period_end
-- instead, so it lands in the next period. With a clock that never goes back this never fires:
-- a close holds the wallet's lock and its period_end is not in the future, so every command
-- that takes the lock after it has now >= period_end.

-- 1. Closed statements. Append-only, like the journal.

create table statements (
  tenant_id      uuid        not null,
  -- UUIDv7, made by the service.
  statement_id   uuid        not null,
  wallet_id      text        not null,
  asset          text        not null check (asset ~ '^[A-Z][A-Z0-9_]{0,31}$'),
  period_start   timestamptz not null,
  period_end     timestamptz not null,
  -- The metadata key the lines are grouped by; '' for none.
  group_by       text        not null default '',
  opening_posted bigint      not null,
  closing_posted bigint      not null,
  total_debits   bigint      not null check (total_debits >= 0),
  total_credits  bigint      not null check (total_credits >= 0),
  amount_due     bigint      not null check (amount_due >= 0),
  -- [{kind, side, group_value, count, amount}], amounts as strings (ledger_statement_lines).
  lines          jsonb       not null,
  closed_at      timestamptz not null,
  primary key (tenant_id, statement_id),
  -- A wallet's closed periods of one asset, by end: the trigger's probe, and the chain of
  -- periods (each starts where the previous one ended).
  unique (tenant_id, wallet_id, asset, period_end),
  foreign key (tenant_id, wallet_id) references wallets (tenant_id, wallet_id),
  check (period_end > period_start),
  check (closing_posted = opening_posted + total_credits - total_debits),
  check (amount_due = greatest(0, -closing_posted))
);

-- ListStatements across a tenant, newest period first.
create index statements_by_period on statements (tenant_id, period_end, statement_id);

create trigger statements_append_only before update or delete on statements
  for each row execute function ledger_refuse_rewrite();
create trigger statements_no_truncate before truncate on statements
  for each statement execute function ledger_refuse_rewrite();

-- 2. A wallet's posted journal rows by time, for the statements' range scans. Reserve, release
--    and expire rows stay out (they are half of a hold's rows and never a statement's), and so
--    do the token legs of usage commands (kind `usage`, migration 0013: token counts, never
--    money, credited to the wallet's token account, not to an `accounts` row) and the system
--    accounts, as in the other journal indexes. `include` lets the opening balance be summed
--    from the index alone. Each posted row of a wallet adds one entry to one of them.

create index transfers_posted_by_debit_wallet
  on transfers (tenant_id, debit_wallet_id, asset, created_at) include (kind, amount)
  where debit_wallet_id not like '@%' and kind not in ('reserve', 'release', 'expire');
create index transfers_posted_by_credit_wallet
  on transfers (tenant_id, credit_wallet_id, asset, created_at) include (kind, amount)
  where credit_wallet_id not like '@%' and kind <> 'usage';

-- 3. No journal row dated inside a closed period. A BEFORE INSERT trigger, so that the row,
--    what its command answers (`returning *`) and its hash-chain link all carry the same date.
--    It costs one probe of the statements' unique index per journal row and wallet side.

-- The end of the last closed period of a wallet account, or null.
create function ledger_closed_until(p_tenant uuid, p_wallet text, p_asset text)
returns timestamptz language plpgsql stable as $$
begin
  return (select max(s.period_end) from statements s
           where s.tenant_id = p_tenant and s.wallet_id = p_wallet and s.asset = p_asset);
end $$;

create function ledger_statement_floor() returns trigger language plpgsql as $$
declare
  v_end timestamptz;
begin
  -- One probe per wallet side (an IN list would scan every statement of the tenant and asset);
  -- system accounts have no statements.
  if new.debit_wallet_id not like '@%' then
    v_end := ledger_closed_until(new.tenant_id, new.debit_wallet_id, new.asset);
  end if;
  if new.credit_wallet_id not like '@%' then
    v_end := greatest(v_end, ledger_closed_until(new.tenant_id, new.credit_wallet_id, new.asset));
  end if;
  if v_end > new.created_at then
    new.created_at := v_end;
  end if;
  return new;
end $$;

create trigger transfers_statement_floor before insert on transfers
  for each row execute function ledger_statement_floor();

-- 4. Reading statements. Stable: the runtime role runs them with its own rights.

-- The journal rows that moved a wallet account's posted balance in [p_from, p_to), with the
-- side they moved it: 'credit' for money in, 'debit' for money out. Any kind but the hold rows
-- and the token legs moves it, so a kind added later is counted unless it is listed here.
create function ledger_posted_rows(p_tenant uuid, p_wallet text, p_asset text,
                                   p_from timestamptz, p_to timestamptz)
returns table (kind text, side text, amount bigint, metadata jsonb)
language sql stable as $$
  select t.kind, 'credit', t.amount, t.metadata from transfers t
   where t.tenant_id = p_tenant and t.credit_wallet_id = p_wallet
     and t.credit_wallet_id not like '@%' and t.kind <> 'usage'
     and t.asset = p_asset and t.created_at >= p_from and t.created_at < p_to
  union all
  select t.kind, 'debit', t.amount, t.metadata from transfers t
   where t.tenant_id = p_tenant and t.debit_wallet_id = p_wallet
     and t.debit_wallet_id not like '@%' and t.kind not in ('reserve', 'release', 'expire')
     and t.asset = p_asset and t.created_at >= p_from and t.created_at < p_to
$$;

-- The posted balance just before p_at: the closing balance of the latest closed statement that
-- ends at or before p_at (exact for good: nothing can be dated before its end any more), plus
-- the rows from there to p_at; without one, every row before p_at.
create function ledger_posted_before(p_tenant uuid, p_wallet text, p_asset text, p_at timestamptz)
returns bigint language plpgsql stable as $$
declare
  v_from timestamptz;
  v_base bigint;
begin
  select s.period_end, s.closing_posted into v_from, v_base from statements s
   where s.tenant_id = p_tenant and s.wallet_id = p_wallet and s.asset = p_asset
     and s.period_end <= p_at
   order by s.period_end desc
   limit 1;
  return coalesce(v_base, 0) + coalesce((
    select sum(case r.side when 'credit' then r.amount else -r.amount end)
      from ledger_posted_rows(p_tenant, p_wallet, p_asset, coalesce(v_from, '-infinity'), p_at) r),
    0)::bigint;
end $$;

-- Most lines one statement holds: a group_by with more distinct values in the period is refused
-- (a per-request key such as a request id would make a line per row).
create function ledger_statement_lines_max() returns integer language sql immutable as $$
  select 500
$$;

-- A statement of [p_start, p_end) as callers see it (amounts as strings), or an INVALID_FIELD
-- refusal naming group_by when its lines would exceed ledger_statement_lines_max().
create function ledger_statement_json(p_tenant uuid, p_wallet text, p_asset text,
                                      p_start timestamptz, p_end timestamptz, p_group_by text)
returns jsonb language plpgsql stable as $$
declare
  v_opening bigint := ledger_posted_before(p_tenant, p_wallet, p_asset, p_start);
  v_lines   jsonb;
  v_count   integer;
  v_debits  bigint;
  v_credits bigint;
  v_closing bigint;
begin
  select coalesce(jsonb_agg(jsonb_build_object('kind', l.kind, 'side', l.side,
                                               'group_value', l.group_value,
                                               'count', l.n::text, 'amount', l.amount::text)
                            order by l.side desc, l.kind, l.group_value), '[]'::jsonb),
         count(*),
         coalesce(sum(l.amount) filter (where l.side = 'debit'), 0)::bigint,
         coalesce(sum(l.amount) filter (where l.side = 'credit'), 0)::bigint
    into v_lines, v_count, v_debits, v_credits
    from (select r.kind, r.side,
                 case when p_group_by = '' then '' else coalesce(r.metadata->>p_group_by, '') end
                   as group_value,
                 count(*) as n, sum(r.amount)::bigint as amount
            from ledger_posted_rows(p_tenant, p_wallet, p_asset, p_start, p_end) r
           group by 1, 2, 3) l;
  if v_count > ledger_statement_lines_max() then
    return ledger_refusal('INVALID_FIELD',
      format('group_by: has more than %s distinct values in the period; group by a coarser key',
             ledger_statement_lines_max()),
      jsonb_build_object('field', 'group_by'));
  end if;
  v_closing := v_opening + v_credits - v_debits;
  return jsonb_build_object(
    'wallet_id', p_wallet, 'asset', p_asset, 'period_start', p_start, 'period_end', p_end,
    'group_by', p_group_by, 'opening_posted', v_opening::text, 'closing_posted', v_closing::text,
    'total_debits', v_debits::text, 'total_credits', v_credits::text,
    'amount_due', greatest(0, -v_closing)::text, 'lines', v_lines);
end $$;

-- A closed statement as callers see it.
create function ledger_statement_row_json(s statements) returns jsonb language sql immutable as $$
  select jsonb_build_object(
    'statement_id', s.statement_id, 'wallet_id', s.wallet_id, 'asset', s.asset,
    'period_start', s.period_start, 'period_end', s.period_end, 'group_by', s.group_by,
    'opening_posted', s.opening_posted::text, 'closing_posted', s.closing_posted::text,
    'total_debits', s.total_debits::text, 'total_credits', s.total_credits::text,
    'amount_due', s.amount_due::text, 'lines', s.lines, 'closed_at', s.closed_at)
$$;

-- GetStatement: {ok, statement}, or a refusal (WALLET_NOT_FOUND, INVALID_FIELD on group_by).
-- It takes no lock: rows that commit while it reads an open period are in the next read.
create function ledger_get_statement(p_tenant uuid, p_wallet text, p_asset text,
                                     p_start timestamptz, p_end timestamptz, p_group_by text)
returns jsonb language plpgsql stable as $$
declare
  v jsonb;
begin
  if not exists (select 1 from wallets where tenant_id = p_tenant and wallet_id = p_wallet) then
    return ledger_refusal('WALLET_NOT_FOUND', 'wallet not found');
  end if;
  v := ledger_statement_json(p_tenant, p_wallet, p_asset, p_start, p_end, p_group_by);
  if v->>'ok' = 'false' then
    return v;
  end if;
  return jsonb_build_object('ok', true, 'statement', v);
end $$;

-- ListStatements: closed statements, newest period first, of one wallet and one asset when
-- they are given ('' for all). p_after: the last statement id of the previous page (null for
-- the first).
create function ledger_list_statements(p_tenant uuid, p_wallet text, p_asset text,
                                       p_after uuid, p_limit integer)
returns setof jsonb language sql stable as $$
  select ledger_statement_row_json(s) from statements s
   where s.tenant_id = p_tenant
     and (p_wallet = '' or s.wallet_id = p_wallet)
     and (p_asset = '' or s.asset = p_asset)
     and (p_after is null
          or (s.period_end, s.statement_id)
             < (select c.period_end, c.statement_id from statements c
                 where c.tenant_id = p_tenant and c.statement_id = p_after))
   order by s.period_end desc, s.statement_id desc
   limit p_limit
$$;

-- 5. Closing a statement.

-- Closes the wallet's next period in the asset, ending at period_end: locks the wallet (so no
-- command of it runs meanwhile), refuses a period_end in the future or not after the period's
-- start, runs the wallet's lazy expiry for the asset (so that holds and grants already due are
-- in the journal from now on, dated now: in the next period at the latest), then stores the
-- statement, emits holdfast.statement.closed and records the admin action, all in one
-- transaction. Refusals are returned, not raised, and recorded under the idempotency key.
create function ledger_close_statement_apply(p_tenant uuid, p_now timestamptz, a jsonb)
returns jsonb language plpgsql volatile as $$
declare
  v_wallet  text        := a->>'wallet_id';
  v_asset   text        := a->>'asset';
  v_end     timestamptz := (a->>'period_end')::timestamptz;
  v_group   text        := coalesce(a->>'group_by', '');
  w         wallets;
  v_start   timestamptz;
  v         jsonb;
  s         statements;
  v_json    jsonb;
begin
  if v_end > p_now then
    return ledger_refusal('INVALID_FIELD', 'period_end: must not be in the future',
                          jsonb_build_object('field', 'period_end'));
  end if;
  w := ledger_lock_wallet(p_tenant, v_wallet);
  if w.wallet_id is null then
    return ledger_refusal('WALLET_NOT_FOUND', 'wallet not found');
  end if;
  v_start := coalesce(ledger_closed_until(p_tenant, v_wallet, v_asset), w.created_at);
  if v_end <= v_start then
    return ledger_refusal('INVALID_FIELD',
      'period_end: must be after the period''s start, '
        || to_char(v_start at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
        || case when v_start = w.created_at then ' (the wallet''s creation)'
                else ' (the end of the last closed period)' end,
      jsonb_build_object('field', 'period_end'));
  end if;
  perform ledger_expire_due(p_tenant, v_wallet, v_asset, p_now);
  v := ledger_statement_json(p_tenant, v_wallet, v_asset, v_start, v_end, v_group);
  if v->>'ok' = 'false' then
    return v;
  end if;
  insert into statements (tenant_id, statement_id, wallet_id, asset, period_start, period_end,
                          group_by, opening_posted, closing_posted, total_debits, total_credits,
                          amount_due, lines, closed_at)
  values (p_tenant, (a->>'statement_id')::uuid, v_wallet, v_asset, v_start, v_end, v_group,
          (v->>'opening_posted')::bigint, (v->>'closing_posted')::bigint,
          (v->>'total_debits')::bigint, (v->>'total_credits')::bigint,
          (v->>'amount_due')::bigint, v->'lines', p_now)
  returning * into s;
  v_json := ledger_statement_row_json(s);
  perform ledger_emit(p_tenant, v_wallet, 'holdfast.statement.closed', v_asset, p_now, v_json);
  insert into audit_log (tenant_id, key_id, action, target, details)
  values (p_tenant, nullif(current_setting('holdfast.key_id', true), ''), 'statement.closed',
          s.statement_id::text,
          jsonb_build_object('wallet_id', v_wallet, 'asset', v_asset, 'period_start', v_start,
                             'period_end', v_end, 'group_by', v_group));
  return jsonb_build_object('ok', true, 'statement', v_json);
end $$;

-- CloseStatement's entry point: the idempotency key (a replay answers the stored statement), the
-- acting key for the event and the audit log (holdfast.key_id, as ledger_command sets it), then
-- the close. One round trip, like a wallet command.
create function ledger_close_statement(p_tenant uuid, p_key text, p_fingerprint bytea,
                                       p_now timestamptz, a jsonb)
returns jsonb language plpgsql volatile as $$
declare
  v jsonb;
begin
  perform set_config('holdfast.key_id', coalesce(a->>'key_id', ''), true);
  v := ledger_idem_begin(p_tenant, p_key, 'CloseStatement', p_fingerprint, p_now);
  if v is not null then
    return v;
  end if;
  return ledger_idem_finish(p_tenant, p_key, ledger_close_statement_apply(p_tenant, p_now, a - 'key_id'));
end $$;

insert into holdfast_entry_points (function_name, kind) values
  ('ledger_close_statement', 'definer');

call holdfast_secure_functions();
