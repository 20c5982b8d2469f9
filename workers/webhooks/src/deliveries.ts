/**
 * The worker's SQL: claiming due deliveries under a lease, recording outcomes, disabling
 * endpoints and pruning old rows.
 *
 * Claiming is the isolation mechanism. A claim locks the endpoints it considers (SKIP LOCKED, so
 * replicas claim disjoint endpoints at the same moment), and only then counts each endpoint's live
 * leases in a new statement, whose snapshot therefore sees every lease committed by earlier
 * claims: no endpoint ever has more than `perEndpointMax` deliveries in flight, across all
 * replicas. A slow endpoint only fills its own slots; the next claim takes other endpoints'
 * deliveries. No lock is held while sending: the claim commits first. Recording successes may
 * also pass each finished delivery's slot to the endpoint's next due one (recordSuccesses),
 * which leaves the lease count unchanged.
 *
 * @module
 */
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type pg from "pg";
import type { IdGenerator } from "@holdfast/common/ids";
import { inTransaction } from "@holdfast/common/pg";
import { WebhookEndpointDisabledEventSchema } from "@holdfast/gen/holdfast/v1/webhooks_pb";
import { disabled_reasons, toEndpoint } from "@holdfast/webhooks-core/convert";
import { ENDPOINT_DISABLED_TYPE } from "@holdfast/webhooks-core/event-types";
import { envelope, fanOut } from "@holdfast/webhooks-core/messages";
import { endpoint_columns, type EndpointRow } from "@holdfast/webhooks-core/store";

/** A delivery this worker holds the lease of, with what it needs to send it. */
export interface ClaimedDelivery {
  tenant_id: string;
  delivery_id: string;
  endpoint_id: string;
  event_id: string;
  event_type: string;
  /** Attempts including this one. */
  attempts: number;
  lease_id: string;
  url: string;
  secret: string;
  /** The pre-rotation secret while its overlap lasts, else null. */
  previous_secret: string | null;
  body: string;
}

export interface ClaimLimits {
  /** Most endpoints looked at per claim. */
  endpointsMax: number;
  /** Most deliveries claimed in all. */
  deliveriesMax: number;
  /** Most live leases per endpoint, counting other replicas' too. */
  perEndpointMax: number;
  /** Lease length: longer than a whole attempt, so a live attempt never loses its lease. */
  leaseMs: number;
}

/**
 * How claims and successes begin their transactions. A lease or a success lost in a database
 * crash only means the delivery is sent again (at least once), so their commits need not wait
 * for the disk; and these small index-driven statements cost less to run than to compile (JIT).
 * They are planned at every execution (about 0.13 ms for the claim's probe), never from a plan
 * a connection kept: a plan kept from when the deliveries table was empty, as on a new
 * deployment before its first analyze, scans the whole table on every probe and keeps doing so
 * while the table fills (test/webhooks-claim-empty-plan.test.ts).
 */
const BEGIN_WITHOUT_FLUSH =
  "begin; set local synchronous_commit = off; set local jit = off; set local plan_cache_mode = force_custom_plan";

/** What one claim leased, and how many endpoints it looked at. */
export interface Claim {
  deliveries: ClaimedDelivery[];
  /**
   * Endpoints locked and looked at: every endpoint with a due delivery and a free slot, up to
   * `endpointsMax`. Below that, a claim right after this one could find only what arrived since.
   */
  endpointsLooked: number;
}

/**
 * Claims due deliveries: lock the endpoints, pick within each one's free slots, lease the picks.
 * See the module comment for why the pick runs after the lock, in a statement of its own.
 */
