// Goal: every LedgerService and AdminService RPC behaves as docs/architecture.md ("The public contract") states when it
// goes through the wire, in each of the four protocols the server speaks (Connect binary over
// HTTP/2, Connect JSON over HTTP/1.1, gRPC, gRPC-Web), including the refusals' codes and
// ErrorDetail reasons, idempotent replays, pagination and the WatchWallet stream.
// Method: one real ledger server on port 0 over a fresh database with a manual clock; the same
// suite runs once per protocol (describe.each) with its own wallet and hold id prefix so the
// runs cannot see each other's rows; holds expire by advancing the manual clock, never by
// sleeping. The file ends by checking every ledger invariant over the whole database.
import { randomUUID } from "node:crypto";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type Client } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AdminService, Role } from "@holdfast/gen/holdfast/v1/admin_pb";
import { ErrorDetailSchema, type ErrorDetail } from "@holdfast/gen/holdfast/v1/errors_pb";
import { LedgerService } from "@holdfast/gen/holdfast/v1/ledger_pb";
import { HoldStatus, TransferKind, WalletStatus, type Hold, type Transfer } from "@holdfast/gen/holdfast/v1/types_pb";
import { checkInvariants } from "@holdfast/ledger/invariants";
import { protocols, startTestServer, type Protocol } from "./support/server.js";

let s: Awaited<ReturnType<typeof startTestServer>>;

beforeAll(async () => {
  s = await startTestServer();
});
afterAll(async () => {
  await s?.close();
});

/** A unique idempotency key. */
const key = () => `k-${randomUUID()}`;

/** Awaits a call that must fail, and returns its code, message and ErrorDetail. */
async function failure(call: Promise<unknown>): Promise<{ code: Code; message: string; detail: ErrorDetail }> {
  const err = await call.then(
    (value) => {
      throw new Error(`expected the call to fail, it answered ${JSON.stringify(value, (_k, v: unknown) => (typeof v === "bigint" ? String(v) : v))}`);
    },
    (e: unknown) => ConnectError.from(e),
  );
  const [detail] = err.findDetails(ErrorDetailSchema);
  expect(detail, `error ${err.message} carries no ErrorDetail`).toBeDefined();
  return { code: err.code, message: err.rawMessage, detail: detail! };
}

/** Awaits a call that must fail with `code` and `reason`; returns the ErrorDetail. */
async function refused(call: Promise<unknown>, code: Code, reason: string): Promise<ErrorDetail> {
  const f = await failure(call);
  expect({ code: Code[f.code], reason: f.detail.reason }).toEqual({ code: Code[code], reason });
  return f.detail;
}

