// Retention (services/ledger/src/retention.ts, migration 0018): the idempotency sweep deletes
// old records and keeps young ones, commands retried during a sweep are still applied once,
// the events prune never deletes an unpublished or young event and takes only each wallet's
// oldest events, and the invariants and `holdfast verify` still hold after pruning (and still
// catch a missing event above or below what was pruned). Webhook retention deletes finished
// deliveries and a stored message with its last delivery, and deleting an endpoint deletes the
// messages only its deliveries referred to.
import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Caller } from "@holdfast/ledger/domain";
import { checkInvariants } from "@holdfast/ledger/invariants";
import { startRetention } from "@holdfast/ledger/retention";
import { verifyLedger } from "@holdfast/cli/verify";
import { main } from "@holdfast/cli/main";
import { pruneOld } from "@holdfast/webhooks/deliveries";
import { deleteEndpoint } from "@holdfast/webhooks-core/store";
import { createTestLedger, key, quietLogger } from "./support/ledger.js";

const HOUR_MS = 3_600_000;

let t: Awaited<ReturnType<typeof createTestLedger>>;

beforeAll(async () => {
  t = await createTestLedger({ groupCommit: true, poolMax: 20 });
});
afterAll(async () => {
  await t?.close();
});

/** A sweeper whose passes the test runs itself. */
function sweeper(options: { idempotencyRetentionMs?: number; eventRetentionMs?: number | null; batchRows?: number }) {
  return startRetention({
    pool: t.pool,
    logger: quietLogger,
    clock: t.clock,
    idempotencyRetentionMs: options.idempotencyRetentionMs ?? 24 * HOUR_MS,
    eventRetentionMs: options.eventRetentionMs ?? null,
    batchRows: options.batchRows ?? 5000,
    background: false,
  });
}

async function deposit(caller: Caller, walletId: string, idempotencyKey = key(), amount = 10n) {
  const r = await t.ledger.deposit(caller, { walletId, asset: "USD", amount, idempotencyKey, metadata: {} });
  if (!r.ok) throw new Error(r.reason);
  return r;
}

async function count(sql: string, values: unknown[]): Promise<number> {
  return (await t.pool.query<{ n: number }>(`select count(*)::int as n from (${sql}) x`, values)).rows[0]!.n;
}

async function posted(caller: Caller, walletId: string): Promise<bigint> {
  const { rows } = await t.pool.query<{ p: string }>(
    "select (credits_posted - debits_posted)::text as p from accounts where tenant_id = $1 and wallet_id = $2 and asset = 'USD'",
    [caller.tenantId, walletId],
  );
  return BigInt(rows[0]?.p ?? "0");
}

/** Runs `holdfast verify --tenant` through the CLI. */
async function verifyCli(tenantId: string): Promise<{ code: number; out: string }> {
  const out: string[] = [];
  const code = await main(["node", "holdfast", "--database-url", t.db.url, "verify", "--tenant", tenantId], {
    out: (l) => void out.push(l),
    err: (l) => void out.push(l),
  });
  return { code, out: out.join("\n") };
}

