-- Tenants and the API keys that act for them.
--
-- A tenant is an isolated ledger: every other table carries tenant_id and nothing crosses
-- tenants. An API key belongs to exactly one tenant.

create table tenants (
  id uuid primary key,
  name text not null unique check (length(name) between 1 and 128),
  created_at timestamptz not null default now()
);

-- key_id is the primary key on its own (not with tenant_id) because a bearer key is looked up
-- by key_id before its tenant is known. It is 64 random bits, so it is globally unique in
-- practice and the primary key turns the rare collision into an error instead of a mix-up.
-- Only SHA-256 of the secret is stored; the secret itself is shown to the caller once.
create table api_keys (
  tenant_id uuid not null references tenants (id),
  key_id text not null primary key check (key_id ~ '^[0-9a-f]{16}$'),
  name text not null check (length(name) between 1 and 128),
  role text not null check (role in ('admin', 'writer', 'reader')),
  wallet_id text null check (wallet_id ~ '^[A-Za-z0-9_:-]{1,128}$'),
  secret_hash bytea not null check (octet_length(secret_hash) = 32),
  created_at timestamptz not null default now(),
  revoked_at timestamptz null,
  -- A wallet-scoped admin key would be a contradiction: admin calls are not about one wallet.
  check (wallet_id is null or role <> 'admin')
);

-- Serves ListApiKeys: a tenant's keys in creation order, paged by (created_at, key_id).
create index api_keys_tenant_id_created_at_key_id_idx on api_keys (tenant_id, created_at, key_id);
