-- Metered usage: ReserveUsage, CaptureUsage and SpendUsage price token usage with a rate card
-- (0009) inside the command's own transaction, after the wallet's lock, and write the money
-- leg and the token legs together. See docs/metering.md, "The usage commands".
--
-- - The money leg is an ordinary RESERVE, CAPTURE or SPEND row (or RELEASE when a capture
--   charges nothing), made by the same code as Reserve, Capture and Spend: the bodies of those
--   commands move into ledger_reserve_core, ledger_capture_core and ledger_spend_core, which
--   take the usage being recorded (null for the plain commands), and ledger_reserve,
--   ledger_capture and ledger_spend call them with null.
-- - Token legs are journal rows of kind `usage`, one per token class with a non-zero count, in
--   the rate card's token asset, from the tenant's `@tokens` system account to the wallet. They
--   carry usage_id (shared with the money leg of the same command), model and token_class.
--   The wallet's side is its token account (token_accounts): a running count of the tokens it
--   used per token asset. It is not an `accounts` row on purpose: token counts are never money,
--   so they can never be spent, held, granted or shown as a balance. Like @world and @revenue,
--   @tokens keeps no row; its balance is derived from the journal. Per tenant and token asset,
--   @tokens plus the wallets' token accounts sum to zero (checkInvariants).
-- - Pricing: the version in effect at the command's time for ReserveUsage and SpendUsage; the
--   version the hold pinned for CaptureUsage (holds.rate_card_id, rate_card_version, model),
--   whatever versions came later. A hold reserves metering_hold_amount (rounded up); a charge
--   takes metering_charge_with_carry of the wallet's account carry, and the new carry is
--   written in the same transaction, all under the wallet's lock.
-- - A charge of 0 minor units (the carry absorbed the cost) writes no money row: SpendUsage
--   then records only the token legs, and CaptureUsage releases the hold. The token legs then
--   travel on a holdfast.usage.recorded event; otherwise on the money leg's own event
--   (holdfast.spend.completed, holdfast.hold.captured) as `token_transfers`.

-- 1. Schema.

alter table transfers drop constraint transfers_kind_check;
alter table transfers add constraint transfers_kind_check check (kind in
  ('deposit', 'spend', 'reserve', 'capture', 'release', 'expire', 'refund', 'transfer',
   'grant', 'breakage', 'usage'));
alter table transfers
  -- The usage command that wrote the row: its token legs and its money leg share it.
  add column usage_id uuid,
  -- The model priced, on the token legs and the money leg.
  add column model text,
  -- The token class of a token leg; null on every other row.
  add column token_class text check (token_class in
    ('input', 'cached_input', 'cache_write', 'cache_write_1h', 'output', 'reasoning'));
alter table transfers add constraint transfers_token_leg check (
  (kind = 'usage') = (token_class is not null)
  and (kind <> 'usage' or (usage_id is not null and model is not null and debit_wallet_id = '@tokens')));

-- The legs of one usage, for the billing backfill and the invariant check.
create index transfers_by_usage on transfers (tenant_id, usage_id) where usage_id is not null;

-- The rate card version a usage hold was priced with: CaptureUsage prices with it.
alter table holds
  add column rate_card_id text,
  add column rate_card_version integer,
  add column model text,
  add constraint holds_usage_pin check (
    (rate_card_id is null) = (rate_card_version is null) and (rate_card_id is null) = (model is null));

-- A wallet's token account per token asset: the tokens its usage commands recorded. Written
-- under the wallet's lock, like its money accounts.
create table token_accounts (
  tenant_id uuid   not null,
  wallet_id text   not null,
  asset     text   not null check (asset ~ '^[A-Z][A-Z0-9_]{0,31}$'),
  tokens    bigint not null default 0 check (tokens >= 0),
  version   bigint not null default 0,
  primary key (tenant_id, wallet_id, asset),
  foreign key (tenant_id, wallet_id) references wallets (tenant_id, wallet_id)
);

-- 2. JSON shapes: a journal row shows its usage, a hold its pinned rate card.

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
    || case when t.usage_id is not null
            then jsonb_build_object('usage_id', t.usage_id, 'model', t.model, 'token_class', t.token_class)
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
    || case when h.rate_card_id is not null
            then jsonb_build_object('rate_card_id', h.rate_card_id,
                                    'rate_card_version', h.rate_card_version, 'model', h.model)
            else '{}'::jsonb end
