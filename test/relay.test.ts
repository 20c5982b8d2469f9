// Goal: every committed change reaches the JetStream stream exactly once (by event id), in
// order per wallet, and NATS can never fail or block a ledger command (docs/events.md).
// Method: a real nats-server of the test's own (stopped and restarted at will) and a fresh
// database; concurrent commands through the ledger core; then the stream is read back with an
// ordered consumer and compared with the outbox table, event by event.
import { fromBinary } from "@bufbuild/protobuf";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { EventSchema, type Event } from "@holdfast/gen/holdfast/v1/events_pb";
import { createOutboxRelay } from "@holdfast/ledger/relay/outbox-relay";
import { checkInvariants } from "@holdfast/ledger/invariants";
import { key, quietLogger } from "./support/ledger.js";
import { startNatsServer } from "./support/nats.js";
import { startTestServer } from "./support/server.js";

const stream = "HOLDFAST_EVENTS";
let nats: Awaited<ReturnType<typeof startNatsServer>>;
let s: Awaited<ReturnType<typeof startTestServer>>;

beforeAll(async () => {
  nats = await startNatsServer();
  s = await startTestServer({ NATS_URL: nats.url });
});
afterAll(async () => {
  await s?.close();
  await nats?.close();
});

const caller = () => ({ tenantId: s.tenantId, scopeWalletId: null });

async function waitFor(what: string, check: () => Promise<boolean>, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) {
      throw new Error(`timed out waiting for ${what}`);
    }
    await sleep(50);
  }
}

const backlogDrained = async () => (await s.app.relay!.refreshStatus()).backlog === 0;

/** Every message in the stream, in stream order, with its id header. */
async function readStream(): Promise<{ msgId: string; ceId: string; subject: string; event: Event }[]> {
  const nc = await connect({ servers: nats.url });
  try {
    const total = Number((await (await jetstreamManager(nc)).streams.info(stream)).state.messages);
    const consumer = await jetstream(nc).consumers.get(stream);
    const out: { msgId: string; ceId: string; subject: string; event: Event }[] = [];
    while (out.length < total) {
      const batch = await consumer.fetch({ max_messages: 500, expires: 2000 });
      for await (const m of batch) {
        out.push({
          msgId: m.headers?.get("Nats-Msg-Id") ?? "",
          ceId: m.headers?.get("ce-id") ?? "",
          subject: m.subject,
          event: fromBinary(EventSchema, m.data),
        });
      }
    }
    return out;
  } finally {
    await nc.close();
  }
}

async function outboxIds(): Promise<string[]> {
  const { rows } = await s.app.pool.query<{ event_id: string }>("select event_id from events order by position");
  return rows.map((r) => r.event_id);
}

/** Runs a mixed burst of commands across wallets; all must succeed or be refused cleanly. */
async function burst(prefix: string, wallets: number, perWallet: number): Promise<void> {
  const ledger = s.app.ledger;
  await Promise.all(
    Array.from({ length: wallets }, async (_, w) => {
      const walletId = `${prefix}_${w}`;
      const d = await ledger.deposit(caller(), { walletId, asset: "USD", amount: 10_000n, idempotencyKey: key(), metadata: {} });
      expect(d.ok).toBe(true);
      await Promise.all(
        Array.from({ length: perWallet }, async (_, i) => {
          if (i % 2 === 0) {
            const r = await ledger.spend(caller(), { walletId, asset: "USD", amount: 3n, idempotencyKey: key(), metadata: { i: String(i) } });
            expect(r.ok).toBe(true);
            return;
          }
          const h = await ledger.reserve(caller(), { walletId, asset: "USD", amount: 5n, holdId: "", ttlSeconds: 60, idempotencyKey: key(), metadata: {} });
          if (!h.ok) throw new Error(h.reason);
          const c = await ledger.capture(caller(), { holdId: h.hold.holdId, amount: 4n, idempotencyKey: key(), metadata: {} });
          expect(c.ok).toBe(true);
        }),
      );
    }),
  );
}

