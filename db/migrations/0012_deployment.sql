-- The deployment's identity: one row holding the id of the deployment this database belongs to.
--
-- The event stream and every durable consumer on NATS record the id of the deployment that owns
-- them, so that a second deployment pointed at the same NATS server and namespace refuses to
-- start instead of taking the first one's events (docs/events.md, "Namespaces"). The row is
-- inserted by the first process that needs the id (packages/common/src/deployment.ts), not
-- here, so that every database cloned from a freshly migrated template gets an id of its own.
-- A database restored from a backup keeps its id: it is the same deployment.

create table deployment (
  -- Always true: the primary key makes the table hold at most one row.
  singleton     boolean     primary key default true check (singleton),
  deployment_id uuid        not null,
  created_at    timestamptz not null default now()
);

-- The first process of the deployment inserts the row (as the runtime role); nobody updates it.
grant insert on deployment to holdfast_runtime;
call holdfast_secure_functions();