$$;

-- 3. The hash chain covers the new columns. A row that has any of them is hashed under version
--    2 of the canonical form: version 1's fields, then usage_id, model and token_class. Rows
--    without them keep version 1, so every link made before this migration still verifies.
--    `holdfast verify` (tools/cli/src/verify.ts) rebuilds both versions on its own.

create or replace function ledger_chain_canonical(t transfers, p_seq bigint) returns text
language sql stable as $$
  select case when t.usage_id is null and t.model is null and t.token_class is null
              then 'holdfast.journal.v1' else 'holdfast.journal.v2' end
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
      || case when t.usage_id is null and t.model is null and t.token_class is null then ''
              else ledger_chain_field(t.usage_id::text)
                || ledger_chain_field(t.model)
                || ledger_chain_field(t.token_class) end
$$;

-- 4. Pricing a usage inside a command.

-- The rate card version (p_version, or with null the version in effect at p_now) and the
-- model's prices; or RATE_CARD_NOT_FOUND, or MODEL_NOT_PRICED (metadata.model).
create function ledger_usage_pricing(p_tenant uuid, p_card text, p_version integer, p_model text,
                                     p_now timestamptz) returns jsonb
language plpgsql stable as $$
declare
  v rate_card_versions;
  m rate_card_models;
begin
  select * into v from rate_card_versions
   where tenant_id = p_tenant and rate_card_id = p_card
     and ((p_version is null and effective_at <= p_now) or version = p_version)
   order by version desc limit 1;
  if not found then
    if exists (select 1 from rate_cards where tenant_id = p_tenant and rate_card_id = p_card
                                        and latest_version > 0) then
      return ledger_refusal('RATE_CARD_NOT_FOUND', 'rate card ' || p_card || ' has no version in effect yet');
    end if;
    return ledger_refusal('RATE_CARD_NOT_FOUND', 'rate card ' || p_card || ' not found');
  end if;
  select * into m from rate_card_models
   where tenant_id = p_tenant and rate_card_id = p_card and version = v.version and model = p_model;
  if not found then
    return ledger_refusal('MODEL_NOT_PRICED',
      format('rate card %s version %s has no prices for model %s', p_card, v.version, p_model),
      jsonb_build_object('model', p_model));
  end if;
  return jsonb_build_object('ok', true, 'version', v, 'prices', m.prices, 'tiers', m.tiers);
end $$;

-- Prices p_usage (a TokenUsage in JSON) with one model of one rate card version: the quote as
-- QuoteUsage answers it (rate card, version, assets, lines, costs), or a refusal; p_field names
-- the request's usage field in an overflow refusal ("usage", "estimate").
create function ledger_usage_quote(p_tenant uuid, p_card text, p_version integer, p_model text,
                                   p_usage jsonb, p_field text, p_now timestamptz) returns jsonb
language plpgsql stable as $$
declare
  p jsonb := ledger_usage_pricing(p_tenant, p_card, p_version, p_model, p_now);
  q jsonb;
begin
  if (p->>'ok')::boolean is not true then
    return p;
  end if;
  q := metering_quote(p->'prices', p->'tiers', p_usage, (p->'version'->>'markup_bps')::integer, p_field);
  if q->>'reason' = 'MODEL_NOT_PRICED' then
    return ledger_refusal('MODEL_NOT_PRICED',
      format('rate card %s version %s has no price for %s tokens of model %s',
             p_card, p->'version'->>'version', q->'metadata'->>'token_class', p_model),
      jsonb_build_object('model', p_model, 'token_class', q->'metadata'->>'token_class'));
  elsif (q->>'ok')::boolean is not true then
    return q;
  end if;
  return q || jsonb_build_object(
    'rate_card_id', p_card, 'rate_card_version', (p->'version'->>'version')::integer,
    'model', p_model, 'asset', p->'version'->>'asset', 'token_asset', p->'version'->>'token_asset',
    'markup_bps', (p->'version'->>'markup_bps')::integer);
end $$;