export async function claimDeliveries(pool: pg.Pool, limits: ClaimLimits): Promise<Claim> {
  return inTransaction(pool, async (client) => {
    const { rows: endpoints } = await client.query<{ tenant_id: string; endpoint_id: string }>({
      name: "webhooks_claim_endpoints",
      text: `
        select e.tenant_id, e.endpoint_id from webhook_endpoints e
         -- "Has a due delivery" as a scalar subquery, not EXISTS: the planner could turn EXISTS
         -- into a hash semi-join that read every pending delivery on each claim (66 ms at a
         -- backlog of 280,000). A scalar subquery stays a probe per endpoint that stops at the
         -- first due row.
         where e.enabled and (
           select true from webhook_deliveries d
            where d.tenant_id = e.tenant_id and d.endpoint_id = e.endpoint_id and d.status = 'pending'
              and d.next_attempt_at <= now() and (d.locked_until is null or d.locked_until <= now())
            limit 1)
           -- Endpoints already at their limit are skipped rather than locked and marked. This
           -- count may be stale; the pick below counts again once the endpoint is locked.
           and (select count(*) from webhook_deliveries l
                 where l.tenant_id = e.tenant_id and l.endpoint_id = e.endpoint_id
                   and l.status = 'pending' and l.locked_until > now()) < $2
         order by e.claimed_at nulls first, e.endpoint_id
         limit $1
         for no key update skip locked`,
      values: [limits.endpointsMax, limits.perEndpointMax],
    });
    if (endpoints.length === 0) {
      return { deliveries: [], endpointsLooked: 0 };
    }
    const tenants = endpoints.map((e) => e.tenant_id);
    const ids = endpoints.map((e) => e.endpoint_id);
    const { rows: picked } = await client.query<{ tenant_id: string; delivery_id: string }>({
      name: "webhooks_claim_pick",
      text: `
        with room as (
          select t.tenant_id, t.endpoint_id,
                 $3::int - (select count(*) from webhook_deliveries l
                             where l.tenant_id = t.tenant_id and l.endpoint_id = t.endpoint_id
                               and l.status = 'pending' and l.locked_until > now())::int as free
            from unnest($1::uuid[], $2::uuid[]) as t (tenant_id, endpoint_id)
        )
        select p.tenant_id, p.delivery_id from room cross join lateral (
          select d.tenant_id, d.delivery_id, d.next_attempt_at from webhook_deliveries d
           where d.tenant_id = room.tenant_id and d.endpoint_id = room.endpoint_id and d.status = 'pending'
             and d.next_attempt_at <= now() and (d.locked_until is null or d.locked_until <= now())
           order by d.next_attempt_at, d.delivery_id
           limit greatest(room.free, 0)
        ) p
        order by p.next_attempt_at limit $4`,
      values: [tenants, ids, limits.perEndpointMax, limits.deliveriesMax],
    });
    // A separate statement over the picked keys, so the update is a primary-key lookup per row
    // whatever the planner guesses about the pick.
    const { rows } = await client.query<ClaimedDelivery>({
      name: "webhooks_claim_lease",
      text: `
        with claimed as (
          update webhook_deliveries d
             set attempts = d.attempts + 1, last_attempt_at = now(), lease_id = gen_random_uuid(),
                 locked_until = now() + make_interval(secs => $3::double precision / 1000)
            from unnest($1::uuid[], $2::uuid[]) as p (tenant_id, delivery_id)
           where d.tenant_id = p.tenant_id and d.delivery_id = p.delivery_id
             -- Re-checked on the row itself: a success may have chained to it since the pick.
             and d.status = 'pending' and (d.locked_until is null or d.locked_until <= now())
          returning d.tenant_id, d.delivery_id, d.endpoint_id, d.event_id, d.event_type, d.attempts, d.lease_id
        ),
        -- Round robin: the endpoints looked at now go to the back of the line.
        marked as (
          update webhook_endpoints m set claimed_at = now()
            from unnest($4::uuid[], $5::uuid[]) as t (tenant_id, endpoint_id)
           where m.tenant_id = t.tenant_id and m.endpoint_id = t.endpoint_id
        )
        select c.*, e.url, e.secret, case when e.previous_secret_expires_at > now() then e.previous_secret end as previous_secret,
               ev.body
          from claimed c
          join webhook_endpoints e on e.tenant_id = c.tenant_id and e.endpoint_id = c.endpoint_id
          join webhook_events ev on ev.tenant_id = c.tenant_id and ev.event_id = c.event_id`,
      values: [picked.map((p) => p.tenant_id), picked.map((p) => p.delivery_id), limits.leaseMs, tenants, ids],
    });
    return { deliveries: rows, endpointsLooked: endpoints.length };
  }, BEGIN_WITHOUT_FLUSH);
}

/** What an attempt's outcome records. */
export interface Outcome {
  status: number | null;
  error: string | null;
  latencyMs: number;
}

/** A successful attempt to record. */
export interface Success {
  delivery: ClaimedDelivery;
  status: number;
  latencyMs: number;
  /** Whether to lease the endpoint's next due delivery in its place. */
  chain: boolean;
}

/**
 * Marks deliveries succeeded, ends their endpoints' failure runs, and for each success with
 * `chain` leases the next due delivery of the same endpoint, all in one statement. Handing a
 * slot from a finished delivery to the next keeps the endpoint's lease count as it was, so the
 * per-endpoint limit holds without locking the endpoint; the next delivery is locked SKIP
 * LOCKED, and the claim's lease statement re-checks that a row is still free, so the two never
 * lease the same row.
 *
 * A delivery whose lease was lost (expired and re-claimed, or reset by RetryDelivery) is left
 * alone: the holder of the new lease records its own outcome. The commit does not wait for the
 * disk: a success lost in a database crash means the delivery is sent again, which the
 * at-least-once contract allows (receivers drop repeats by webhook-id).
 */
