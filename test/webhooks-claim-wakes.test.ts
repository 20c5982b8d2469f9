// Goal: deliveries stored for an endpoint this worker already sends to at its limit do not run
// a claim (which could only find the endpoint full), nor does a claim that took every endpoint's
// free slots run another at once, yet every delivery is sent; deliveries for any other endpoint
// still wake the claim loop at once.
// Method: a sender on a test database, its HTTP poster a stub that holds every request to
// endpoint A until the test lets them go and answers endpoint B at once. A gets more pending
// deliveries than its limit, so the sender holds the limit of requests to A open after one
// claim, and has run no other. The sender's claim counter is read before and after telling it of new deliveries for A (it must not move:
// the safety poll is set to an hour, so nothing else claims), then for B (it must move, and B's
// delivery must be sent). Then A's requests are let go: every delivery of A, the ones stored
// without a wake included, must end up succeeded, passed from one slot to the next.
import { randomUUID } from "node:crypto";
import pg from "pg";
import pino from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { uuidV7 } from "@holdfast/common/ids";
import { createSender } from "@holdfast/webhooks/sender";
import { createTestDatabase, type TestDatabase } from "./support/db.js";
import { waitFor } from "./support/webhooks.js";

const LIMIT = 4;
const tenant = "00000000-0000-4000-8000-0000000000c1";
const [endpointA, endpointB] = [randomUUID(), randomUUID()];
const urlOf = (endpoint: string) => `https://example.com/hooks/${endpoint}`;

let db: TestDatabase;
let pool: pg.Pool;

beforeAll(async () => {
  db = await createTestDatabase();
  pool = new pg.Pool({ connectionString: db.url, max: 8 });
  await db.pool.query("insert into tenants (id, name) values ($1, 'wakes')", [tenant]);
  for (const endpoint of [endpointA, endpointB]) {
    await db.pool.query(
      "insert into webhook_endpoints (tenant_id, endpoint_id, url, secret, created_at, updated_at) values ($1, $2, $3, 'whsec_wakes', now(), now())",
      [tenant, endpoint, urlOf(endpoint)],
    );
  }
});

afterAll(async () => {
  await pool?.end();
  await db?.drop();
});

/** Stores `count` messages with one pending delivery each to `endpoint`. */
async function addDeliveries(endpoint: string, count: number): Promise<void> {
  await db.pool.query(
    `with ev as (
       insert into webhook_events (tenant_id, event_id, type, body, occurred_at)
       select $1, gen_random_uuid(), 'holdfast.spend.completed', '{}', now() from generate_series(1, $3::int)
       returning tenant_id, event_id, type)
     insert into webhook_deliveries (tenant_id, endpoint_id, event_id, event_type, next_attempt_at)
     select tenant_id, $2, event_id, type, now() from ev`,
    [tenant, endpoint, count],
  );
}

async function statuses(endpoint: string): Promise<Record<string, number>> {
  const { rows } = await db.pool.query<{ status: string; n: number }>(
    "select status, count(*)::int as n from webhook_deliveries where endpoint_id = $1 group by status",
    [endpoint],
  );
  return Object.fromEntries(rows.map((r) => [r.status, r.n]));
}

describe("waking the claim loop for new deliveries", () => {
  it("skips the claim for an endpoint already at its limit in this worker, and still delivers everything", async () => {
    const held: (() => void)[] = [];
    const sentTo = { [endpointA]: 0, [endpointB]: 0 };
    const ok = { status: 204, retryAfterMs: null, error: null, latencyMs: 1 };
    const sender = createSender({
      pool,
      logger: pino({ level: "silent" }),
      poster: {
        post: (url) => {
          const endpoint = url === urlOf(endpointA) ? endpointA : endpointB;
          sentTo[endpoint]++;
          return endpoint === endpointA ? new Promise((resolve) => held.push(() => resolve(ok))) : Promise.resolve(ok);
        },
        close: () => undefined,
      },
      newId: uuidV7,
      concurrency: 64,
      endpointConcurrency: LIMIT,
      retryScheduleMs: [1000],
      disableAfterSeconds: 3600,
      leaseMs: 60_000,
      claimEndpointsMax: 256,
      pollIdleMs: 3_600_000,
      retryDelayMsMax: 1000,
    });
    await addDeliveries(endpointA, LIMIT + 2);
    sender.start();
    try {
      await waitFor("the limit of requests to A open", () => held.length === LIMIT);
      // One claim took A's free slots; none ran after it to find A full.
      expect(sender.totals()).toMatchObject({ claims: 1, claimsEmpty: 0 });

      // New deliveries for A only: no claim.
      await addDeliveries(endpointA, 3);
      const claimsBefore = sender.totals().claims;
      sender.deliveriesAdded([{ tenant_id: tenant, endpoint_id: endpointA }]);
      sender.deliveriesAdded([{ tenant_id: tenant, endpoint_id: endpointA }, { tenant_id: tenant, endpoint_id: endpointA }]);
      await new Promise((resolve) => setTimeout(resolve, 200));
      expect(sender.totals().claims).toBe(claimsBefore);
      expect(held).toHaveLength(LIMIT);

      // A delivery for B, even stored with more for A: a claim at once, and B's delivery goes out.
      await addDeliveries(endpointB, 1);
      sender.deliveriesAdded([{ tenant_id: tenant, endpoint_id: endpointA }, { tenant_id: tenant, endpoint_id: endpointB }]);
      await waitFor("B's delivery sent", () => sentTo[endpointB] === 1);
      expect(sender.totals().claims).toBeGreaterThan(claimsBefore);
      await waitFor("B's delivery recorded", async () => (await statuses(endpointB))["succeeded"] === 1);

      // Let A's requests go, and each one after it: all 9 of A's deliveries succeed.
      const total = LIMIT + 2 + 3;
      await waitFor("every delivery of A succeeded", async () => {
        while (held.length > 0) held.shift()!();
        return (await statuses(endpointA))["succeeded"] === total;
      });
      expect(await statuses(endpointA)).toEqual({ succeeded: total });
      expect(sentTo[endpointA]).toBe(total);
    } finally {
      while (held.length > 0) held.shift()!();
      await sender.stop();
    }
  });
});
