// Goal: the ledger core's semantics, command by command, as docs/architecture.md ("Domain model", "The public contract") states them.
// Method: drive createLedger directly against a fresh PostgreSQL database with a manual clock,
// assert each result and refusal, and check every ledger invariant after each test.
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { checkInvariants } from "@holdfast/ledger/invariants";
import type { Outcome } from "@holdfast/ledger/domain";
import { createTestLedger, key } from "./support/ledger.js";

let t: Awaited<ReturnType<typeof createTestLedger>>;
let n = 0;
const wallet = () => `w_${++n}`;

beforeAll(async () => {
  t = await createTestLedger();
});
afterAll(async () => {
  await t.close();
});
afterEach(async () => {
  expect(await checkInvariants(t.pool)).toEqual([]);
});

function ok<T>(outcome: Outcome<T>): T & { replayed: boolean } {
  if (!outcome.ok) {
    throw new Error(`expected success, got ${outcome.reason}: ${outcome.message}`);
  }
  return outcome;
}

function refused<T>(outcome: Outcome<T>) {
  if (outcome.ok) {
    throw new Error("expected a refusal, got success");
  }
  return outcome;
}

async function funded(amount: bigint, asset = "USD") {
  const w = wallet();
  ok(await t.ledger.deposit(t.caller, { walletId: w, asset, amount, idempotencyKey: key(), metadata: {} }));
  return w;
}

const reserve = (walletId: string, amount: bigint, ttlSeconds = 60, holdId = "") =>
  t.ledger.reserve(t.caller, { walletId, asset: "USD", amount, holdId, ttlSeconds, idempotencyKey: key(), metadata: { model: "m1" } });

describe("deposit", () => {
  it("creates the wallet and credits it", async () => {
    const w = wallet();
    const r = ok(await t.ledger.deposit(t.caller, { walletId: w, asset: "USD", amount: 1000n, idempotencyKey: key(), metadata: { a: "b" } }));
    expect(r.balance).toEqual({ asset: "USD", posted: 1000n, held: 0n, available: 1000n, creditLimit: 0n, scheduled: 0n });
    expect(r.transfer).toMatchObject({ kind: "deposit", debitWalletId: "@world", creditWalletId: w, amount: 1000n, metadata: { a: "b" } });
    expect(r.replayed).toBe(false);
  });

  it("replays the original response for the same key and request, and applies once", async () => {
    const w = wallet();
    const k = key();
    const input = { walletId: w, asset: "USD", amount: 700n, idempotencyKey: k, metadata: {} };
    const first = ok(await t.ledger.deposit(t.caller, input));
    const second = ok(await t.ledger.deposit(t.caller, input));
    expect(second.replayed).toBe(true);
    expect(second.transfer.transferId).toBe(first.transfer.transferId);
    expect(second.balance).toEqual(first.balance);
    const wallet_ = await t.ledger.getWallet(t.caller, w);
    expect(wallet_?.balances[0]?.posted).toBe(700n);
  });

  it("refuses the same key with a different request", async () => {
    const w = wallet();
    const k = key();
    ok(await t.ledger.deposit(t.caller, { walletId: w, asset: "USD", amount: 1n, idempotencyKey: k, metadata: {} }));
    const r = refused(await t.ledger.deposit(t.caller, { walletId: w, asset: "USD", amount: 2n, idempotencyKey: k, metadata: {} }));
    expect(r.reason).toBe("IDEMPOTENCY_KEY_REUSED");
  });

  it("keeps idempotency keys per tenant", async () => {
    const other = await t.newTenant();
    const k = key();
    const w = wallet();
    ok(await t.ledger.deposit(t.caller, { walletId: w, asset: "USD", amount: 5n, idempotencyKey: k, metadata: {} }));
    const r = ok(await t.ledger.deposit(other, { walletId: w, asset: "USD", amount: 9n, idempotencyKey: k, metadata: {} }));
    expect(r.replayed).toBe(false);
    expect(r.balance.posted).toBe(9n);
    expect((await t.ledger.getWallet(t.caller, w))?.balances[0]?.posted).toBe(5n);
  });

  it("refuses a sum that would overflow int64 and changes nothing", async () => {
    const w = await funded(2n ** 62n);
    const r = refused(await t.ledger.deposit(t.caller, { walletId: w, asset: "USD", amount: 2n ** 62n, idempotencyKey: key(), metadata: {} }));
    expect(r.reason).toBe("AMOUNT_OVERFLOW");
    expect((await t.ledger.getWallet(t.caller, w))?.balances[0]?.posted).toBe(2n ** 62n);
  });
});