describe("idempotency retention", () => {
  it("deletes records older than the retention period in batches and keeps the younger ones", async () => {
    const caller = await t.newTenant();
    const wallet = "idem-age";
    const oldKeys = Array.from({ length: 12 }, () => key("old"));
    for (const k of oldKeys) await deposit(caller, wallet, k);
    t.clock.advance(25 * HOUR_MS);
    const youngKeys = Array.from({ length: 5 }, () => key("young"));
    for (const k of youngKeys) await deposit(caller, wallet, k);

    const retention = sweeper({ batchRows: 5 });
    try {
      // Only this tenant's rows are old on this clock... other tests' rows may be too; count ours.
      const pass = await retention.sweep();
      expect(pass.idempotencyRecords).toBeGreaterThanOrEqual(oldKeys.length);
      const left = await t.pool.query<{ idempotency_key: string }>(
        "select idempotency_key from idempotency_keys where tenant_id = $1 order by idempotency_key",
        [caller.tenantId],
      );
      expect(left.rows.map((r) => r.idempotency_key).sort()).toEqual([...youngKeys].sort());
      // A young key is still honoured: the retry is a replay, not a second deposit.
      const replay = await deposit(caller, wallet, youngKeys[0]);
      expect(replay.replayed).toBe(true);
      expect(await posted(caller, wallet)).toBe(170n);
    } finally {
      await retention.stop();
    }
  });

  it("applies a command retried while a sweep runs exactly once", async () => {
    const caller = await t.newTenant();
    // A backlog of expired records for the sweep to chew through, as if retention had fallen behind.
    await t.pool.query(
      `insert into idempotency_keys (tenant_id, idempotency_key, command, fingerprint, response, created_at)
       select $1, 'expired-' || i, 'Deposit', '\\x00', '{}'::jsonb, $2::timestamptz - interval '48 hours'
         from generate_series(1, 20000) i`,
      [caller.tenantId, t.clock()],
    );
    const retention = sweeper({ batchRows: 500 });
    try {
      const keys = Array.from({ length: 60 }, (_, i) => `retry-${i}-${randomUUID()}`);
      const sweeping = retention.sweep();
      // Each key sent three times, the copies concurrently, while the sweep deletes.
      const results = await Promise.all(keys.flatMap((k, i) => [0, 1, 2].map(() => deposit(caller, `retry-w${i % 4}`, k, 7n))));
      const pass = await sweeping;
      expect(pass.idempotencyRecords).toBeGreaterThanOrEqual(20000);
      expect(results.filter((r) => !r.replayed)).toHaveLength(keys.length);
      // And once more after the sweep: still replays.
      for (const [i, k] of keys.slice(0, 5).entries()) expect((await deposit(caller, `retry-w${i % 4}`, k, 7n)).replayed).toBe(true);
      const total = (await Promise.all([0, 1, 2, 3].map((i) => posted(caller, `retry-w${i}`)))).reduce((a, b) => a + b, 0n);
      expect(total).toBe(BigInt(keys.length) * 7n);
      expect(await count("select 1 from transfers where tenant_id = $1", [caller.tenantId])).toBe(keys.length);
      expect(await count("select 1 from idempotency_keys where tenant_id = $1 and idempotency_key like 'expired-%'", [caller.tenantId])).toBe(0);
    } finally {
      await retention.stop();
    }
  });
});

