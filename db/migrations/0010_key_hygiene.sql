-- API key hygiene: an optional expiry, when a key was last used, and a per-key rate.
--
-- expires_at: past it the key is refused like a revoked one. The verifier reads it with the
-- key and compares it with its own clock on every call, so an expiry needs no query.
-- last_used_at: written by the ledger in the background, at most once a minute per key and
-- process (services/ledger/src/auth/api-keys.ts), never on a call's own path.
-- rate_per_second, rate_burst: the key's own token bucket in place of the server's per-key
-- default (HOLDFAST_RATE_LIMIT_KEY_*); both null uses the default.

alter table api_keys
  add column expires_at timestamptz null,
  add column last_used_at timestamptz null,
  add column rate_per_second integer null check (rate_per_second between 1 and 1000000),
  add column rate_burst integer null check (rate_burst between 1 and 1000000),
  add constraint api_keys_rate_limit_whole check ((rate_per_second is null) = (rate_burst is null));