describe("reserve and capture", () => {
  it("reserves, then captures part and releases the rest", async () => {
    const w = await funded(1000n);
    const hold = ok(await reserve(w, 400n, 60, "gen_1"));
    expect(hold.hold).toMatchObject({ holdId: "gen_1", status: "pending", amount: 400n });
    expect(hold.balance).toMatchObject({ posted: 1000n, held: 400n, available: 600n });
    const c = ok(await t.ledger.capture(t.caller, { holdId: "gen_1", amount: 123n, idempotencyKey: key(), metadata: { feature: "chat" } }));
    expect(c.hold).toMatchObject({ status: "captured", capturedAmount: 123n });
    expect(c.balance).toMatchObject({ posted: 877n, held: 0n, available: 877n });
    expect(c.transfer).toMatchObject({ kind: "capture", amount: 123n, metadata: { model: "m1", feature: "chat" } });
  });

  it("captures the whole hold when no amount is given", async () => {
    const w = await funded(1000n);
    const { hold } = ok(await reserve(w, 250n));
    const c = ok(await t.ledger.capture(t.caller, { holdId: hold.holdId, amount: null, idempotencyKey: key(), metadata: {} }));
    expect(c.transfer.amount).toBe(250n);
    expect(c.balance.available).toBe(750n);
    expect(hold.holdId).toMatch(/^hold_/);
  });

  it("captures beyond the hold when the excess fits the available balance", async () => {
    const w = await funded(1000n);
    const { hold } = ok(await reserve(w, 300n));
    const c = ok(await t.ledger.capture(t.caller, { holdId: hold.holdId, amount: 1000n, idempotencyKey: key(), metadata: {} }));
    expect(c.balance).toMatchObject({ posted: 0n, held: 0n, available: 0n });
  });

  it("refuses an over-capture beyond the available balance and leaves the hold as it was", async () => {
    const w = await funded(1000n);
    const { hold } = ok(await reserve(w, 300n));
    const r = refused(await t.ledger.capture(t.caller, { holdId: hold.holdId, amount: 1001n, idempotencyKey: key(), metadata: {} }));
    expect(r.reason).toBe("INSUFFICIENT_FUNDS");
    expect(r.metadata["available"]).toBe("700");
    expect((await t.ledger.getHold(t.caller, hold.holdId))?.status).toBe("pending");
  });

  it("refuses a reserve beyond the available balance", async () => {
    const w = await funded(100n);
    ok(await reserve(w, 60n));
    const r = refused(await reserve(w, 41n));
    expect(r).toMatchObject({ reason: "INSUFFICIENT_FUNDS", metadata: { available: "40" } });
  });

  it("refuses a second capture, and a release after capture", async () => {
    const w = await funded(100n);
    const { hold } = ok(await reserve(w, 50n));
    ok(await t.ledger.capture(t.caller, { holdId: hold.holdId, amount: 10n, idempotencyKey: key(), metadata: {} }));
    expect(refused(await t.ledger.capture(t.caller, { holdId: hold.holdId, amount: 10n, idempotencyKey: key(), metadata: {} })).reason).toBe(
      "HOLD_NOT_PENDING",
    );
    expect(refused(await t.ledger.release(t.caller, { holdId: hold.holdId, idempotencyKey: key() })).reason).toBe("HOLD_NOT_PENDING");
  });

  it("refuses a hold id already in use", async () => {
    const w = await funded(100n);
    ok(await reserve(w, 10n, 60, "dup_hold"));
    expect(refused(await reserve(w, 10n, 60, "dup_hold")).reason).toBe("HOLD_ALREADY_EXISTS");
  });

  it("answers HOLD_NOT_FOUND for an unknown hold", async () => {
    expect(refused(await t.ledger.capture(t.caller, { holdId: "nope", amount: null, idempotencyKey: key(), metadata: {} })).reason).toBe(
      "HOLD_NOT_FOUND",
    );
  });

  it("releases a hold and returns its funds", async () => {
    const w = await funded(100n);
    const { hold } = ok(await reserve(w, 70n));
    const r = ok(await t.ledger.release(t.caller, { holdId: hold.holdId, idempotencyKey: key() }));
    expect(r.hold.status).toBe("released");
    expect(r.balance).toMatchObject({ held: 0n, available: 100n });
  });
});