-- What a usage command hands to the cores below: the usage id, the model, the quote, the
-- carry the wallet's account keeps after the charge, and the metadata of the token legs.
create function ledger_usage_args(a jsonb, q jsonb, p_carry bigint, p_hold text, p_metadata jsonb)
returns jsonb language sql immutable as $$
  select jsonb_build_object('usage_id', a->>'usage_id', 'model', q->>'model', 'asset', q->>'asset',
                            'token_asset', q->>'token_asset', 'quote', q - 'ok',
                            'carry_nano', p_carry::text, 'hold_id', p_hold, 'metadata', p_metadata)
$$;

-- Writes a usage's token legs and the wallet's new carry (the wallet must be locked): one
-- `usage` row per quote line (the lines are the classes with tokens), @tokens -> wallet, and
-- the tokens onto the wallet's token account. Returns the rows as callers see them.
create function ledger_usage_legs(p_tenant uuid, p_wallet text, p_now timestamptz, u jsonb)
returns jsonb language plpgsql volatile as $$
declare
  l       jsonb;
  v_xfer  transfers;
  v_legs  jsonb := '[]'::jsonb;
  v_total bigint := 0;
begin
  update accounts set carry_nano = (u->>'carry_nano')::bigint, version = version + 1
   where tenant_id = p_tenant and wallet_id = p_wallet and asset = u->>'asset'
     and carry_nano <> (u->>'carry_nano')::bigint;
  for l in select value from jsonb_array_elements(u->'quote'->'lines') loop
    insert into transfers (tenant_id, transfer_id, kind, debit_wallet_id, credit_wallet_id, asset,
                           amount, hold_id, metadata, created_at, usage_id, model, token_class)
    values (p_tenant, ledger_uuidv7(p_now), 'usage', '@tokens', p_wallet, u->>'token_asset',
            (l->>'tokens')::bigint, u->>'hold_id', coalesce(u->'metadata', '{}'::jsonb), p_now,
            (u->>'usage_id')::uuid, u->>'model', l->>'token_class')
    returning * into v_xfer;
    v_total := v_total + v_xfer.amount;
    v_legs := v_legs || ledger_transfer_json(v_xfer);
  end loop;
  if v_total > 0 then
    insert into token_accounts as ta (tenant_id, wallet_id, asset, tokens, version)
    values (p_tenant, p_wallet, u->>'token_asset', v_total, 1)
    on conflict (tenant_id, wallet_id, asset) do update
      set tokens = ta.tokens + excluded.tokens, version = ta.version + 1;
  end if;
  return v_legs;
end $$;

-- A usage that charges nothing (the wallet's carry absorbed its cost): the token legs and the
-- carry, and a holdfast.usage.recorded event carrying the legs when there are any.
create function ledger_usage_uncharged(p_tenant uuid, p_wallet text, p_now timestamptz, u jsonb)
returns jsonb language plpgsql volatile as $$
declare
  v_legs jsonb := ledger_usage_legs(p_tenant, p_wallet, p_now, u);
  v_acc  accounts;
  v_bal  jsonb;
begin
  select * into v_acc from accounts
   where tenant_id = p_tenant and wallet_id = p_wallet and asset = u->>'asset';
  v_bal := ledger_balance_at(v_acc, p_now);
  if jsonb_array_length(v_legs) > 0 then
    perform ledger_emit(p_tenant, p_wallet, 'holdfast.usage.recorded', u->>'asset', p_now,
      jsonb_build_object('balance', v_bal, 'usage_id', u->>'usage_id', 'hold_id', u->>'hold_id',
                         'quote', u->'quote', 'token_transfers', v_legs,
                         'metadata', coalesce(u->'metadata', '{}'::jsonb)));
  end if;
  return jsonb_build_object('balance', v_bal, 'token_transfers', v_legs);
end $$;

-- 5. The cores of Spend, Reserve and Capture (the 0008 bodies), with the usage they record.

create function ledger_spend_core(p_tenant uuid, p_now timestamptz, a jsonb, u jsonb)
returns jsonb language plpgsql volatile as $$
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
                         amount, metadata, created_at, grants, usage_id, model)
  values (p_tenant, (a->>'transfer_id')::uuid, 'spend', v_wallet, '@revenue', v_asset, v_amount,
          ledger_command_args_metadata(a), p_now, v_entries, (u->>'usage_id')::uuid, u->>'model')
  returning * into v_xfer;
  v_result := jsonb_build_object('transfer', ledger_transfer_json(v_xfer),
                                 'balance', ledger_balance_at(v_acc, p_now));
  if u is not null then
    v_result := v_result || jsonb_build_object(
      'token_transfers', ledger_usage_legs(p_tenant, v_wallet, p_now, u), 'quote', u->'quote');
  end if;
  perform ledger_emit(p_tenant, v_wallet, 'holdfast.spend.completed', v_asset, p_now,
    v_result || jsonb_build_object('metadata', v_xfer.metadata));
  return jsonb_build_object('ok', true) || v_result;