describe.each(protocols)("over %s", (protocol: Protocol) => {
  const prefix = `${protocol}_`;
  let n = 0;
  const wallet = () => `${prefix}w${++n}`;
  const holdId = () => `${prefix}h${++n}`;
  let ledger: Client<typeof LedgerService>;
  let other: Client<typeof LedgerService>;
  let reader: Client<typeof LedgerService>;
  let admin: Client<typeof AdminService>;

  beforeAll(() => {
    ledger = s.client(LedgerService, protocol, s.keys.writer);
    // A second client with its own connection, for changes made while a stream is open.
    other = s.client(LedgerService, protocol, s.keys.writer);
    reader = s.client(LedgerService, protocol, s.keys.reader);
    admin = s.client(AdminService, protocol, s.keys.admin);
  });

  async function funded(amount: bigint, asset = "USD"): Promise<string> {
    const w = wallet();
    await ledger.deposit({ walletId: w, asset, amount, idempotencyKey: key() });
    return w;
  }

  const reserve = (walletId: string, amount: bigint, ttlSeconds = 86_400, id = holdId()) =>
    ledger.reserve({ walletId, asset: "USD", amount, holdId: id, ttlSeconds, idempotencyKey: key(), metadata: { model: "m1" } });

  it("Deposit creates the wallet, credits it and answers the transfer and balance", async () => {
    const w = wallet();
    const r = await ledger.deposit({ walletId: w, asset: "USD", amount: 1000n, idempotencyKey: key(), metadata: { order: "o1" } });
    expect(r.replayed).toBe(false);
    expect(r.transfer).toMatchObject({
      kind: TransferKind.DEPOSIT,
      debitWalletId: "@world",
      creditWalletId: w,
      asset: "USD",
      amount: 1000n,
      metadata: { order: "o1" },
    });
    expect(r.transfer?.transferId).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}$/);
    expect(timestampDate(r.transfer!.createdAt!)).toEqual(s.clock());
    expect(r.balance).toMatchObject({ asset: "USD", posted: 1000n, held: 0n, available: 1000n, creditLimit: 0n });
  });

  it("replays a Deposit with the same key and body: replayed, same transfer, applied once", async () => {
    const w = wallet();
    const request = { walletId: w, asset: "USD", amount: 250n, idempotencyKey: key(), metadata: { a: "1", b: "2" } };
    const first = await ledger.deposit(request);
    // Another client, same key and body (metadata in another order): the original answer.
    const second = await other.deposit({ ...request, metadata: { b: "2", a: "1" } });
    expect(second.replayed).toBe(true);
    expect(second.transfer?.transferId).toBe(first.transfer?.transferId);
    expect(second.balance).toEqual(first.balance);
    const got = await reader.getWallet({ walletId: w });
    expect(got.wallet?.balances.map((b) => b.posted)).toEqual([250n]);
  });

  it("refuses the same idempotency key with a different body: ALREADY_EXISTS IDEMPOTENCY_KEY_REUSED", async () => {
    const w = wallet();
    const k = key();
    await ledger.deposit({ walletId: w, asset: "USD", amount: 10n, idempotencyKey: k });
    await refused(ledger.deposit({ walletId: w, asset: "USD", amount: 11n, idempotencyKey: k }), Code.AlreadyExists, "IDEMPOTENCY_KEY_REUSED");
    // Same key, another command: also a reuse.
    await refused(ledger.spend({ walletId: w, asset: "USD", amount: 10n, idempotencyKey: k }), Code.AlreadyExists, "IDEMPOTENCY_KEY_REUSED");
    const got = await reader.getWallet({ walletId: w });
    expect(got.wallet?.balances[0]?.posted).toBe(10n);
  });

  it("Spend debits the wallet; beyond the balance it is FAILED_PRECONDITION INSUFFICIENT_FUNDS with metadata.available", async () => {
    const w = await funded(500n);
    const r = await ledger.spend({ walletId: w, asset: "USD", amount: 120n, idempotencyKey: key(), metadata: { model: "m2" } });
    expect(r.transfer).toMatchObject({ kind: TransferKind.SPEND, debitWalletId: w, creditWalletId: "@revenue", amount: 120n });
    expect(r.balance).toMatchObject({ posted: 380n, held: 0n, available: 380n });
    const detail = await refused(
      ledger.spend({ walletId: w, asset: "USD", amount: 381n, idempotencyKey: key() }),
      Code.FailedPrecondition,
      "INSUFFICIENT_FUNDS",
    );
    expect(detail.metadata["available"]).toBe("380");
    // A refused command is recorded: its retry gets the same refusal, even once funds arrived.
    const k = key();
    await refused(ledger.spend({ walletId: w, asset: "USD", amount: 1000n, idempotencyKey: k }), Code.FailedPrecondition, "INSUFFICIENT_FUNDS");
    await ledger.deposit({ walletId: w, asset: "USD", amount: 1000n, idempotencyKey: key() });
    await refused(ledger.spend({ walletId: w, asset: "USD", amount: 1000n, idempotencyKey: k }), Code.FailedPrecondition, "INSUFFICIENT_FUNDS");
  });

  it("Reserve holds funds, GetHold answers the hold, and the balance counts it as held", async () => {
    const w = await funded(1000n);
    const id = holdId();
    const before = s.clock();
    const r = await reserve(w, 300n, 600, id);
    expect(r.replayed).toBe(false);
    expect(r.hold).toMatchObject({
      holdId: id,
      walletId: w,
      asset: "USD",
      amount: 300n,
      capturedAmount: 0n,
      status: HoldStatus.PENDING,
      metadata: { model: "m1" },
    });
    expect(r.hold?.closedAt).toBeUndefined();
    expect(timestampDate(r.hold!.expiresAt!).getTime()).toBe(before.getTime() + 600_000);
    expect(r.balance).toMatchObject({ posted: 1000n, held: 300n, available: 700n });
    const got = await reader.getHold({ holdId: id });
    expect(got.hold).toEqual(r.hold);
    // A generated hold id when none is given.
    const generated = await ledger.reserve({ walletId: w, asset: "USD", amount: 1n, ttlSeconds: 60, idempotencyKey: key() });
    expect(generated.hold?.holdId).not.toBe("");
    expect(timestampDate(generated.hold!.expiresAt!).getTime()).toBe(before.getTime() + 60_000);
    await refused(reserve(w, 1n, 60, id), Code.AlreadyExists, "HOLD_ALREADY_EXISTS");
    await refused(reserve(w, 10_000n), Code.FailedPrecondition, "INSUFFICIENT_FUNDS");
    await refused(reader.getHold({ holdId: `${prefix}no_such_hold` }), Code.NotFound, "HOLD_NOT_FOUND");
  });

  it("Capture settles a hold partially, in full, and beyond it within the available balance", async () => {
    const w = await funded(1000n);

    const partial = (await reserve(w, 300n)).hold!;
    const p = await ledger.capture({ holdId: partial.holdId, amount: 100n, idempotencyKey: key(), metadata: { tokens: "42" } });
    expect(p.transfer).toMatchObject({ kind: TransferKind.CAPTURE, debitWalletId: w, creditWalletId: "@revenue", amount: 100n, holdId: partial.holdId });
    // The capture transfer carries the hold's metadata merged with the capture's.
    expect(p.transfer?.metadata).toEqual({ model: "m1", tokens: "42" });
    expect(p.hold).toMatchObject({ status: HoldStatus.CAPTURED, amount: 300n, capturedAmount: 100n });
    expect(timestampDate(p.hold!.closedAt!)).toEqual(s.clock());
    expect(p.balance).toMatchObject({ posted: 900n, held: 0n, available: 900n });

    const full = (await reserve(w, 200n)).hold!;
    const f = await ledger.capture({ holdId: full.holdId, idempotencyKey: key() });
    expect(f.transfer?.amount).toBe(200n);
    expect(f.hold).toMatchObject({ status: HoldStatus.CAPTURED, capturedAmount: 200n });
    expect(f.balance).toMatchObject({ posted: 700n, held: 0n, available: 700n });

    const over = (await reserve(w, 100n)).hold!;
    const o = await ledger.capture({ holdId: over.holdId, amount: 250n, idempotencyKey: key() });
    expect(o.hold).toMatchObject({ status: HoldStatus.CAPTURED, amount: 100n, capturedAmount: 250n });
    expect(o.balance).toMatchObject({ posted: 450n, held: 0n, available: 450n });

    // Beyond what the hold and the available balance cover: refused, and the hold stays pending.
    const tooMuch = (await reserve(w, 50n)).hold!;
    const detail = await refused(
      ledger.capture({ holdId: tooMuch.holdId, amount: 501n, idempotencyKey: key() }),
      Code.FailedPrecondition,
      "INSUFFICIENT_FUNDS",
    );
    expect(detail.metadata["available"]).toBe("400");
    expect((await reader.getHold({ holdId: tooMuch.holdId })).hold?.status).toBe(HoldStatus.PENDING);
    // A captured hold cannot be captured again.
    await refused(ledger.capture({ holdId: full.holdId, idempotencyKey: key() }), Code.FailedPrecondition, "HOLD_NOT_PENDING");
    const released = await ledger.release({ holdId: tooMuch.holdId, idempotencyKey: key() });
    expect(released.balance).toMatchObject({ posted: 450n, held: 0n, available: 450n });
  });

  it("Release voids a pending hold and returns its funds; a second release is HOLD_NOT_PENDING", async () => {
    const w = await funded(400n);
    const hold = (await reserve(w, 150n)).hold!;
    const k = key();
    const r = await ledger.release({ holdId: hold.holdId, idempotencyKey: k });
    expect(r.replayed).toBe(false);
    expect(r.hold).toMatchObject({ status: HoldStatus.RELEASED, capturedAmount: 0n });
    expect(r.balance).toMatchObject({ posted: 400n, held: 0n, available: 400n });
    const again = await ledger.release({ holdId: hold.holdId, idempotencyKey: k });
    expect(again.replayed).toBe(true);
    expect(again.hold?.status).toBe(HoldStatus.RELEASED);
    await refused(ledger.release({ holdId: hold.holdId, idempotencyKey: key() }), Code.FailedPrecondition, "HOLD_NOT_PENDING");
    await refused(ledger.capture({ holdId: hold.holdId, idempotencyKey: key() }), Code.FailedPrecondition, "HOLD_NOT_PENDING");
  });

  it("ExtendHold moves the expiry to now + ttl_seconds", async () => {
    const w = await funded(100n);
    const hold = (await reserve(w, 10n, 60)).hold!;
    s.clock.advance(30_000);
    const r = await ledger.extendHold({ holdId: hold.holdId, ttlSeconds: 3600, idempotencyKey: key() });
    expect(r.replayed).toBe(false);
    expect(r.hold?.status).toBe(HoldStatus.PENDING);
    expect(timestampDate(r.hold!.expiresAt!).getTime()).toBe(s.clock().getTime() + 3_600_000);
    // Past the original expiry the hold still blocks funds and can be captured.
    s.clock.advance(60_000);
    const c = await ledger.capture({ holdId: hold.holdId, idempotencyKey: key() });
    expect(c.hold?.status).toBe(HoldStatus.CAPTURED);
    expect(c.balance).toMatchObject({ posted: 90n, available: 90n });
  });

  it("a hold past its TTL no longer blocks funds and cannot be captured: HOLD_EXPIRED", async () => {
    const w = await funded(100n);
    const hold = (await reserve(w, 80n, 10)).hold!;
    expect((await reader.getWallet({ walletId: w })).wallet?.balances[0]).toMatchObject({ held: 80n, available: 20n });
    s.clock.advance(10_001);
    // Before any command or worker voided it, reads already leave it out.
    expect((await reader.getWallet({ walletId: w })).wallet?.balances[0]).toMatchObject({ posted: 100n, held: 0n, available: 100n });
    expect((await reader.getHold({ holdId: hold.holdId })).hold?.status).toBe(HoldStatus.EXPIRED);
    const detail = await refused(ledger.capture({ holdId: hold.holdId, idempotencyKey: key() }), Code.FailedPrecondition, "HOLD_EXPIRED");
    expect(detail.metadata["expires_at"]).toBeDefined();
    await refused(ledger.extendHold({ holdId: hold.holdId, ttlSeconds: 60, idempotencyKey: key() }), Code.FailedPrecondition, "HOLD_EXPIRED");
    await refused(ledger.release({ holdId: hold.holdId, idempotencyKey: key() }), Code.FailedPrecondition, "HOLD_EXPIRED");
    const spent = await ledger.spend({ walletId: w, asset: "USD", amount: 100n, idempotencyKey: key() });
    expect(spent.balance).toMatchObject({ posted: 0n, held: 0n, available: 0n });
  });

  it("Refund returns part, then the rest, of a spend; more is REFUND_EXCEEDS_REMAINING", async () => {
    const w = await funded(300n);
    const spend = (await ledger.spend({ walletId: w, asset: "USD", amount: 200n, idempotencyKey: key() })).transfer!;
    const part = await ledger.refund({ transferId: spend.transferId, amount: 50n, idempotencyKey: key(), metadata: { why: "retry" } });
    expect(part.transfer).toMatchObject({
      kind: TransferKind.REFUND,
      debitWalletId: "@revenue",
      creditWalletId: w,
      amount: 50n,
      refundOfTransferId: spend.transferId,
      metadata: { why: "retry" },
    });
    expect(part.balance).toMatchObject({ posted: 150n, available: 150n });
    const rest = await ledger.refund({ transferId: spend.transferId, idempotencyKey: key() });
    expect(rest.transfer?.amount).toBe(150n);
    expect(rest.balance).toMatchObject({ posted: 300n, available: 300n });
    const detail = await refused(
      ledger.refund({ transferId: spend.transferId, amount: 1n, idempotencyKey: key() }),
      Code.FailedPrecondition,
      "REFUND_EXCEEDS_REMAINING",
    );
    expect(detail.metadata["remaining"]).toBe("0");
    await refused(ledger.refund({ transferId: randomUUID(), idempotencyKey: key() }), Code.NotFound, "TRANSFER_NOT_FOUND");
  });

  it("Transfer moves funds between wallets, creating the destination on first use", async () => {
    const from = await funded(1000n);
    const to = wallet();
    const r = await ledger.transfer({ fromWalletId: from, toWalletId: to, asset: "USD", amount: 300n, idempotencyKey: key() });
    expect(r.transfer).toMatchObject({ kind: TransferKind.TRANSFER, debitWalletId: from, creditWalletId: to, amount: 300n });
    expect(r.fromBalance).toMatchObject({ posted: 700n, available: 700n });
    expect(r.toBalance).toMatchObject({ posted: 300n, available: 300n });
    expect((await reader.getWallet({ walletId: to })).wallet?.balances[0]?.posted).toBe(300n);
    const detail = await refused(
      ledger.transfer({ fromWalletId: from, toWalletId: to, asset: "USD", amount: 701n, idempotencyKey: key() }),
      Code.FailedPrecondition,
      "INSUFFICIENT_FUNDS",
    );
    expect(detail.metadata["available"]).toBe("700");
    await refused(
      ledger.transfer({ fromWalletId: wallet(), toWalletId: to, asset: "USD", amount: 1n, idempotencyKey: key() }),
      Code.NotFound,
      "WALLET_NOT_FOUND",
    );
  });

  it("CreateWallet creates an empty wallet once; GetWallet answers it", async () => {
    const w = wallet();
    const created = await ledger.createWallet({ walletId: w, metadata: { plan: "pro" } });
    expect(created.wallet).toMatchObject({ walletId: w, status: WalletStatus.ACTIVE, metadata: { plan: "pro" }, balances: [] });
    await refused(ledger.createWallet({ walletId: w }), Code.AlreadyExists, "WALLET_ALREADY_EXISTS");
    await ledger.deposit({ walletId: w, asset: "USD", amount: 5n, idempotencyKey: key() });
    await ledger.deposit({ walletId: w, asset: "EUR", amount: 7n, idempotencyKey: key() });
    const got = await reader.getWallet({ walletId: w });
    expect(got.wallet).toMatchObject({ walletId: w, status: WalletStatus.ACTIVE, metadata: { plan: "pro" } });
    // One balance per asset, ordered by asset code.
    expect(got.wallet?.balances.map((b) => [b.asset, b.posted])).toEqual([
      ["EUR", 7n],
      ["USD", 5n],
    ]);
    await refused(reader.getWallet({ walletId: wallet() }), Code.NotFound, "WALLET_NOT_FOUND");
  });

  it("ListTransfers pages newest first with page_size and next_page_token until exhausted", async () => {
    const w = wallet();
    const ids: string[] = [];
    for (let i = 1; i <= 7; i++) {
      ids.push((await ledger.deposit({ walletId: w, asset: "USD", amount: BigInt(i * 10), idempotencyKey: key() })).transfer!.transferId);
    }
    ids.push((await ledger.spend({ walletId: w, asset: "USD", amount: 5n, idempotencyKey: key() })).transfer!.transferId);
    await ledger.deposit({ walletId: w, asset: "EUR", amount: 1n, idempotencyKey: key() });

    const pages: Transfer[][] = [];
    let token = "";
    do {
      const page = await reader.listTransfers({ walletId: w, asset: "USD", pageSize: 3, pageToken: token });
      pages.push(page.transfers);
      token = page.nextPageToken;
      expect(pages.length).toBeLessThan(10);
    } while (token !== "");
    expect(pages.map((p) => p.length)).toEqual([3, 3, 2]);
    expect(pages.flat().map((t) => t.transferId)).toEqual([...ids].reverse());
    expect(pages.flat()[0]).toMatchObject({ kind: TransferKind.SPEND, amount: 5n });

    // Without an asset filter every asset is listed; a page exactly as large as the rest ends it.
    const all = await reader.listTransfers({ walletId: w, pageSize: 9 });
    expect(all.transfers).toHaveLength(9);
    expect(all.nextPageToken).toBe("");
    const eur = await reader.listTransfers({ walletId: w, asset: "EUR" });
    expect(eur.transfers.map((t) => t.amount)).toEqual([1n]);
  });

  it("ListHolds filters by status and pages through every hold", async () => {
    const w = await funded(1000n);
    const pending1 = (await reserve(w, 10n)).hold!;
    const captured = (await reserve(w, 20n)).hold!;
    const released = (await reserve(w, 30n)).hold!;
    const pending2 = (await reserve(w, 40n)).hold!;
    await ledger.capture({ holdId: captured.holdId, idempotencyKey: key() });
    await ledger.release({ holdId: released.holdId, idempotencyKey: key() });

    const byStatus = async (status: HoldStatus) =>
      (await reader.listHolds({ walletId: w, status })).holds.map((h) => h.holdId).sort();
    expect(await byStatus(HoldStatus.PENDING)).toEqual([pending1.holdId, pending2.holdId].sort());
    expect(await byStatus(HoldStatus.CAPTURED)).toEqual([captured.holdId]);
    expect(await byStatus(HoldStatus.RELEASED)).toEqual([released.holdId]);
    expect(await byStatus(HoldStatus.EXPIRED)).toEqual([]);

    const seen: Hold[] = [];
    let token = "";
    do {
      const page = await reader.listHolds({ walletId: w, pageSize: 3, pageToken: token });
      expect(page.holds.length).toBeLessThanOrEqual(3);
      seen.push(...page.holds);
      token = page.nextPageToken;
    } while (token !== "" && seen.length < 100);
    expect(seen.map((h) => h.holdId).sort()).toEqual([pending1, captured, released, pending2].map((h) => h.holdId).sort());
  });

  it("WatchWallet streams a snapshot, then each change with its balance and increasing sequence", async () => {
    const w = await funded(1000n);
    const abort = new AbortController();
    const stream = reader.watchWallet({ walletId: w }, { signal: abort.signal })[Symbol.asyncIterator]();
    try {
      const snapshot = await stream.next();
      expect(snapshot.done).toBe(false);
      expect(snapshot.value).toMatchObject({
        walletId: w,
        eventType: "snapshot",
        balance: { asset: "USD", posted: 1000n, held: 0n, available: 1000n },
      });
      const snapshotSeq: bigint = snapshot.value.sequence;
      expect(snapshotSeq).toBeGreaterThanOrEqual(1n);

      await other.deposit({ walletId: w, asset: "USD", amount: 50n, idempotencyKey: key() });
      await other.spend({ walletId: w, asset: "USD", amount: 300n, idempotencyKey: key() });

      const deposit = await stream.next();
      expect(deposit.value).toMatchObject({
        walletId: w,
        eventType: "holdfast.deposit.completed",
        sequence: snapshotSeq + 1n,
        balance: { asset: "USD", posted: 1050n, available: 1050n },
      });
      const spend = await stream.next();
      expect(spend.value).toMatchObject({
        walletId: w,
        eventType: "holdfast.spend.completed",
        sequence: snapshotSeq + 2n,
        balance: { asset: "USD", posted: 750n, available: 750n },
      });
    } finally {
      abort.abort();
      await stream.return?.().catch(() => undefined);
    }
    await refused(
      (async () => {
        for await (const _ of reader.watchWallet({ walletId: wallet() })) {
          // Unreachable: an unknown wallet fails before the first message.
        }
      })(),
      Code.NotFound,
      "WALLET_NOT_FOUND",
    );
  });

  it("UpdateWallet freezes a wallet (Spend then fails with WALLET_FROZEN) and sets credit limits", async () => {
    const w = await funded(100n);
    const frozen = await admin.updateWallet({ walletId: w, status: WalletStatus.FROZEN, metadata: { note: "fraud review" } });
    expect(frozen.wallet).toMatchObject({ walletId: w, status: WalletStatus.FROZEN, metadata: { note: "fraud review" } });
    await refused(ledger.spend({ walletId: w, asset: "USD", amount: 1n, idempotencyKey: key() }), Code.FailedPrecondition, "WALLET_FROZEN");
    await refused(reserve(w, 1n), Code.FailedPrecondition, "WALLET_FROZEN");
    // Deposits still land on a frozen wallet.
    expect((await ledger.deposit({ walletId: w, asset: "USD", amount: 1n, idempotencyKey: key() })).balance?.posted).toBe(101n);

    const active = await admin.updateWallet({ walletId: w, status: WalletStatus.ACTIVE, metadata: { note: "" }, creditLimits: [{ asset: "USD", creditLimit: 500n }] });
    expect(active.wallet?.status).toBe(WalletStatus.ACTIVE);
    expect(active.wallet?.metadata).toEqual({});
    expect(active.wallet?.balances[0]).toMatchObject({ posted: 101n, available: 601n, creditLimit: 500n });
    const overdrawn = await ledger.spend({ walletId: w, asset: "USD", amount: 600n, idempotencyKey: key() });
    expect(overdrawn.balance).toMatchObject({ posted: -499n, held: 0n, available: 1n, creditLimit: 500n });
    await refused(ledger.spend({ walletId: w, asset: "USD", amount: 2n, idempotencyKey: key() }), Code.FailedPrecondition, "INSUFFICIENT_FUNDS");
    // Lowering the limit below what the wallet already uses is refused and changes nothing.
    await refused(admin.updateWallet({ walletId: w, creditLimits: [{ asset: "USD", creditLimit: 100n }] }), Code.FailedPrecondition, "INSUFFICIENT_FUNDS");
    expect((await reader.getWallet({ walletId: w })).wallet?.balances[0]).toMatchObject({ creditLimit: 500n, available: 1n });
    await refused(admin.updateWallet({ walletId: wallet(), status: WalletStatus.FROZEN }), Code.NotFound, "WALLET_NOT_FOUND");
  });

  it("CreateApiKey issues a working key once; ListApiKeys lists it; RevokeApiKey disables it", async () => {
    const w = await funded(10n);
    const created = await admin.createApiKey({ name: `${prefix}reader`, role: Role.READER, walletId: w });
    expect(created.secret).toMatch(/^hf_[0-9a-f]{16}_[A-Za-z0-9_-]{43}$/);
    expect(created.apiKey).toMatchObject({ name: `${prefix}reader`, role: Role.READER, walletId: w });
    expect(created.secret.slice(3, 19)).toBe(created.apiKey?.keyId);
    expect(created.apiKey?.revokedAt).toBeUndefined();

    const scoped = s.client(LedgerService, protocol, created.secret);
    expect((await scoped.getWallet({ walletId: w })).wallet?.balances[0]?.posted).toBe(10n);

    const listed: string[] = [];
    let token = "";
    do {
      const page = await admin.listApiKeys({ pageSize: 2, pageToken: token });
      expect(page.apiKeys.length).toBeLessThanOrEqual(2);
      expect(page.apiKeys.every((k) => !JSON.stringify(k, (_k, v: unknown) => (typeof v === "bigint" ? String(v) : v)).includes(created.secret))).toBe(true);
      listed.push(...page.apiKeys.map((k) => k.keyId));
      token = page.nextPageToken;
    } while (token !== "" && listed.length < 1000);
    expect(listed).toContain(created.apiKey?.keyId);
    expect(new Set(listed).size).toBe(listed.length);

    const revoked = await admin.revokeApiKey({ keyId: created.apiKey!.keyId });
    expect(revoked.apiKey?.keyId).toBe(created.apiKey?.keyId);
    expect(revoked.apiKey?.revokedAt).toBeDefined();
    await refused(scoped.getWallet({ walletId: w }), Code.Unauthenticated, "UNAUTHENTICATED");
    await refused(admin.revokeApiKey({ keyId: "0000000000000000" }), Code.NotFound, "API_KEY_NOT_FOUND");
  });
});

it("leaves every ledger invariant intact after all protocols ran", async () => {
  expect(await checkInvariants(s.app.pool)).toEqual([]);
});