describe("hold expiry", () => {
  it("stops blocking funds at expiry and cannot be captured, before any worker runs", async () => {
    const w = await funded(100n);
    const { hold } = ok(await reserve(w, 80n, 10));
    t.clock.advance(9_000);
    expect((await t.ledger.getWallet(t.caller, w))?.balances[0]).toMatchObject({ held: 80n, available: 20n });
    t.clock.advance(1_000);
    expect((await t.ledger.getWallet(t.caller, w))?.balances[0]).toMatchObject({ held: 0n, available: 100n });
    expect((await t.ledger.getHold(t.caller, hold.holdId))?.status).toBe("expired");
    const r = refused(await t.ledger.capture(t.caller, { holdId: hold.holdId, amount: null, idempotencyKey: key(), metadata: {} }));
    expect(r.reason).toBe("HOLD_EXPIRED");
    // The expired funds are spendable at once.
    ok(await t.ledger.spend(t.caller, { walletId: w, asset: "USD", amount: 100n, idempotencyKey: key(), metadata: {} }));
  });

  it("extends a pending hold", async () => {
    const w = await funded(100n);
    const { hold } = ok(await reserve(w, 80n, 10));
    t.clock.advance(5_000);
    const e = ok(await t.ledger.extendHold(t.caller, { holdId: hold.holdId, ttlSeconds: 60, idempotencyKey: key() }));
    expect(e.hold.expiresAt.getTime()).toBe(t.clock().getTime() + 60_000);
    t.clock.advance(30_000);
    ok(await t.ledger.capture(t.caller, { holdId: hold.holdId, amount: 80n, idempotencyKey: key(), metadata: {} }));
  });

  it("a replay after the hold expired answers the original response: PENDING, no closed_at, the balance as answered", async () => {
    const w = await funded(50n);
    const request = { walletId: w, asset: "USD", amount: 10n, holdId: "", ttlSeconds: 1, idempotencyKey: key(), metadata: {} };
    const first = ok(await t.ledger.reserve(t.caller, request));
    expect(first.balance).toMatchObject({ posted: 50n, held: 10n, available: 40n });
    t.clock.advance(2_300);
    const replay = ok(await t.ledger.reserve(t.caller, request));
    expect(replay.replayed).toBe(true);
    expect(replay.hold.status).toBe("pending");
    expect(replay.hold.closedAt).toBeNull();
    expect(replay.hold).toEqual(first.hold);
    expect(replay.balance).toEqual(first.balance);
    // Reads, unlike replays, report the hold as it stands now.
    const read = await t.ledger.getHold(t.caller, first.hold.holdId);
    expect(read).toMatchObject({ status: "expired", closedAt: first.hold.expiresAt });
  });

  it("an ExtendHold replay after the extended hold expired answers the original response", async () => {
    const w = await funded(50n);
    const { hold } = ok(await reserve(w, 10n, 10));
    const request = { holdId: hold.holdId, ttlSeconds: 1, idempotencyKey: key() };
    const first = ok(await t.ledger.extendHold(t.caller, request));
    t.clock.advance(2_300);
    const replay = ok(await t.ledger.extendHold(t.caller, request));
    expect(replay.replayed).toBe(true);
    expect(replay.hold).toEqual(first.hold);
    expect(replay.hold).toMatchObject({ status: "pending", closedAt: null });
  });
});