describe("event retention", () => {
  it("prunes only published events older than the retention, oldest first, never an unpublished one", async () => {
    const caller = await t.newTenant();
    const wallets = ["ev-a", "ev-b", "ev-c"];
    for (let i = 0; i < 30; i++) await deposit(caller, wallets[i % 3]!);
    // Another wallet pays the first: events with a transfer on two wallets.
    for (let i = 0; i < 6; i++) {
      const r = await t.ledger.transfer(caller, { fromWalletId: "ev-a", toWalletId: "ev-b", asset: "USD", amount: 1n, idempotencyKey: key(), metadata: {} });
      if (!r.ok) throw new Error(r.reason);
    }
    const events = await t.pool.query<{ position: string; wallet_id: string; seq: string }>(
      "select position::text, wallet_id, seq::text from events where tenant_id = $1 order by events.position",
      [caller.tenantId],
    );
    const positions = events.rows.map((r) => BigInt(r.position));
    // Every earlier event of the database (other tests') is published long ago, so this
    // tenant's rows decide where the prune stops.
    await t.pool.query("update events set published_at = now() - interval '10 hours' where published_at is null and tenant_id <> $1", [caller.tenantId]);
    // The first 20 published 2 hours ago, except one unpublished at index 12; the rest young or unpublished.
    const at = (i: number) => positions[i]!.toString();
    await t.pool.query("update events set published_at = now() - interval '2 hours' where tenant_id = $1 and position <= $2", [caller.tenantId, at(19)]);
    await t.pool.query("update events set published_at = null where position = $1", [at(12)]);
    await t.pool.query("update events set published_at = now() where tenant_id = $1 and position > $2 and position <= $3", [caller.tenantId, at(19), at(25)]);

    const retention = sweeper({ eventRetentionMs: HOUR_MS, batchRows: 4 });
    try {
      await retention.sweep();
      let left = await t.pool.query<{ pos: string }>("select position::text as pos from events where tenant_id = $1 order by events.position", [caller.tenantId]);
      // Stopped at the unpublished event: it and everything after it stay.
      expect(left.rows.map((r) => BigInt(r.pos))).toEqual(positions.slice(12));

      // Once it is published (long ago), the prune goes on up to the first young event.
      await t.pool.query("update events set published_at = now() - interval '2 hours' where position = $1", [at(12)]);
      await retention.sweep();
      left = await t.pool.query<{ pos: string }>("select position::text as pos from events where tenant_id = $1 order by events.position", [caller.tenantId]);
      expect(left.rows.map((r) => BigInt(r.pos))).toEqual(positions.slice(20));
      expect(await count("select 1 from events where tenant_id = $1 and published_at is null", [caller.tenantId])).toBe(positions.length - 26);

      // Each wallet lost a prefix of its sequence, which event_retention records.
      const kept = await t.pool.query<{ wallet_id: string; bottom: string; pruned_seq: string; event_seq: string }>(
        `select w.wallet_id, min(e.seq)::text as bottom, r.pruned_seq::text, w.event_seq::text
           from wallets w join event_retention r using (tenant_id, wallet_id) left join events e using (tenant_id, wallet_id)
          where w.tenant_id = $1 group by w.wallet_id, r.pruned_seq, w.event_seq order by 1`,
        [caller.tenantId],
      );
      expect(kept.rows.map((r) => r.wallet_id)).toEqual(wallets);
      for (const r of kept.rows) expect(BigInt(r.bottom)).toBe(BigInt(r.pruned_seq) + 1n);

      expect(await checkInvariants(t.pool)).toEqual([]);
      expect(await checkInvariants(t.pool, { tenantId: caller.tenantId })).toEqual([]);
      const report = await verifyLedger(t.pool, { tenantId: caller.tenantId });
      expect(report.ok).toBe(true);
      expect(report.prunedEvents.events).toBe(20n);
      expect(report.prunedEvents.wallets).toBe(3);
      const cli = await verifyCli(caller.tenantId);
      expect(cli.code).toBe(0);
      expect(cli.out).toContain("events: 20 pruned by retention on 3 wallet(s)");
    } finally {
      await retention.stop();
    }
  });

  it("prunes nothing with event retention off, and keeps up with a backlog larger than a batch", async () => {
    const caller = await t.newTenant();
    await t.pool.query(
      `select ledger_command($1, 'Deposit', 'bulk-' || i, '\\x00', now(),
         jsonb_build_object('wallet_id', 'bulk' || (i % 7), 'asset', 'USD', 'amount', '1', 'transfer_id', gen_random_uuid()))
         from generate_series(1, 3000) i`,
      [caller.tenantId],
    );
    // Every event so far, this tenant's and earlier tests', published long ago.
    await t.pool.query("update events set published_at = now() - interval '3 hours'");
    const off = sweeper({ eventRetentionMs: null, batchRows: 100 });
    try {
      expect((await off.sweep()).events).toBe(0);
    } finally {
      await off.stop();
    }
    expect(await count("select 1 from events where tenant_id = $1", [caller.tenantId])).toBe(3000);
    const on = sweeper({ eventRetentionMs: HOUR_MS, batchRows: 100 });
    try {
      expect((await on.sweep()).events).toBeGreaterThanOrEqual(3000);
    } finally {
      await on.stop();
    }
    expect(await count("select 1 from events where tenant_id = $1", [caller.tenantId])).toBe(0);
    const r = await t.pool.query<{ n: string }>("select sum(pruned_seq)::text as n from event_retention where tenant_id = $1", [caller.tenantId]);
    expect(r.rows[0]!.n).toBe("3000");
    // A wallet with every event pruned still checks out, and goes on from pruned_seq + 1.
    await deposit(caller, "bulk0");
    expect(await checkInvariants(t.pool, { tenantId: caller.tenantId })).toEqual([]);
  });

  it("still reports a missing event after pruning, above and below what was pruned", async () => {
    const caller = await t.newTenant();
    for (let i = 0; i < 8; i++) await deposit(caller, "ev-tamper");
    // Every event so far, this tenant's and earlier tests', published long ago.
    await t.pool.query("update events set published_at = now() - interval '3 hours'");
    await t.pool.query("update events set published_at = now() where tenant_id = $1 and seq > 4", [caller.tenantId]);
    const retention = sweeper({ eventRetentionMs: HOUR_MS });
    try {
      await retention.sweep();
    } finally {
      await retention.stop();
    }
    expect(await checkInvariants(t.pool, { tenantId: caller.tenantId })).toEqual([]);

    const client = await t.pool.connect();
    try {
      await client.query("begin");
      // Above the pruned seq: an event deleted by hand.
      await client.query("delete from events where tenant_id = $1 and seq = 6", [caller.tenantId]);
      const above = await checkInvariants(client, { tenantId: caller.tenantId });
      expect(above.some((v) => v.startsWith("5: a journal row has no event"))).toBe(true);
      expect(above.some((v) => v.startsWith("5: a wallet's event sequence has a gap"))).toBe(true);
      await client.query("rollback");

      // Below it: the record claims fewer journal rows than the events that went carried.
      await client.query("begin");
      await client.query("update event_retention set pruned_links = pruned_links - 1 where tenant_id = $1", [caller.tenantId]);
      const below = await checkInvariants(client, { tenantId: caller.tenantId });
      expect(below).toEqual([expect.stringMatching(/^5: a journal row has no event.*: 4 journal rows without an event, but 3 pruned$/)]);
      await client.query("rollback");

      // Or the same number of other journal rows.
      await client.query("begin");
      await client.query("update event_retention set pruned_digest = pruned_digest + 1 where tenant_id = $1", [caller.tenantId]);
      expect(await checkInvariants(client, { tenantId: caller.tenantId })).toHaveLength(1);
      await client.query("rollback");
    } finally {
      client.release();
    }
  });

  it("refuses a batch size below 1, naming it", async () => {
    await expect(t.pool.query("select ledger_prune_events(now(), 0)")).rejects.toThrow(/p_rows_max must be at least 1/);
  });
});

