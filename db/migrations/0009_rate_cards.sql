-- Model rate cards and exact token pricing; see docs/metering.md.
--
-- A rate card is a list of versions. A version is immutable once written (the triggers below
-- refuse UPDATE and DELETE), so whatever was priced under a version, such as a hold that pins
-- it, keeps its prices whatever later versions say. The version in effect at a time t is the
-- highest version whose effective_at <= t; PutRateCard keeps effective_at non-decreasing over
-- a card's versions, so that is also the version that took effect last.
--
-- Prices are int8 billionths of the asset's minor unit per million tokens, stored per model as
-- jsonb with int8 values as strings ({"input": "40000000000", "output": "160000000000"}), the
-- classes input, cached_input, cache_write, cache_write_1h, output and reasoning; an absent
-- class falls back (see metering_resolve_price). Tiers are a jsonb array of
-- {"above_input_tokens": "200000", "prices": {...}} in increasing order of threshold.
--
-- The pricing functions at the end are pure and mirror @holdfast/metering (packages/metering)
-- exactly, so that the usage commands can price in the same transaction as the money moves;
-- test/metering-arithmetic.test.ts checks that both give the same answers.

-- 1. The per-account carry of the rounding rule: the sub-minor remainder (nano units) of the
--    wallet's metered charges in this asset, always below one minor unit.
alter table accounts
  add column carry_nano bigint not null default 0 check (carry_nano >= 0 and carry_nano < 1000000000);

-- 2. Rate cards.

create table rate_cards (
  tenant_id      uuid        not null references tenants (id),
  rate_card_id   text        not null check (rate_card_id ~ '^[A-Za-z0-9_.:-]{1,64}$'),
  -- The highest version written; 0 only inside the transaction that creates the card.
  latest_version integer     not null default 0 check (latest_version >= 0),
  created_at     timestamptz not null,
  updated_at     timestamptz not null,
  primary key (tenant_id, rate_card_id)
);

create table rate_card_versions (
  tenant_id       uuid        not null,
  rate_card_id    text        not null,
  version         integer     not null check (version >= 1),
  asset           text        not null check (asset ~ '^[A-Z][A-Z0-9_]{0,31}$'),
  token_asset     text        not null check (token_asset ~ '^[A-Z][A-Z0-9_]{0,31}$'),
  markup_bps      integer     not null check (markup_bps between 0 and 1000000),
  effective_at    timestamptz not null,
  created_at      timestamptz not null,
  model_count     integer     not null check (model_count >= 0),
  -- PutRateCard's idempotency key and the fingerprint of the request that used it, kept for
  -- good with the version: a replay answers this version, another request under the key is
  -- refused. Keys are unique among the tenant's rate-card writes.
  idempotency_key text        not null,
  fingerprint     bytea       not null,
  primary key (tenant_id, rate_card_id, version),
  unique (tenant_id, idempotency_key),
  foreign key (tenant_id, rate_card_id) references rate_cards (tenant_id, rate_card_id)
);

create table rate_card_models (
  tenant_id    uuid    not null,
  rate_card_id text    not null,
  version      integer not null,
  model        text    not null check (model ~ '^[A-Za-z0-9][A-Za-z0-9_.:/@+-]{0,127}$'),
  -- The model's place in the PutRateCard request, so GetRateCard answers them in that order.
  position     integer not null,
  prices       jsonb   not null,
  tiers        jsonb   not null default '[]'::jsonb,
  primary key (tenant_id, rate_card_id, version, model),
  unique (tenant_id, rate_card_id, version, position),
  foreign key (tenant_id, rate_card_id, version) references rate_card_versions (tenant_id, rate_card_id, version)
);

create function rate_card_refuse_change() returns trigger language plpgsql as $$
begin
  raise exception 'rate card versions are immutable: % on % is refused', tg_op, tg_table_name
    using errcode = 'insufficient_privilege';
end $$;

create trigger rate_card_versions_no_change before update or delete on rate_card_versions
  for each row execute function rate_card_refuse_change();
create trigger rate_card_models_no_change before update or delete on rate_card_models
  for each row execute function rate_card_refuse_change();

-- 3. Pricing, mirroring @holdfast/metering.

-- The price of a token class after fallback (packages/metering/src/pricing.ts, resolvePrice):
-- the class's own price, else input for cached_input, cache_write and cache_write_1h, else
-- output for reasoning; null when the class cannot be priced.
create function metering_resolve_price(p_prices jsonb, p_class text) returns numeric
language sql immutable as $$
  select coalesce((p_prices ->> p_class)::numeric,
                  case when p_class in ('cached_input', 'cache_write', 'cache_write_1h')
                         then (p_prices ->> 'input')::numeric
                       when p_class = 'reasoning'
                         then (p_prices ->> 'output')::numeric
                  end)
$$;

