-- Webhooks: endpoints, the messages they are sent, and one delivery row per (endpoint, message).
--
-- The deliveries table is the source of truth for the webhook worker (workers/webhooks). Its
-- JetStream consumer inserts the rows of an event before it acknowledges the message, so an
-- event is never lost between NATS and PostgreSQL; the unique key (tenant, endpoint, event)
-- makes a redelivered message a no-op. Senders claim due rows in short transactions by setting
-- a lease (locked_until, lease_id), commit, send outside any transaction, and record the outcome
-- only if they still hold the lease. See docs/webhooks.md.

create table webhook_endpoints (
  tenant_id       uuid        not null references tenants (id),
  endpoint_id     uuid        not null,
  url             text        not null check (length(url) between 1 and 2048),
  -- Event type filters: exact types (holdfast.hold.captured) or a kind wildcard (holdfast.hold.*).
  -- Empty means every event.
  event_types     text[]      not null default '{}',
  description     text        not null default '' check (length(description) <= 512),
  -- The Standard Webhooks signing secret (whsec_ + base64 of 32 random bytes). It has to be
  -- stored as is because the worker computes HMACs with it; it is never returned after
  -- CreateEndpoint / RotateEndpointSecret and never logged.
  secret          text        not null,
  -- After a rotation the old secret keeps signing (next to the new one) until this time.
  previous_secret text,
  previous_secret_expires_at timestamptz,
  secret_rotated_at timestamptz,
  enabled         boolean     not null default true,
  disabled_reason text        check (disabled_reason in ('manual', 'gone', 'failing')),
  disabled_at     timestamptz,
  -- The first failed attempt since the last success; null while the endpoint succeeds. An
  -- endpoint whose failures last HOLDFAST_WEBHOOK_DISABLE_AFTER_SECONDS is disabled.
  failing_since   timestamptz,
  -- When a sender last claimed deliveries of this endpoint; claims go to the least recent
  -- first, so every endpoint gets its turn.
  claimed_at      timestamptz,
  created_at      timestamptz not null,
  updated_at      timestamptz not null,
  primary key (tenant_id, endpoint_id),
  check (enabled = (disabled_reason is null))
);

-- The body of each message sent to at least one endpoint: a ledger event from the stream, a
-- holdfast.webhook.endpoint_disabled event or a holdfast.webhook.test event. `body` is the exact
-- JSON sent ({type, timestamp, data}), so every attempt of a delivery sends the same bytes.
create table webhook_events (
  tenant_id   uuid        not null,
  event_id    uuid        not null,
  type        text        not null,
  body        text        not null,
  occurred_at timestamptz not null,
  created_at  timestamptz not null default now(),
  primary key (tenant_id, event_id)
);

create table webhook_deliveries (
  tenant_id       uuid        not null,
  delivery_id     uuid        not null default ledger_uuidv7(clock_timestamp()),
  endpoint_id     uuid        not null,
  event_id        uuid        not null,
  event_type      text        not null,
  -- pending: waiting for its next attempt (or being attempted, while leased);
  -- succeeded: an attempt got a 2xx; failed: the last attempt of the schedule failed.
  status          text        not null default 'pending' check (status in ('pending', 'succeeded', 'failed')),
  -- Attempts started, counted when claimed (so an attempt cut short by a crash still counts).
  attempts        integer     not null default 0 check (attempts >= 0),
  next_attempt_at timestamptz not null,
  -- The lease of the sender working on it; null when nobody is.
  locked_until    timestamptz,
  lease_id        uuid,
  last_attempt_at timestamptz,
  last_http_status integer,
  last_error      text,
  last_latency_ms integer,
  created_at      timestamptz not null default now(),
  finished_at     timestamptz,
  primary key (tenant_id, delivery_id),
  unique (tenant_id, endpoint_id, event_id),
  foreign key (tenant_id, endpoint_id) references webhook_endpoints (tenant_id, endpoint_id) on delete cascade,
  foreign key (tenant_id, event_id) references webhook_events (tenant_id, event_id),
  check ((locked_until is null) = (lease_id is null)),
  check ((status = 'pending') = (finished_at is null))
);

-- What a sender looks for: an endpoint's due deliveries, oldest due first, read in index order
-- (delivery_id is the tie-breaker of the claim's ORDER BY, so no sort of the backlog is needed).
create index webhook_deliveries_due on webhook_deliveries (tenant_id, endpoint_id, next_attempt_at, delivery_id)
  where status = 'pending';
-- Counting an endpoint's leases (its requests in flight) reads only the few leased rows.
create index webhook_deliveries_leased on webhook_deliveries (tenant_id, endpoint_id)
  where status = 'pending' and locked_until is not null;
-- ListDeliveries: an endpoint's deliveries newest first (delivery ids are UUIDv7).
create index webhook_deliveries_by_endpoint on webhook_deliveries (tenant_id, endpoint_id, delivery_id);
-- Retention: finished deliveries by age, and the deliveries of a message.
create index webhook_deliveries_finished on webhook_deliveries (finished_at) where status <> 'pending';
create index webhook_deliveries_by_event on webhook_deliveries (tenant_id, event_id);
create index webhook_events_created on webhook_events (created_at);