describe("spend, refund, transfer", () => {
  it("refuses a spend beyond the balance, and replays the refusal", async () => {
    const w = await funded(10n);
    const input = { walletId: w, asset: "USD", amount: 11n, idempotencyKey: key(), metadata: {} };
    const first = refused(await t.ledger.spend(t.caller, input));
    expect(first).toMatchObject({ reason: "INSUFFICIENT_FUNDS", metadata: { available: "10" } });
    ok(await t.ledger.deposit(t.caller, { walletId: w, asset: "USD", amount: 100n, idempotencyKey: key(), metadata: {} }));
    // The same key keeps its recorded answer even though the spend would fit now.
    expect(refused(await t.ledger.spend(t.caller, input)).reason).toBe("INSUFFICIENT_FUNDS");
  });

  it("refunds in parts, never more than remains", async () => {
    const w = await funded(100n);
    const s = ok(await t.ledger.spend(t.caller, { walletId: w, asset: "USD", amount: 60n, idempotencyKey: key(), metadata: {} }));
    const id = s.transfer.transferId;
    ok(await t.ledger.refund(t.caller, { transferId: id, amount: 20n, idempotencyKey: key(), metadata: {} }));
    const r = refused(await t.ledger.refund(t.caller, { transferId: id, amount: 41n, idempotencyKey: key(), metadata: {} }));
    expect(r).toMatchObject({ reason: "REFUND_EXCEEDS_REMAINING", metadata: { remaining: "40" } });
    const rest = ok(await t.ledger.refund(t.caller, { transferId: id, amount: null, idempotencyKey: key(), metadata: {} }));
    expect(rest.transfer).toMatchObject({ kind: "refund", amount: 40n, refundOf: id });
    expect(rest.balance.available).toBe(100n);
    expect(refused(await t.ledger.refund(t.caller, { transferId: id, amount: null, idempotencyKey: key(), metadata: {} })).reason).toBe(
      "REFUND_EXCEEDS_REMAINING",
    );
  });

  it("refuses to refund a deposit", async () => {
    const w = wallet();
    const d = ok(await t.ledger.deposit(t.caller, { walletId: w, asset: "USD", amount: 5n, idempotencyKey: key(), metadata: {} }));
    expect(refused(await t.ledger.refund(t.caller, { transferId: d.transfer.transferId, amount: null, idempotencyKey: key(), metadata: {} })).reason).toBe(
      "NOT_REFUNDABLE",
    );
  });

  it("transfers between wallets and refuses without funds, creating nothing", async () => {
    const a = await funded(100n);
    const b = wallet();
    const r = ok(await t.ledger.transfer(t.caller, { fromWalletId: a, toWalletId: b, asset: "USD", amount: 30n, idempotencyKey: key(), metadata: {} }));
    expect(r.fromBalance.available).toBe(70n);
    expect(r.toBalance.available).toBe(30n);
    const c = wallet();
    const no = refused(await t.ledger.transfer(t.caller, { fromWalletId: a, toWalletId: c, asset: "USD", amount: 71n, idempotencyKey: key(), metadata: {} }));
    expect(no.reason).toBe("INSUFFICIENT_FUNDS");
    expect(await t.ledger.getWallet(t.caller, c)).toBeNull();
  });

  it("answers WALLET_NOT_FOUND for a spend on an unknown wallet", async () => {
    expect(refused(await t.ledger.spend(t.caller, { walletId: "ghost", asset: "USD", amount: 1n, idempotencyKey: key(), metadata: {} })).reason).toBe(
      "WALLET_NOT_FOUND",
    );
  });
});

describe("wallet status and credit limits", () => {
  it("a frozen wallet refuses debits but takes deposits", async () => {
    const w = await funded(100n);
    ok(await t.ledger.updateWallet(t.caller, { walletId: w, status: "frozen", creditLimits: [], metadata: {} }));
    expect(refused(await t.ledger.spend(t.caller, { walletId: w, asset: "USD", amount: 1n, idempotencyKey: key(), metadata: {} })).reason).toBe("WALLET_FROZEN");
    expect(refused(await reserve(w, 1n)).reason).toBe("WALLET_FROZEN");
    ok(await t.ledger.deposit(t.caller, { walletId: w, asset: "USD", amount: 1n, idempotencyKey: key(), metadata: {} }));
  });

  it("a closed wallet refuses deposits but still releases holds, and cannot reopen", async () => {
    const w = await funded(100n);
    const { hold } = ok(await reserve(w, 10n));
    ok(await t.ledger.updateWallet(t.caller, { walletId: w, status: "closed", creditLimits: [], metadata: {} }));
    expect(refused(await t.ledger.deposit(t.caller, { walletId: w, asset: "USD", amount: 1n, idempotencyKey: key(), metadata: {} })).reason).toBe("WALLET_CLOSED");
    ok(await t.ledger.release(t.caller, { holdId: hold.holdId, idempotencyKey: key() }));
    expect(refused(await t.ledger.updateWallet(t.caller, { walletId: w, status: "active", creditLimits: [], metadata: {} })).reason).toBe("WALLET_CLOSED");
  });

  it("a credit limit lets a wallet go below zero down to the limit, and no further", async () => {
    const w = await funded(10n);
    ok(await t.ledger.updateWallet(t.caller, { walletId: w, status: null, creditLimits: [{ asset: "USD", creditLimit: 50n }], metadata: {} }));
    const s = ok(await t.ledger.spend(t.caller, { walletId: w, asset: "USD", amount: 60n, idempotencyKey: key(), metadata: {} }));
    expect(s.balance).toMatchObject({ posted: -50n, available: 0n, creditLimit: 50n });
    expect(refused(await t.ledger.spend(t.caller, { walletId: w, asset: "USD", amount: 1n, idempotencyKey: key(), metadata: {} })).reason).toBe("INSUFFICIENT_FUNDS");
    // Lowering the limit below what is used is refused.
    expect(refused(await t.ledger.updateWallet(t.caller, { walletId: w, status: null, creditLimits: [{ asset: "USD", creditLimit: 49n }], metadata: {} })).reason).toBe(
      "INSUFFICIENT_FUNDS",
    );
  });

  it("merges metadata and removes keys set to empty", async () => {
    const w = wallet();
    ok(await t.ledger.createWallet(t.caller, w, { plan: "pro", region: "eu" }));
    const r = ok(await t.ledger.updateWallet(t.caller, { walletId: w, status: null, creditLimits: [], metadata: { plan: "", tier: "2" } }));
    expect(r.wallet.metadata).toEqual({ region: "eu", tier: "2" });
    expect(refused(await t.ledger.createWallet(t.caller, w, {})).reason).toBe("WALLET_ALREADY_EXISTS");
  });
});