export async function recordSuccesses(pool: pg.Pool, successes: readonly Success[], leaseMs: number): Promise<ClaimedDelivery[]> {
  const sorted = [...successes].sort((a, b) => (a.delivery.delivery_id < b.delivery.delivery_id ? -1 : 1));
  return inTransaction(pool, async (client) => {
    const { rows } = await client.query<ClaimedDelivery>({
      name: "webhooks_record_successes",
      text: `
        with o as (
          select * from unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::int[], $5::int[], $6::bool[])
            as t (tenant_id, delivery_id, lease_id, http_status, latency_ms, chain)
        ),
        done as (
          update webhook_deliveries d set status = 'succeeded', locked_until = null, lease_id = null,
                 last_http_status = o.http_status, last_error = null, last_latency_ms = o.latency_ms, finished_at = now()
            from o where d.tenant_id = o.tenant_id and d.delivery_id = o.delivery_id and d.lease_id = o.lease_id
          returning d.tenant_id, d.endpoint_id, o.chain
        ),
        healed as (
          update webhook_endpoints e set failing_since = null
            from (select distinct tenant_id, endpoint_id from done) x
           where e.tenant_id = x.tenant_id and e.endpoint_id = x.endpoint_id and e.failing_since is not null
        ),
        slots as (
          select done.tenant_id, done.endpoint_id, count(*) as n from done
            join webhook_endpoints e on e.tenant_id = done.tenant_id and e.endpoint_id = done.endpoint_id and e.enabled
           where done.chain
           group by done.tenant_id, done.endpoint_id
        ),
        -- The picks as two arrays, leased through unnest below: the planner cannot know how
        -- many rows "limit slots.n" keeps and guessed a tenth of the backlog, so a join with
        -- the picks as rows was planned as a hash join over a sequential scan of the whole table
        -- (a statement slower the longer the backlog). unnest of an array is planned as a few
        -- rows, each a primary-key lookup.
        picked as (
          select array_agg(p.tenant_id) as tenant_ids, array_agg(p.delivery_id) as delivery_ids
            from slots cross join lateral (
            select d.tenant_id, d.delivery_id from webhook_deliveries d
             where d.tenant_id = slots.tenant_id and d.endpoint_id = slots.endpoint_id and d.status = 'pending'
               and d.next_attempt_at <= now() and (d.locked_until is null or d.locked_until <= now())
             order by d.next_attempt_at, d.delivery_id
             limit slots.n
             for update skip locked
          ) p
        ),
        leased as (
          update webhook_deliveries d
             set attempts = d.attempts + 1, last_attempt_at = now(), lease_id = gen_random_uuid(),
                 locked_until = now() + make_interval(secs => $7::double precision / 1000)
            from picked, unnest(picked.tenant_ids, picked.delivery_ids) as p (tenant_id, delivery_id)
           where d.tenant_id = p.tenant_id and d.delivery_id = p.delivery_id
          returning d.tenant_id, d.delivery_id, d.endpoint_id, d.event_id, d.event_type, d.attempts, d.lease_id
        )
        select l.*, e.url, e.secret, case when e.previous_secret_expires_at > now() then e.previous_secret end as previous_secret,
               ev.body
          from leased l
          join webhook_endpoints e on e.tenant_id = l.tenant_id and e.endpoint_id = l.endpoint_id
          join webhook_events ev on ev.tenant_id = l.tenant_id and ev.event_id = l.event_id`,
      values: [
        sorted.map((s) => s.delivery.tenant_id),
        sorted.map((s) => s.delivery.delivery_id),
        sorted.map((s) => s.delivery.lease_id),
        sorted.map((s) => s.status),
        sorted.map((s) => s.latencyMs),
        sorted.map((s) => s.chain),
        leaseMs,
      ],
    });
    return rows;
  }, BEGIN_WITHOUT_FLUSH);
}

/**
 * Records a failed attempt: pending again after `delayMs`, or failed for good when `final`.
 * Starts the endpoint's failure run if none is running. Returns whether the endpoint has now
 * been failing for `disableAfterSeconds` (and is still enabled), or null when the lease was lost.
 */