end $$;

create or replace function ledger_spend(p_tenant uuid, p_now timestamptz, a jsonb) returns jsonb
language plpgsql volatile as $$
begin
  return ledger_spend_core(p_tenant, p_now, a, null);
end $$;

-- u, when not null, is the pin of a usage hold: {rate_card_id, rate_card_version, model}.
create function ledger_reserve_core(p_tenant uuid, p_now timestamptz, a jsonb, u jsonb)
returns jsonb language plpgsql volatile as $$
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
                     created_at, metadata, allocations, categories,
                     rate_card_id, rate_card_version, model)
  values (p_tenant, v_hold_id, v_wallet, v_asset, v_amount, v_xfer.transfer_id,
          p_now + make_interval(secs => (a->>'ttl_seconds')::int), p_now, v_xfer.metadata,
          ledger_allocations(v_entries), v_cats,
          u->>'rate_card_id', (u->>'rate_card_version')::integer, u->>'model')
  returning * into v_hold;
  v_result := jsonb_build_object('hold', ledger_hold_json(v_hold),
                                 'balance', ledger_balance_at(v_acc, p_now),
                                 'transfer', ledger_transfer_json(v_xfer));
  perform ledger_emit(p_tenant, v_wallet, 'holdfast.hold.created', v_asset, p_now,
    v_result || jsonb_build_object('metadata', v_hold.metadata));
  return jsonb_build_object('ok', true) || v_result;
end $$;

create or replace function ledger_reserve(p_tenant uuid, p_now timestamptz, a jsonb) returns jsonb
language plpgsql volatile as $$
begin
  return ledger_reserve_core(p_tenant, p_now, a, null);
end $$;

-- Capture: the hold's own allocations are consumed first, in order; a partial capture gives
-- the rest back to the same grants; an over-capture takes the excess from the current order
-- (with the Reserve's categories), or fails with INSUFFICIENT_FUNDS, changing nothing.
create function ledger_capture_core(p_tenant uuid, p_now timestamptz, a jsonb, u jsonb)
returns jsonb language plpgsql volatile as $$
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
                         amount, hold_id, metadata, created_at, grants, usage_id, model)
  values (p_tenant, (a->>'transfer_id')::uuid, 'capture', h.wallet_id, '@revenue', h.asset,
          v_amount, h.hold_id, h.metadata || ledger_command_args_metadata(a), p_now, v_entries,
          (u->>'usage_id')::uuid, u->>'model')
  returning * into v_xfer;
  v_result := jsonb_build_object('transfer', ledger_transfer_json(v_xfer),
                                 'hold', ledger_hold_json(h),
                                 'balance', ledger_balance_at(v_acc, p_now));
  if u is not null then
    v_result := v_result || jsonb_build_object(
      'token_transfers', ledger_usage_legs(p_tenant, h.wallet_id, p_now, u), 'quote', u->'quote');
  end if;
  perform ledger_emit(p_tenant, h.wallet_id, 'holdfast.hold.captured', h.asset, p_now,
    v_result || jsonb_build_object('metadata', v_xfer.metadata));
  perform ledger_break_grants(p_tenant, v_deads, p_now);
  return jsonb_build_object('ok', true) || v_result;
end $$;

create or replace function ledger_capture(p_tenant uuid, p_now timestamptz, a jsonb) returns jsonb
language plpgsql volatile as $$
begin
  return ledger_capture_core(p_tenant, p_now, a, null);
end $$;

-- 6. The usage commands. Arguments as the plain commands', plus rate_card_id, model, usage
--    (or estimate) as a TokenUsage in JSON, and usage_id from the service.