-- The minor units a hold for a cost reserves: ceil(cost / 1e9) (rounding.ts, holdAmountFor).
create function metering_hold_amount(p_cost_nano bigint) returns bigint
language sql immutable as $$
  select div(p_cost_nano::numeric + 999999999, 1000000000)::bigint
$$;

-- A charge on an account that carries p_carry_nano (rounding.ts, chargeWithCarry): the whole
-- minor units of cost + carry, and the new carry. A usage command stores carry_nano on the
-- wallet's account in the same transaction as the transfer of amount.
create function metering_charge_with_carry(p_cost_nano bigint, p_carry_nano bigint,
                                           out amount bigint, out carry_nano bigint)
language sql immutable as $$
  select div(p_cost_nano::numeric + p_carry_nano, 1000000000)::bigint,
         mod(p_cost_nano::numeric + p_carry_nano, 1000000000)::bigint
$$;

-- Prices a usage (pricing.ts, priceUsage): p_usage is a TokenUsage in JSON
-- ({"input_tokens": "1200", "output_tokens": "300"}, absent counts are 0, all >= 0, checked
-- by the caller). Answers {"ok": true, "lines": [...], "tier_above_input_tokens",
-- "base_cost_nano", "cost_nano", "charge_amount", "hold_amount"} with int8 values as strings,
-- or a refusal: MODEL_NOT_PRICED (metadata.token_class) when a class with tokens has no price,
-- AMOUNT_OVERFLOW (metadata.field, e.g. "usage.output_tokens") when the cost does not fit int8.
create function metering_quote(p_prices jsonb, p_tiers jsonb, p_usage jsonb, p_markup_bps integer,
                               p_field text default 'usage') returns jsonb
language plpgsql immutable as $$
declare
  v_classes  constant text[] := array['input', 'cached_input', 'cache_write', 'cache_write_1h', 'output', 'reasoning'];
  v_divisor  constant numeric := 10000000000; -- 1e6 tokens per price unit × 1e4 bps
  v_multiplier numeric := 10000 + p_markup_bps;
  v_prompt   numeric := 0;
  v_tier     jsonb;
  v_prices   jsonb := p_prices;
  v_weighted numeric := 0;
  v_heaviest text;
  v_heaviest_product numeric := -1;
  v_lines    jsonb := '[]'::jsonb;
  v_class    text;
  v_tokens   numeric;
  v_price    numeric;
  v_product  numeric;
  v_cost     numeric;
begin
  if p_markup_bps is null or p_markup_bps not between 0 and 1000000 then
    raise exception 'metering_quote: markup_bps % is out of range', p_markup_bps;
  end if;
  foreach v_class in array v_classes[1:4] loop
    v_prompt := v_prompt + coalesce((p_usage ->> (v_class || '_tokens'))::numeric, 0);
  end loop;
  select t into v_tier from jsonb_array_elements(coalesce(p_tiers, '[]'::jsonb)) t
   where (t ->> 'above_input_tokens')::numeric < v_prompt
   order by (t ->> 'above_input_tokens')::numeric desc limit 1;
  if v_tier is not null then
    v_prices := v_tier -> 'prices';
  end if;
  foreach v_class in array v_classes loop
    v_tokens := coalesce((p_usage ->> (v_class || '_tokens'))::numeric, 0);
    continue when v_tokens = 0;
    v_price := metering_resolve_price(v_prices, v_class);
    if v_price is null then
      return ledger_refusal('MODEL_NOT_PRICED', 'no price for ' || v_class || ' tokens',
                            jsonb_build_object('token_class', v_class));
    end if;
    v_product := v_tokens * v_price;
    v_weighted := v_weighted + v_product;
    if v_product > v_heaviest_product then
      v_heaviest := v_class;
      v_heaviest_product := v_product;
    end if;
    v_lines := v_lines || jsonb_build_object('token_class', v_class, 'tokens', v_tokens::text,
      'price_nano_per_mtok', v_price::text, 'cost_nano', div(v_product * v_multiplier, v_divisor)::text);
  end loop;
  v_cost := div(v_weighted * v_multiplier, v_divisor);
  if v_cost > 9223372036854775807 then
    return ledger_refusal('AMOUNT_OVERFLOW', 'the cost would exceed the int64 range of nano units',
                          jsonb_build_object('field', p_field || '.' || v_heaviest || '_tokens'));
  end if;
  return jsonb_build_object('ok', true, 'lines', v_lines,
    'tier_above_input_tokens', v_tier ->> 'above_input_tokens',
    'base_cost_nano', div(v_weighted, 1000000)::text, 'cost_nano', v_cost::text,
    'charge_amount', (metering_charge_with_carry(v_cost::bigint, 0)).amount::text,
    'hold_amount', metering_hold_amount(v_cost::bigint)::text);
end $$;