describe("webhook delivery retention", () => {
  it("deletes finished deliveries older than the retention and then their messages, never a pending one", async () => {
    const caller = await t.newTenant();
    const endpointId = randomUUID();
    await t.pool.query(
      "insert into webhook_endpoints (tenant_id, endpoint_id, url, secret, created_at, updated_at) values ($1, $2, 'http://127.0.0.1:9/hooks', 'whsec_x', now(), now())",
      [caller.tenantId, endpointId],
    );
    // 12 messages: 0-4 succeeded 3 hours ago, 5-6 failed 3 hours ago, 7-8 succeeded just now,
    // 9-11 still pending (created 3 hours ago).
    const eventIds = Array.from({ length: 12 }, () => randomUUID());
    for (const [i, eventId] of eventIds.entries()) {
      await t.pool.query(
        "insert into webhook_events (tenant_id, event_id, type, body, occurred_at, created_at) values ($1, $2, 'holdfast.test', '{}', now(), now() - interval '3 hours')",
        [caller.tenantId, eventId],
      );
      const [status, finishedAt] = i < 5 ? ["succeeded", "now() - interval '3 hours'"] : i < 7 ? ["failed", "now() - interval '3 hours'"] : i < 9 ? ["succeeded", "now()"] : ["pending", "null"];
      await t.pool.query(
        `insert into webhook_deliveries (tenant_id, endpoint_id, event_id, event_type, status, next_attempt_at, created_at, finished_at)
         values ($1, $2, $3, 'holdfast.test', $4, now(), now() - interval '3 hours', ${finishedAt})`,
        [caller.tenantId, endpointId, eventId, status],
      );
    }
    // Batches of 2 until one comes back short, as the worker loops.
    const total = { deliveries: 0, messages: 0 };
    for (;;) {
      const n = await pruneOld(t.pool, 1, 2);
      total.deliveries += n.deliveries;
      total.messages += n.messages;
      if (n.deliveries < 2) break;
    }
    const deliveries = await t.pool.query<{ event_id: string; status: string }>(
      "select event_id, status from webhook_deliveries where tenant_id = $1",
      [caller.tenantId],
    );
    expect(deliveries.rows.map((r) => r.event_id).sort()).toEqual(eventIds.slice(7).sort());
    const messages = await t.pool.query<{ event_id: string }>("select event_id from webhook_events where tenant_id = $1", [caller.tenantId]);
    expect(messages.rows.map((r) => r.event_id).sort()).toEqual(eventIds.slice(7).sort());
    expect(total).toEqual({ deliveries: 7, messages: 7 });
  });

  it("keeps a message while another endpoint's delivery refers to it, and deletes it with an endpoint only when no other refers to it", async () => {
    const caller = await t.newTenant();
    const [a, b] = [randomUUID(), randomUUID()];
    for (const endpointId of [a, b]) {
      await t.pool.query(
        "insert into webhook_endpoints (tenant_id, endpoint_id, url, secret, created_at, updated_at) values ($1, $2, 'http://127.0.0.1:9/hooks', 'whsec_x', now(), now())",
        [caller.tenantId, endpointId],
      );
    }
    // shared: to a (succeeded 3 hours ago) and b (pending); onlyA: to a (pending); onlyB: to b (pending).
    const [shared, onlyA, onlyB] = [randomUUID(), randomUUID(), randomUUID()];
    const deliveries: [string, string, "succeeded" | "pending"][] = [
      [shared, a, "succeeded"],
      [shared, b, "pending"],
      [onlyA, a, "pending"],
      [onlyB, b, "pending"],
    ];
    for (const eventId of [shared, onlyA, onlyB]) {
      await t.pool.query(
        "insert into webhook_events (tenant_id, event_id, type, body, occurred_at, created_at) values ($1, $2, 'holdfast.test', '{}', now(), now() - interval '3 hours')",
        [caller.tenantId, eventId],
      );
    }
    for (const [eventId, endpointId, status] of deliveries) {
      await t.pool.query(
        `insert into webhook_deliveries (tenant_id, endpoint_id, event_id, event_type, status, next_attempt_at, created_at, finished_at)
         values ($1, $2, $3, 'holdfast.test', $4, now(), now() - interval '3 hours', case when $4 = 'pending' then null else now() - interval '3 hours' end)`,
        [caller.tenantId, endpointId, eventId, status],
      );
    }
    const messagesLeft = async () =>
      (await t.pool.query<{ event_id: string }>("select event_id from webhook_events where tenant_id = $1", [caller.tenantId])).rows.map((r) => r.event_id).sort();

    // The finished delivery of `shared` goes; the message stays for b's pending delivery.
    expect(await pruneOld(t.pool, 1, 100)).toEqual({ deliveries: 1, messages: 0 });
    expect(await messagesLeft()).toEqual([shared, onlyA, onlyB].sort());

    // Deleting a takes onlyA's message with its delivery; shared and onlyB are b's.
    await deleteEndpoint(t.pool, caller.tenantId, a);
    expect(await messagesLeft()).toEqual([shared, onlyB].sort());

    // Deleting b leaves nothing of the tenant's webhooks.
    await deleteEndpoint(t.pool, caller.tenantId, b);
    expect(await messagesLeft()).toEqual([]);
    const left = await t.pool.query("select 1 from webhook_deliveries where tenant_id = $1", [caller.tenantId]);
    expect(left.rowCount).toBe(0);
    await expect(deleteEndpoint(t.pool, caller.tenantId, b)).rejects.toThrow(/not found/i);
  });
});
