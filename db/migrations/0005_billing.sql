-- Billing stream: usage records the billing-stream worker could not deliver.
--
-- The worker's progress lives in JetStream (one durable consumer per sink), so the only state
-- it keeps in PostgreSQL is what a billing engine refused for good: a 4xx that no retry can fix
-- (an unknown customer, a timestamp outside the engine's window), or a usage record the sink's
-- mapping could not build (a wallet without the customer id the sink needs). Such a record is
-- written here with the engine's answer and acknowledged, so it never holds back the usage
-- behind it. After fixing the cause, `holdfast billing backfill` re-sends it and marks the row
-- resolved; the transfer id is the engine's idempotency key, so re-sending is always safe.
create table billing_dead_letters (
  tenant_id      uuid        not null,
  -- The sink's name from the billing-stream configuration file.
  sink           text        not null check (sink ~ '^[A-Za-z0-9_-]{1,64}$'),
  -- The journal row the usage record came from; also the engine's idempotency key.
  transfer_id    uuid        not null,
  kind           text        not null check (kind in ('spend', 'capture', 'refund')),
  wallet_id      text        not null,
  -- The HTTP status of the engine's answer; null when nothing was sent (mapping failed).
  http_status    integer,
  -- The engine's answer (its response body, truncated) or why the record could not be built.
  answer         text        not null,
  -- The usage record as the sink would send it (or as far as it could be built).
  request        jsonb       not null,
  attempts       integer     not null check (attempts >= 0),
  first_failed_at timestamptz not null,
  last_failed_at  timestamptz not null,
  -- Set when a later send of the same transfer was accepted (backfill after a fix).
  resolved_at    timestamptz,
  primary key (tenant_id, sink, transfer_id)
);

-- Listing what is open for a sink, oldest first.
create index billing_dead_letters_open on billing_dead_letters (sink, first_failed_at)
  where resolved_at is null;
