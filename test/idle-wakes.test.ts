// Goal: with the polls made slow for idleness, work still goes out at once because something
// wakes the loop that waits for it (docs/performance.md, "Idle cost"): the outbox relay
// publishes a commit when told in-process (wake) and when another process NOTIFYs; the
// WatchWallet feed gives every watcher every change of its wallet, in order and without gaps,
// with many watchers and concurrent commands, from one reader that runs no query while nobody
// watches; the expiry worker sleeps until the next hold falls due rather than its whole cap; the
// webhook sender retries a failed delivery when the retry falls due, not at its next poll.
// Method: each loop's safety poll is set far longer than the test may take (10 minutes), so only
// the wakes can make it pass; a real nats-server of the test's own and fresh databases.
import { setTimeout as sleep } from "node:timers/promises";
import type pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createOutboxNotifier } from "@holdfast/common/outbox-wake";
import { createPool } from "@holdfast/common/pg";
import { systemClock, uuidV7 } from "@holdfast/common/ids";
import { createHoldExpirer } from "@holdfast/hold-expiry/expirer";
import { createLedger } from "@holdfast/ledger/domain";
import { createOutboxRelay } from "@holdfast/ledger/relay/outbox-relay";
import { createWalletFeed, type WalletChange } from "@holdfast/ledger/watch";
import { WebhookService } from "@holdfast/gen/holdfast/v1/webhooks_pb";
import { createWebhookWorker } from "@holdfast/webhooks/worker";
import { createTestLedger, key, quietLogger } from "./support/ledger.js";
import { startNatsServer } from "./support/nats.js";
import { startTestServer } from "./support/server.js";
import { loopback_networks, startReceiver, testWebhookSettings } from "./support/webhooks.js";

/** Longer than the test may run: a loop that only polls this often would fail it. */
const NEVER_MS = 600_000;

let t: Awaited<ReturnType<typeof createTestLedger>>;
let nats: Awaited<ReturnType<typeof startNatsServer>>;

beforeAll(async () => {
  t = await createTestLedger({ poolMax: 20 });
  nats = await startNatsServer();
});
afterAll(async () => {
  await t?.close();
  await nats?.close();
});