-- ReserveUsage: a hold of the estimate's cost rounded up, pinned to the version in effect. An
-- estimate that costs nothing is refused (INVALID_FIELD estimate): a hold of nothing reserves
-- nothing, and SpendUsage records free usage.
create function ledger_reserve_usage(p_tenant uuid, p_now timestamptz, a jsonb) returns jsonb
language plpgsql volatile as $$
declare
  w         wallets;
  v_refusal jsonb;
  q         jsonb;
  v_result  jsonb;
begin
  w := ledger_lock_wallet(p_tenant, a->>'wallet_id');
  v_refusal := ledger_debit_refusal(w);
  if v_refusal is not null then
    return v_refusal;
  end if;
  q := ledger_usage_quote(p_tenant, a->>'rate_card_id', null, a->>'model', a->'estimate',
                          'estimate', p_now);
  if (q->>'ok')::boolean is not true then
    return q;
  end if;
  if (q->>'hold_amount')::bigint = 0 then
    return ledger_refusal('INVALID_FIELD',
      format('estimate: costs nothing under rate card %s version %s, so there is nothing to hold; record free usage with SpendUsage',
             q->>'rate_card_id', q->>'rate_card_version'),
      jsonb_build_object('field', 'estimate'));
  end if;
  v_result := ledger_reserve_core(p_tenant, p_now,
    a || jsonb_build_object('asset', q->>'asset', 'amount', q->>'hold_amount'),
    jsonb_build_object('rate_card_id', q->>'rate_card_id',
                       'rate_card_version', q->'rate_card_version', 'model', q->>'model'));
  if (v_result->>'ok')::boolean is not true then
    return v_result;
  end if;
  return v_result || jsonb_build_object('quote', q - 'ok');
end $$;

-- The wallet's account in the rate card's asset, for its carry; null when it has none, which
-- a usage command answers with INSUFFICIENT_FUNDS (there is nothing to charge).
create function ledger_usage_account(p_tenant uuid, p_wallet text, p_asset text) returns accounts
language sql stable as $$
  select * from accounts where tenant_id = p_tenant and wallet_id = p_wallet and asset = p_asset
$$;

-- SpendUsage: prices the usage with the version in effect and charges it with the wallet's
-- carry, as Spend does; a charge of 0 records the token legs and the carry only.
create function ledger_spend_usage(p_tenant uuid, p_now timestamptz, a jsonb) returns jsonb
language plpgsql volatile as $$
declare
  v_wallet  text := a->>'wallet_id';
  w         wallets;
  v_refusal jsonb;
  q         jsonb;
  v_acc     accounts;
  c         record;
  u         jsonb;
  v_result  jsonb;
begin
  w := ledger_lock_wallet(p_tenant, v_wallet);
  v_refusal := ledger_debit_refusal(w);
  if v_refusal is not null then
    return v_refusal;
  end if;
  q := ledger_usage_quote(p_tenant, a->>'rate_card_id', null, a->>'model', a->'usage', 'usage', p_now);
  if (q->>'ok')::boolean is not true then
    return q;
  end if;
  perform ledger_expire_due(p_tenant, v_wallet, q->>'asset', p_now);
  v_acc := ledger_usage_account(p_tenant, v_wallet, q->>'asset');
  if v_acc.tenant_id is null then
    return ledger_insufficient_for(p_tenant, v_wallet, q->>'asset', ledger_args_categories(a), p_now);
  end if;
  select * into c from metering_charge_with_carry((q->>'cost_nano')::bigint, v_acc.carry_nano);
  u := ledger_usage_args(a, q, c.carry_nano, null, ledger_command_args_metadata(a));
  if c.amount > 0 then
    v_result := ledger_spend_core(p_tenant, p_now,
      a || jsonb_build_object('asset', q->>'asset', 'amount', c.amount::text), u);
    if (v_result->>'ok')::boolean is not true then
      return v_result;
    end if;
  else
    v_result := jsonb_build_object('ok', true, 'quote', q - 'ok')
             || ledger_usage_uncharged(p_tenant, v_wallet, p_now, u);
  end if;
  return v_result || jsonb_build_object('usage_id', a->>'usage_id', 'amount', c.amount::text,
                                        'carry_nano', c.carry_nano::text);
end $$;