function checkStream(messages: Awaited<ReturnType<typeof readStream>>, ids: string[]) {
  // Exactly once: as many messages as outbox rows, no id twice, every id present.
  expect(messages).toHaveLength(ids.length);
  expect(new Set(messages.map((m) => m.event.eventId))).toEqual(new Set(ids));
  for (const m of messages) {
    expect(m.msgId).toBe(m.event.eventId);
    expect(m.ceId).toBe(m.event.eventId);
    expect(m.subject).toBe(`holdfast.events.${m.event.tenantId}.${m.event.walletId}.${m.event.type.replace("holdfast.", "")}`);
  }
  // In order per wallet: sequences 1, 2, 3, ... in stream order.
  const last = new Map<string, bigint>();
  for (const m of messages) {
    const previous = last.get(m.event.walletId) ?? 0n;
    expect(m.event.sequence).toBe(previous + 1n);
    last.set(m.event.walletId, m.event.sequence);
  }
}

describe("outbox relay", () => {
  it("publishes every committed change exactly once, in order per wallet", async () => {
    await burst("once", 8, 40);
    await waitFor("the outbox to drain", backlogDrained);
    const messages = await readStream();
    checkStream(messages, await outboxIds());
    const types = new Set(messages.map((m) => m.event.payload.case));
    expect(types).toEqual(new Set(["depositCompleted", "spendCompleted", "holdCreated", "holdCaptured"]));
    const captured = messages.find((m) => m.event.payload.case === "holdCaptured")!.event;
    expect(captured.payload.value).toMatchObject({ hold: { capturedAmount: 4n }, transfer: { amount: 4n } });
    expect(captured.balance?.asset).toBe("USD");
    expect(await checkInvariants(s.app.pool)).toEqual([]);
  });

  it("loses nothing and duplicates nothing when a relay dies between publish and mark", async () => {
    await s.app.relay!.stop();
    await burst("crash", 3, 10);
    let published = 0;
    const crashing = createOutboxRelay({
      pool: s.app.pool,
      logger: quietLogger,
      natsUrl: nats.url,
      stream: { name: stream, maxAgeMs: 3_600_000, duplicateWindowMs: 600_000, replicas: 1 },
      batchMax: 1000,
      idleMs: 10,
      standbyPollMs: 50,
      retryDelayMsMax: 50,
      publishTimeoutMs: 5000,
      statusLogMs: 60_000,
      afterPublish: (ids) => {
        published += ids.length;
        throw new Error("crash before marking");
      },
    });
    crashing.start();
    await waitFor("a publish that is never marked", async () => published > 0);
    await crashing.stop();
    const unmarked = await s.app.pool.query("select count(*)::int as n from events where published_at is null");
    expect(unmarked.rows[0].n).toBeGreaterThan(0);

    const successor = createOutboxRelay({
      pool: s.app.pool,
      logger: quietLogger,
      natsUrl: nats.url,
      stream: { name: stream, maxAgeMs: 3_600_000, duplicateWindowMs: 600_000, replicas: 1 },
      batchMax: 64,
      idleMs: 10,
      standbyPollMs: 50,
      retryDelayMsMax: 50,
      publishTimeoutMs: 5000,
      statusLogMs: 60_000,
    });
    successor.start();
    try {
      await waitFor("the successor to drain the outbox", async () => (await successor.refreshStatus()).backlog === 0);
    } finally {
      await successor.stop();
    }
    checkStream(await readStream(), await outboxIds());
  });

  it("keeps serving commands while NATS is down, and delivers the backlog when it returns", async () => {
    const relay = createOutboxRelay({
      pool: s.app.pool,
      logger: quietLogger,
      natsUrl: nats.url,
      stream: { name: stream, maxAgeMs: 3_600_000, duplicateWindowMs: 600_000, replicas: 1 },
      batchMax: 128,
      idleMs: 10,
      standbyPollMs: 50,
      retryDelayMsMax: 200,
      publishTimeoutMs: 1000,
      statusLogMs: 60_000,
    });
    relay.start();
    await waitFor("the relay to be active", async () => relay.status().role === "active");
    await nats.stop();
    // Several seconds of commands while NATS is down; every one must succeed.
    const until = Date.now() + 3000;
    let rounds = 0;
    while (Date.now() < until) {
      await burst(`outage_${rounds++}`, 4, 6);
    }
    const during = await relay.refreshStatus();
    expect(during.backlog).toBeGreaterThan(0);
    await nats.start();
    try {
      await waitFor("the backlog to drain after NATS returns", async () => (await relay.refreshStatus()).backlog === 0);
    } finally {
      await relay.stop();
    }
    checkStream(await readStream(), await outboxIds());
    expect(await checkInvariants(s.app.pool)).toEqual([]);
  });
});