export async function recordFailure(
  pool: pg.Pool,
  d: ClaimedDelivery,
  outcome: Outcome,
  next: { final: boolean; delayMs: number },
  disableAfterSeconds: number,
): Promise<{ failingTooLong: boolean } | null> {
  const { rows } = await pool.query<{ failing_too_long: boolean }>({
    name: "webhooks_record_failure",
    text: `
      with done as (
        update webhook_deliveries set
               status = case when $6 then 'failed' else 'pending' end,
               next_attempt_at = now() + make_interval(secs => $7::double precision / 1000),
               finished_at = case when $6 then now() end,
               locked_until = null, lease_id = null,
               last_http_status = $3, last_error = $4, last_latency_ms = $5
         where tenant_id = $1 and delivery_id = $2 and lease_id = $8
        returning tenant_id, endpoint_id
      )
      update webhook_endpoints e set failing_since = coalesce(e.failing_since, now())
        from done where e.tenant_id = done.tenant_id and e.endpoint_id = done.endpoint_id
      returning e.enabled and e.failing_since <= now() - make_interval(secs => $9::int) as failing_too_long`,
    values: [
      d.tenant_id,
      d.delivery_id,
      outcome.status,
      outcome.error,
      outcome.latencyMs,
      next.final,
      next.delayMs,
      d.lease_id,
      disableAfterSeconds,
    ],
  });
  const row = rows[0];
  return row === undefined ? null : { failingTooLong: row.failing_too_long };
}

/**
 * Disables an endpoint for `reason` and, in the same transaction, queues a
 * holdfast.webhook.endpoint_disabled event to the tenant's other endpoints that take it. Returns
 * false when the endpoint was already disabled (another replica or an admin got there first), in
 * which case nothing is written.
 */
export async function disableEndpoint(
  pool: pg.Pool,
  newId: IdGenerator,
  target: { tenantId: string; endpointId: string; reason: "gone" | "failing"; lastError: string },
): Promise<boolean> {
  return inTransaction(pool, async (client) => {
    const { rows } = await client.query<EndpointRow>({
      name: "webhooks_disable_endpoint",
      text: `
        update webhook_endpoints set enabled = false, disabled_reason = $3, disabled_at = now(), updated_at = now()
         where tenant_id = $1 and endpoint_id = $2 and enabled
        returning ${endpoint_columns}`,
      values: [target.tenantId, target.endpointId, target.reason],
    });
    const endpoint = rows[0];
    if (endpoint !== undefined) {
      const eventId = newId();
      const at = endpoint.disabled_at ?? new Date();
      const data = create(WebhookEndpointDisabledEventSchema, {
        eventId,
        tenantId: target.tenantId,
        endpoint: toEndpoint(endpoint),
        reason: disabled_reasons[target.reason],
        lastError: target.lastError,
        occurredAt: timestampFromDate(at),
      });
      await fanOut(client, [envelope(target.tenantId, eventId, ENDPOINT_DISABLED_TYPE, at, WebhookEndpointDisabledEventSchema, data)]);
    }
    return endpoint !== undefined;
  });
}

/** Rows one pruneOld deleted. */
export interface Pruned {
  deliveries: number;
  messages: number;
}

/**
 * Deletes up to `batchMax` finished deliveries older than the retention, then those of their
 * stored messages that no delivery refers to any more. A message is stored only together with
 * at least one delivery, so it becomes unreferenced only when its last delivery is deleted: here,
 * or with its endpoint (deleteEndpoint deletes such messages itself). Looking up just the
 * messages of the deliveries deleted keeps each pass proportional to what it deletes, where a
 * search of all messages for unreferenced ones would grow with the retention period.
 */
export async function pruneOld(pool: pg.Pool, retentionHours: number, batchMax: number): Promise<Pruned> {
  const deliveries = await pool.query<{ tenant_id: string; event_id: string }>({
    name: "webhooks_prune_deliveries",
    text: `
      delete from webhook_deliveries where ctid = any (array(
        select ctid from webhook_deliveries
         where status <> 'pending' and finished_at < now() - $1 * interval '1 hour'
         limit $2))
      returning tenant_id, event_id`,
    values: [retentionHours, batchMax],
  });
  if (deliveries.rows.length === 0) {
    return { deliveries: 0, messages: 0 };
  }
  // A new statement, so that its snapshot no longer shows the deliveries just deleted.
  const messages = await pool.query({
    name: "webhooks_prune_messages",
    text: `
      delete from webhook_events ev using unnest($1::uuid[], $2::uuid[]) as gone (tenant_id, event_id)
       where ev.tenant_id = gone.tenant_id and ev.event_id = gone.event_id
         and not exists (select 1 from webhook_deliveries d where d.tenant_id = ev.tenant_id and d.event_id = ev.event_id)`,
    values: [deliveries.rows.map((r) => r.tenant_id), deliveries.rows.map((r) => r.event_id)],
  });
  return { deliveries: deliveries.rowCount ?? 0, messages: messages.rowCount ?? 0 };
}
