// Goal: a webhook claim reads a few rows even when its statements were planned while the
// deliveries table was empty, as on a new deployment before autovacuum's first analyze: the
// worker's connections keep their plans, and a plan chosen on an empty table stays in use while
// the table fills.
// Method: the deliveries table is analyzed empty and the claim runs PLANNING_CLAIMS times on a
// pool of one connection, finding nothing: enough executions for PostgreSQL to keep a generic
// plan of each of its prepared statements. Then one endpoint gets FINISHED finished deliveries
// (succeeded, not yet pruned by retention) and, newer than all of them, a few pending ones due
// now; nothing is analyzed again. The claim runs once more on that connection, and
// PostgreSQL's own table counters (rows read by sequential scans plus rows fetched through
// indexes, flushed by pg_stat_force_next_flush on that connection) must grow by far less than
// FINISHED. The claim's "has a due delivery" probe used to be planned, on the empty table, through
// the endpoint's index of all its deliveries oldest first, and read every finished one before
// the first pending.
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { claimDeliveries } from "@holdfast/webhooks/deliveries";
import { createTestDatabase, type TestDatabase } from "./support/db.js";
import { deliveryRowsRead, insertTenantEndpoint } from "./support/webhooks.js";

const FINISHED = 20_000;
const PENDING = 3;
/** PostgreSQL plans a prepared statement afresh five times before it may keep a generic plan. */
const PLANNING_CLAIMS = 8;
/** The claim's probes and picks; anything near FINISHED means the finished rows were read. */
const ROWS_READ_MAX = 500;
const LIMITS = { endpointsMax: 256, deliveriesMax: 64, perEndpointMax: 4, leaseMs: 30_000 };

let db: TestDatabase;
let pool: pg.Pool;

beforeAll(async () => {
  db = await createTestDatabase();
  pool = new pg.Pool({ connectionString: db.url, max: 1 });
  const tenant = "00000000-0000-4000-8000-0000000000a2";
  const endpoint = "00000000-0000-4000-8000-0000000000e2";
  await db.pool.query("vacuum analyze webhook_deliveries");
  await insertTenantEndpoint(db.pool, tenant, endpoint, "empty-plan");
  for (let i = 0; i < PLANNING_CLAIMS; i++) {
    expect((await claimDeliveries(pool, LIMITS)).deliveries).toEqual([]);
  }
  await db.pool.query(
    `insert into webhook_events (tenant_id, event_id, type, body, occurred_at)
     select $1, gen_random_uuid(), 'holdfast.spend.completed', '{}', now() from generate_series(1, $2::int)`,
    [tenant, FINISHED + PENDING],
  );
  // Delivery ids are UUIDv7 of their insert time: the finished rows first, so that they come
  // first in the endpoint's index of all deliveries.
  await db.pool.query(
    `insert into webhook_deliveries (tenant_id, endpoint_id, event_id, event_type, next_attempt_at,
                                     status, finished_at, attempts)
     select tenant_id, $2, event_id, type, now() - interval '1 minute', 'succeeded', now(), 1
       from webhook_events where tenant_id = $1 order by event_id limit $3`,
    [tenant, endpoint, FINISHED],
  );
  await db.pool.query(
    `insert into webhook_deliveries (tenant_id, endpoint_id, event_id, event_type, next_attempt_at)
     select e.tenant_id, $2, e.event_id, e.type, now() - interval '1 minute'
       from webhook_events e
      where e.tenant_id = $1
        and not exists (select 1 from webhook_deliveries d where d.tenant_id = e.tenant_id and d.event_id = e.event_id)`,
    [tenant, endpoint],
  );
});

afterAll(async () => {
  await pool?.end();
  await db?.drop();
});


describe("webhook claims planned on an empty deliveries table", () => {
  it(`claim the pending deliveries without reading the ${FINISHED} finished ones`, async () => {
    const { rows: stats } = await db.pool.query<{ reltuples: number }>(
      "select reltuples from pg_class where relname = 'webhook_deliveries'",
    );
    // The premise: the planner still believes the table is empty.
    expect(stats[0]!.reltuples).toBe(0);

    const before = await deliveryRowsRead(pool, db.pool);
    const { deliveries } = await claimDeliveries(pool, LIMITS);
    const read = (await deliveryRowsRead(pool, db.pool)) - before;

    expect(deliveries).toHaveLength(PENDING);
    expect(read).toBeGreaterThan(0);
    expect(read).toBeLessThan(ROWS_READ_MAX);
  });
});