describe("queries", () => {
  it("pages through a wallet's transfers newest first", async () => {
    const w = await funded(1000n);
    for (let i = 0; i < 6; i++) {
      ok(await t.ledger.spend(t.caller, { walletId: w, asset: "USD", amount: 1n, idempotencyKey: key(), metadata: {} }));
    }
    const seen: string[] = [];
    let token = "";
    do {
      const page = await t.ledger.listTransfers(t.caller, w, "", 3, token);
      expect(page.items.length).toBeLessThanOrEqual(3);
      seen.push(...page.items.map((x) => x.transferId));
      token = page.nextPageToken;
    } while (token !== "");
    expect(seen).toHaveLength(7);
    expect([...seen].sort().reverse()).toEqual(seen);
  });

  it("lists holds by effective status", async () => {
    const w = await funded(1000n);
    ok(await reserve(w, 1n, 5));
    ok(await reserve(w, 1n, 500));
    t.clock.advance(6_000);
    const pending = await t.ledger.listHolds(t.caller, w, "pending", 50, "");
    const expired = await t.ledger.listHolds(t.caller, w, "expired", 50, "");
    expect(pending.items).toHaveLength(1);
    expect(expired.items).toHaveLength(1);
    expect(expired.items[0]?.status).toBe("expired");
  });

  it("refuses a forged page token", async () => {
    await expect(t.ledger.listTransfers(t.caller, "x", "", 3, "bm9wZQ")).rejects.toThrow(/page_token/);
  });
});

describe("the journal", () => {
  it("refuses UPDATE and DELETE", async () => {
    await funded(1n);
    await expect(t.pool.query("update transfers set amount = amount + 1")).rejects.toThrow(/append-only/);
    await expect(t.pool.query("delete from transfers")).rejects.toThrow(/append-only/);
  });

  it("is what the invariant check compares balances against", async () => {
    const w = await funded(10n);
    await t.pool.query("update accounts set credits_posted = credits_posted + 1 where wallet_id = $1", [w]);
    const violations = await checkInvariants(t.pool);
    await t.pool.query("update accounts set credits_posted = credits_posted - 1 where wallet_id = $1", [w]);
    expect(violations.some((v) => v.includes(w))).toBe(true);
  });

  it("catches an event published twice for one journal row", async () => {
    const w = await funded(10n);
    await t.pool.query(
      `insert into events (event_id, tenant_id, wallet_id, seq, type, asset, occurred_at, data)
       select gen_random_uuid(), tenant_id, wallet_id, 1000, type, asset, occurred_at, data from events where wallet_id = $1`,
      [w],
    );
    const violations = await checkInvariants(t.pool);
    await t.pool.query("delete from events where wallet_id = $1 and seq = 1000", [w]);
    expect(violations.filter((v) => v.startsWith("5:"))).toHaveLength(2);
  });
});
