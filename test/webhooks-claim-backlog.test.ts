// Goal: a webhook claim, and recording successes that pass their slots on to the next due
// deliveries, each read a few rows whatever the endpoint's backlog, never the whole backlog of
// pending deliveries.
// Method: one endpoint with BACKLOG pending deliveries, due now. The deliveries table is analyzed
// and the endpoints table is not (its state until autovacuum first analyzes it, and for good on
// a server with autovacuum off): the statistics under which the old claim read it all. A claim
// runs on a pool of one connection; PostgreSQL's own table counters (rows read by sequential
// scans plus rows fetched through indexes) are read before and after it, flushed by
// pg_stat_force_next_flush on that same connection. The claim must read a small number of rows,
// far below the backlog: the claim used to plan "has a due delivery" as a hash semi-join that
// read every pending delivery. Then the claimed deliveries are recorded as succeeded, each
// chaining to the next due one, and that statement must read few rows too: it used to lease its
// picks through a hash join over a sequential scan of the whole table (the planner guessed a
// tenth of the backlog would be picked), which slowed one endpoint's delivery rate as its
// backlog grew.
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { claimDeliveries, recordSuccesses, type ClaimedDelivery } from "@holdfast/webhooks/deliveries";
import { createTestDatabase, type TestDatabase } from "./support/db.js";
import { deliveryRowsRead, insertTenantEndpoint } from "./support/webhooks.js";

const BACKLOG = 20_000;
/** A claim's picks and the probes around them; anything near BACKLOG means a scan of it. */
const ROWS_READ_MAX = 500;
const LIMITS = { endpointsMax: 256, deliveriesMax: 64, perEndpointMax: 4, leaseMs: 30_000 };

let db: TestDatabase;
let pool: pg.Pool;

beforeAll(async () => {
  db = await createTestDatabase();
  pool = new pg.Pool({ connectionString: db.url, max: 1 });
  const tenant = "00000000-0000-4000-8000-0000000000a1";
  const endpoint = "00000000-0000-4000-8000-0000000000e1";
  await insertTenantEndpoint(db.pool, tenant, endpoint, "backlog");
  await db.pool.query(
    `insert into webhook_events (tenant_id, event_id, type, body, occurred_at)
     select $1, gen_random_uuid(), 'holdfast.spend.completed', '{}', now() from generate_series(1, $2::int)`,
    [tenant, BACKLOG],
  );
  await db.pool.query(
    `insert into webhook_deliveries (tenant_id, endpoint_id, event_id, event_type, next_attempt_at)
     select tenant_id, $2, event_id, type, now() - interval '1 minute' from webhook_events where tenant_id = $1`,
    [tenant, endpoint],
  );
  await db.pool.query("vacuum analyze webhook_deliveries");
});

afterAll(async () => {
  await pool?.end();
  await db?.drop();
});


describe("webhook claims under a backlog", () => {
  let claimed: ClaimedDelivery[] = [];

  it(`reads far fewer rows than the ${BACKLOG} pending deliveries of the endpoint`, async () => {
    const before = await deliveryRowsRead(pool, db.pool);
    claimed = (await claimDeliveries(pool, LIMITS)).deliveries;
    const read = (await deliveryRowsRead(pool, db.pool)) - before;

    expect(claimed).toHaveLength(LIMITS.perEndpointMax);
    expect(read).toBeGreaterThan(0);
    expect(read).toBeLessThan(ROWS_READ_MAX);
  });

  it("records successes and leases the next due deliveries reading far fewer rows than the backlog", async () => {
    expect(claimed).toHaveLength(LIMITS.perEndpointMax);
    const successes = claimed.map((delivery) => ({ delivery, status: 204, latencyMs: 1, chain: true }));
    const before = await deliveryRowsRead(pool, db.pool);
    const next = await recordSuccesses(pool, successes, LIMITS.leaseMs);
    const read = (await deliveryRowsRead(pool, db.pool)) - before;

    // Each success handed its slot to a delivery not claimed before.
    expect(next).toHaveLength(claimed.length);
    const previous = new Set(claimed.map((d) => d.delivery_id));
    expect(next.every((d) => !previous.has(d.delivery_id))).toBe(true);
    const { rows } = await db.pool.query<{ status: string; n: string }>(
      "select status, count(*)::text as n from webhook_deliveries where delivery_id = any($1) group by status",
      [claimed.map((d) => d.delivery_id)],
    );
    expect(rows).toEqual([{ status: "succeeded", n: String(claimed.length) }]);
    expect(read).toBeGreaterThan(0);
    expect(read).toBeLessThan(ROWS_READ_MAX);
  });
});