async function waitFor(what: string, check: () => Promise<boolean> | boolean, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

const deposit = (walletId: string, amount = 1n) =>
  t.ledger.deposit(t.caller, { walletId, asset: "USD", amount, idempotencyKey: key(), metadata: {} });

describe("outbox relay wakes", () => {
  it("publishes at once when woken in-process or by another process's NOTIFY, with the safety poll far away", async () => {
    const relay = createOutboxRelay({
      pool: t.pool,
      logger: quietLogger,
      natsUrl: nats.url,
      stream: { name: "IDLE_EVENTS", maxAgeMs: 3_600_000, duplicateWindowMs: 600_000, replicas: 1 },
      batchMax: 16,
      idleMs: NEVER_MS,
      standbyPollMs: 100,
      retryDelayMsMax: 500,
      publishTimeoutMs: 5000,
      statusLogMs: NEVER_MS,
    });
    const other = createPool({ databaseUrl: t.db.url, pgPoolMax: 2, pgConnectTimeoutMs: 5000, pgStatementTimeoutMs: 5000 }, quietLogger);
    const notifier = createOutboxNotifier(other, { gapMs: 5, logger: quietLogger });
    const drained = async () => (await relay.refreshStatus()).backlog === 0;
    try {
      relay.start();
      await waitFor("the relay to be active", () => relay.isActive());
      await waitFor("the first backlog to drain", drained);

      // In-process: a commit, then wake(), as the ledger does after a write RPC.
      expect((await deposit("wake_a")).ok).toBe(true);
      relay.wake();
      await waitFor("the woken relay to publish", drained);

      // Many commits each followed by a wake, some arriving while a batch is out: none is left behind.
      await Promise.all(
        Array.from({ length: 60 }, async (_, i) => {
          expect((await deposit(`wake_b${i % 6}`)).ok).toBe(true);
          relay.wake();
        }),
      );
      await waitFor("every woken commit to be published", drained);

      // Another process: its commit, then a NOTIFY on the relay's channel. Until the NOTIFY the
      // relay, its leftover wakes spent, does not look.
      await sleep(200);
      expect((await deposit("wake_c")).ok).toBe(true);
      await sleep(200);
      expect(await drained()).toBe(false);
      notifier.notify();
      await waitFor("the notified relay to publish", drained);
      expect(relay.status().publishedTotal).toBeGreaterThanOrEqual(62);
    } finally {
      notifier.close();
      await relay.stop();
      await other.end();
    }
  });
});

describe("WatchWallet feed", () => {
  /** A pool that counts the feed's queries. */
  function countingPool(): { pool: pg.Pool; queries: () => number } {
    let n = 0;
    const pool = { query: (...args: unknown[]) => (n++, (t.pool.query as (...a: unknown[]) => unknown)(...args)) } as unknown as pg.Pool;
    return { pool, queries: () => n };
  }

  async function seqOf(walletId: string): Promise<bigint> {
    const { rows } = await t.pool.query<{ seq: string | null }>(
      "select max(seq)::text as seq from events where tenant_id = $1 and wallet_id = $2",
      [t.caller.tenantId, walletId],
    );
    return BigInt(rows[0]?.seq ?? "0");
  }

  it("gives every watcher every change of its wallet in order, with many watchers and concurrent commands", async () => {
    const counted = countingPool();
    const feed = createWalletFeed({ pool: counted.pool, pollIntervalMs: NEVER_MS, wakeGapMs: 2, watchersMax: 100, batchMax: 5 });
    const wallets = ["feed_0", "feed_1", "feed_2", "feed_3"];
    for (const w of wallets) expect((await deposit(w, 100n)).ok).toBe(true);

    // Nobody watches: wakes cost nothing.
    feed.wake(wallets);
    feed.wake(null);
    await sleep(100);
    expect(counted.queries()).toBe(0);

    const perWallet = 30;
    // Five watchers per wallet: some from the start of its history, some from now; one of them
    // does not read until every command is done (a slow client), and still misses nothing.
    const watchers = await Promise.all(
      wallets.flatMap((walletId, w) =>
        Array.from({ length: 5 }, async (_, i) => {
          const after = i % 2 === 0 ? 0n : await seqOf(walletId);
          return { walletId, after, slow: w === 0 && i === 4, seen: [] as WalletChange[], abort: new AbortController() };
        }),
      ),
    );
    let commandsDone = () => undefined as void;
    const allCommandsDone = new Promise<void>((resolve) => (commandsDone = resolve));
    const reading = watchers.map(async (watcher) => {
      const finalSeq = (await seqOf(watcher.walletId)) + BigInt(perWallet);
      const changes = feed.follow(t.caller.tenantId, watcher.walletId, watcher.after, watcher.abort.signal);
      // The first next() registers the watcher; the slow one then reads nothing for a while.
      let next = await Promise.race([changes.next(), watcher.slow ? allCommandsDone.then(() => null) : new Promise<never>(() => {})]);
      if (next === null) next = await changes.next();
      while (!next.done) {
        watcher.seen.push(next.value);
        if (next.value.seq >= finalSeq) break;
        next = await changes.next();
      }
      await changes.return(undefined);
    });
    await waitFor("every watcher to be registered", () => feed.watching() === watchers.length);

    await Promise.all(
      wallets.map(async (walletId) => {
        for (let i = 0; i < perWallet; i++) {
          expect((await deposit(walletId)).ok).toBe(true);
          feed.wake([walletId]);
        }
      }),
    );
    commandsDone();
    await Promise.race([Promise.all(reading), sleep(30_000).then(() => Promise.reject(new Error("watchers did not see every change")))]);
    for (const watcher of watchers) watcher.abort.abort();

    for (const watcher of watchers) {
      const last = await seqOf(watcher.walletId);
      const expected = Array.from({ length: Number(last - watcher.after) }, (_, i) => watcher.after + BigInt(i + 1));
      expect(watcher.seen.map((c) => c.seq), `${watcher.walletId} after ${watcher.after}`).toEqual(expected);
      expect(watcher.seen.at(-1)!.balance.available).toBe(100n + BigInt(perWallet));
    }
    await waitFor("the watchers to be gone", () => feed.watching() === 0);

    // Nobody watches again: the reader stopped, and wakes cost nothing.
    await sleep(50);
    const after = counted.queries();
    feed.wake(null);
    await sleep(100);
    expect(counted.queries()).toBe(after);
  });
});

describe("hold-expiry worker", () => {
  it("sleeps until the next hold falls due rather than its whole cap", async () => {
    // Real time: the worker's sleep is computed from its clock and the holds' expiry.
    const ledger = createLedger({ pool: t.pool, clock: systemClock, newId: uuidV7 });
    const caller = await t.newTenant();
    expect((await ledger.deposit(caller, { walletId: "soon", asset: "USD", amount: 100n, idempotencyKey: key(), metadata: {} })).ok).toBe(true);
    const reserved = await ledger.reserve(caller, {
      walletId: "soon",
      asset: "USD",
      amount: 40n,
      holdId: "soon_h",
      ttlSeconds: 1,
      idempotencyKey: key(),
      metadata: {},
    });
    expect(reserved.ok).toBe(true);
    let woke = 0;
    const expirer = createHoldExpirer({
      pool: t.pool,
      clock: systemClock,
      logger: quietLogger,
      walletsPerPassMax: 10,
      idleMs: NEVER_MS,
      idleMsMin: 10,
      retryDelayMsMax: 100,
      onExpired: () => woke++,
    });
    try {
      expirer.start();
      await waitFor("the hold to expire", () => expirer.totals().expired >= 1, 20_000);
      expect(woke).toBeGreaterThanOrEqual(1);
      const { rows } = await t.pool.query<{ status: string }>("select status from holds where tenant_id = $1 and hold_id = 'soon_h'", [caller.tenantId]);
      expect(rows[0]?.status).toBe("expired");
    } finally {
      await expirer.stop();
    }
  });
});

describe("webhook sender", () => {
  it("wakes for its own retries when they fall due, with its claim poll far away", async () => {
    // A NATS server of its own: the relay test above made a stream on the first.
    const ownNats = await startNatsServer();
    const s = await startTestServer({ NATS_URL: ownNats.url, HOLDFAST_WEBHOOK_ALLOWED_NETWORKS: loopback_networks });
    const worker = createWebhookWorker({
      pool: s.app.pool,
      logger: quietLogger,
      natsUrl: ownNats.url,
      stream: { name: "HOLDFAST_EVENTS", maxAgeMs: 3_600_000, duplicateWindowMs: 600_000, replicas: 1 },
      settings: testWebhookSettings({ HOLDFAST_WEBHOOK_RETRY_SCHEDULE: "20ms,40ms,80ms" }),
      pollIdleMs: NEVER_MS,
    });
    const receiver = await startReceiver();
    try {
      worker.start();
      await worker.ready;
      // Two failures, then success: the second and third attempts are retries only a wake starts.
      receiver.answer((_req, n) => (n <= 2 ? { status: 500 } : { status: 200 }));
      const { endpoint, secret } = await s.client(WebhookService).createEndpoint({ url: receiver.url, eventTypes: ["holdfast.deposit.completed"] });
      receiver.secrets = [secret];
      expect(endpoint).toBeDefined();
      const caller = { tenantId: s.tenantId, scopeWalletId: null };
      expect((await s.app.ledger.deposit(caller, { walletId: "hook_w", asset: "USD", amount: 1n, idempotencyKey: key(), metadata: {} })).ok).toBe(true);
      await waitFor("the delivery after two retries", () => receiver.delivered().size === 1, 20_000);
      expect(receiver.received.length).toBe(3);
    } finally {
      await worker.stop();
      await receiver.stop();
      await s.close();
      await ownNats.close();
    }
  });
});