-- CaptureUsage: prices the usage with the version the hold pinned and captures the charge
-- (with the wallet's carry) as Capture does: below the hold the rest is released, above it
-- the excess must fit or INSUFFICIENT_FUNDS leaves the hold pending. A charge of 0 releases
-- the hold and records the token legs and the carry.
create function ledger_capture_usage(p_tenant uuid, p_now timestamptz, a jsonb) returns jsonb
language plpgsql volatile as $$
declare
  v_refusal jsonb;
  h         holds;
  q         jsonb;
  v_acc     accounts;
  c         record;
  u         jsonb;
  v_result  jsonb;
begin
  v_refusal := ledger_lock_hold(p_tenant, p_now, a);
  if v_refusal is not null then
    return v_refusal;
  end if;
  h := ledger_locked_hold(p_tenant, a);
  if h.rate_card_id is null then
    return ledger_refusal('INVALID_FIELD',
      'hold_id: the hold was not made by ReserveUsage and has no rate card to price with; settle it with Capture',
      jsonb_build_object('field', 'hold_id'));
  end if;
  if exists (select 1 from wallets where tenant_id = p_tenant and wallet_id = h.wallet_id
                                     and status = 'closed') then
    return ledger_refusal('WALLET_CLOSED', 'wallet is closed');
  end if;
  q := ledger_usage_quote(p_tenant, h.rate_card_id, h.rate_card_version, h.model, a->'usage',
                          'usage', p_now);
  if (q->>'ok')::boolean is not true then
    return q;
  end if;
  v_acc := ledger_usage_account(p_tenant, h.wallet_id, h.asset);
  select * into c from metering_charge_with_carry((q->>'cost_nano')::bigint, v_acc.carry_nano);
  u := ledger_usage_args(a, q, c.carry_nano, h.hold_id,
                         h.metadata || ledger_command_args_metadata(a));
  if c.amount > 0 then
    v_result := ledger_capture_core(p_tenant, p_now, a || jsonb_build_object('amount', c.amount::text), u);
    if (v_result->>'ok')::boolean is not true then
      return v_result;
    end if;
  else
    v_result := jsonb_build_object('ok', true, 'quote', q - 'ok')
             || ledger_void_hold(h, 'release', p_now);
    v_result := v_result || ledger_usage_uncharged(p_tenant, h.wallet_id, p_now, u);
  end if;
  return v_result || jsonb_build_object('usage_id', a->>'usage_id', 'amount', c.amount::text,
                                        'carry_nano', c.carry_nano::text);
end $$;

-- 7. The dispatcher (0011's ledger_command_dispatch, the 0008 body) with the usage commands.
create or replace function ledger_command_dispatch(p_tenant uuid, p_command text, p_key text,
                                                   p_fingerprint bytea, p_now timestamptz,
                                                   p_args jsonb)
returns jsonb language plpgsql volatile as $$
declare
  v jsonb;
begin
  v := ledger_idem_begin(p_tenant, p_key, p_command, p_fingerprint, p_now);
  if v is not null then
    return v;
  end if;
  v := case p_command
    when 'Deposit'      then ledger_deposit(p_tenant, p_now, p_args)
    when 'Spend'        then ledger_spend(p_tenant, p_now, p_args)
    when 'Reserve'      then ledger_reserve(p_tenant, p_now, p_args)
    when 'Capture'      then ledger_capture(p_tenant, p_now, p_args)
    when 'Release'      then ledger_release(p_tenant, p_now, p_args)
    when 'ExtendHold'   then ledger_extend_hold(p_tenant, p_now, p_args)
    when 'Refund'       then ledger_refund(p_tenant, p_now, p_args)
    when 'Transfer'     then ledger_transfer(p_tenant, p_now, p_args)
    when 'CreateGrant'  then ledger_create_grant(p_tenant, p_now, p_args)
    when 'VoidGrant'    then ledger_void_grant(p_tenant, p_now, p_args)
    when 'ReserveUsage' then ledger_reserve_usage(p_tenant, p_now, p_args)
    when 'CaptureUsage' then ledger_capture_usage(p_tenant, p_now, p_args)
    when 'SpendUsage'   then ledger_spend_usage(p_tenant, p_now, p_args)
  end;
  if v is null then
    raise exception 'ledger_command: unknown command %', p_command;
  end if;
  return ledger_idem_finish(p_tenant, p_key, v);
end $$;

call holdfast_secure_functions();
