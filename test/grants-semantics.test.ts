// Goal: the behaviours the README states where several rules meet, each pinned as written:
// which reason wins when several refusals apply (the table in README.md, "Errors"), which
// refusals are recorded under the idempotency key (validation errors and overflows are not;
// every refusal of the ledger is, WALLET_NOT_FOUND included, until the key's record is swept),
// `ttl_seconds = 0` taking HOLDFAST_DEFAULT_HOLD_TTL_SECONDS, and the int64 lifetime counters
// that bound what a wallet can ever receive.
// Method: one real ledger server on port 0 over a fresh database, with a manual clock (holds and
// grants expire by moving it, never by sleeping) and HOLDFAST_DEFAULT_HOLD_TTL_SECONDS set to an
// odd value so the default cannot be mistaken for the built-in 300; the suite runs over Connect
// JSON and over gRPC, each run with its own wallets. Every refusal is checked by its code and
// ErrorDetail.reason on the wire; the file ends by checking every ledger invariant.
import { randomUUID } from "node:crypto";
import { timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type Client } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AdminService } from "@holdfast/gen/holdfast/v1/admin_pb";
import { ErrorDetailSchema, type ErrorDetail } from "@holdfast/gen/holdfast/v1/errors_pb";
import { LedgerService } from "@holdfast/gen/holdfast/v1/ledger_pb";
import { WalletStatus } from "@holdfast/gen/holdfast/v1/types_pb";
import { checkInvariants } from "@holdfast/ledger/invariants";
import { startTestServer, type Protocol } from "./support/server.js";

/** The server's default hold lifetime in this file: not 300, so a default is recognisable. */
const DEFAULT_HOLD_TTL_SECONDS = 777;
const INT64_MAX = 2n ** 63n - 1n;
const MINUTE_MS = 60_000;

let s: Awaited<ReturnType<typeof startTestServer>>;

beforeAll(async () => {
  s = await startTestServer({ HOLDFAST_DEFAULT_HOLD_TTL_SECONDS: String(DEFAULT_HOLD_TTL_SECONDS) });
});
afterAll(async () => {
  await s?.close();
});

const key = () => `k-${randomUUID()}`;

/** Awaits a call that must fail with `code` and `reason`; returns the ErrorDetail. */
async function refused(call: Promise<unknown>, code: Code, reason: string): Promise<ErrorDetail> {
  const err = await call.then(
    () => {
      throw new Error(`expected ${Code[code]} ${reason}, the call succeeded`);
    },
    (e: unknown) => ConnectError.from(e),
  );
  const [detail] = err.findDetails(ErrorDetailSchema);
  expect({ code: Code[err.code], reason: detail?.reason }).toEqual({ code: Code[code], reason });
  return detail!;
}

const failedPrecondition = (call: Promise<unknown>, reason: string) => refused(call, Code.FailedPrecondition, reason);

describe.each(["connect-json", "grpc"] as Protocol[])("over %s", (protocol) => {
  const prefix = `${protocol.replace("-", "_")}_`;
  let n = 0;
  const wallet = () => `${prefix}w${++n}`;
  let ledger: Client<typeof LedgerService>;
  let admin: Client<typeof AdminService>;

  beforeAll(() => {
    ledger = s.client(LedgerService, protocol, s.keys.writer);
    admin = s.client(AdminService, protocol, s.keys.admin);
  });

  const deposit = (walletId: string, amount: bigint, idempotencyKey = key()) =>
    ledger.deposit({ walletId, asset: "USD", amount, idempotencyKey });
  const spend = (walletId: string, amount: bigint, idempotencyKey = key()) =>
    ledger.spend({ walletId, asset: "USD", amount, idempotencyKey });
  const reserve = (walletId: string, amount: bigint, holdId: string, ttlSeconds = 60) =>
    ledger.reserve({ walletId, asset: "USD", amount, holdId, ttlSeconds, idempotencyKey: key() });
  const setStatus = (walletId: string, status: WalletStatus) => admin.updateWallet({ walletId, status });
  const funded = async (amount: bigint) => {
    const w = wallet();
    await deposit(w, amount);
    return w;
  };

  describe("which reason wins", () => {
    it("Spend and Reserve: the wallet's status before the funds; a hold id in use before the funds", async () => {
      const frozen = await funded(10n);
      await setStatus(frozen, WalletStatus.FROZEN);
      await failedPrecondition(spend(frozen, 1000n), "WALLET_FROZEN");
      await failedPrecondition(reserve(frozen, 1000n, `${frozen}_h`), "WALLET_FROZEN");

      const closed = await funded(10n);
      await setStatus(closed, WalletStatus.CLOSED);
      await failedPrecondition(spend(closed, 1000n), "WALLET_CLOSED");

      const w = await funded(10n);
      await reserve(w, 5n, `${w}_h`);
      await refused(reserve(w, 1000n, `${w}_h`), Code.AlreadyExists, "HOLD_ALREADY_EXISTS");
      // The hold id in use on a frozen wallet: the status still wins.
      await setStatus(w, WalletStatus.FROZEN);
      await failedPrecondition(reserve(w, 1n, `${w}_h`), "WALLET_FROZEN");
    });

    it("validation before everything, and a wallet that does not exist before the funds", async () => {
      const frozen = await funded(10n);
      await setStatus(frozen, WalletStatus.FROZEN);
      const bad = await refused(ledger.spend({ walletId: frozen, asset: "usd", amount: 1n, idempotencyKey: key() }), Code.InvalidArgument, "INVALID_FIELD");
      expect(bad.field).toBe("asset");
      await refused(spend(wallet(), 1000n), Code.NotFound, "WALLET_NOT_FOUND");
    });

    it("Capture, Release, ExtendHold: the hold's own state first, then the wallet's status, then the funds", async () => {
      // A pending hold past its expiry is HOLD_EXPIRED, for every hold command.
      const w1 = await funded(100n);
      await reserve(w1, 10n, `${w1}_h`, 30);
      s.clock.advance(MINUTE_MS);
      await failedPrecondition(ledger.capture({ holdId: `${w1}_h`, idempotencyKey: key() }), "HOLD_EXPIRED");
      await failedPrecondition(ledger.release({ holdId: `${w1}_h`, idempotencyKey: key() }), "HOLD_EXPIRED");
      await failedPrecondition(ledger.extendHold({ holdId: `${w1}_h`, ttlSeconds: 60, idempotencyKey: key() }), "HOLD_EXPIRED");

      // A hold captured or released before its expiry stays HOLD_NOT_PENDING after it: the
      // status it closed with decides, not the clock.
      const w2 = await funded(100n);
      await reserve(w2, 10n, `${w2}_c`, 30);
      await reserve(w2, 10n, `${w2}_r`, 30);
      await ledger.capture({ holdId: `${w2}_c`, idempotencyKey: key() });
      await ledger.release({ holdId: `${w2}_r`, idempotencyKey: key() });
      s.clock.advance(MINUTE_MS);
      const captured = await failedPrecondition(ledger.capture({ holdId: `${w2}_c`, idempotencyKey: key() }), "HOLD_NOT_PENDING");
      expect(captured.metadata).toMatchObject({ status: "captured" });
      const released = await failedPrecondition(ledger.release({ holdId: `${w2}_r`, idempotencyKey: key() }), "HOLD_NOT_PENDING");
      expect(released.metadata).toMatchObject({ status: "released" });

      // The hold's state wins over a closed wallet; a pending hold of a closed wallet is
      // WALLET_CLOSED for Capture, and Release still returns its funds.
      const w3 = await funded(100n);
      await reserve(w3, 10n, `${w3}_old`, 30);
      s.clock.advance(MINUTE_MS);
      await reserve(w3, 10n, `${w3}_new`, 600);
      await setStatus(w3, WalletStatus.CLOSED);
      await failedPrecondition(ledger.capture({ holdId: `${w3}_old`, idempotencyKey: key() }), "HOLD_EXPIRED");
      await failedPrecondition(ledger.capture({ holdId: `${w3}_new`, idempotencyKey: key() }), "WALLET_CLOSED");
      expect((await ledger.release({ holdId: `${w3}_new`, idempotencyKey: key() })).balance?.available).toBe(100n);

      // Frozen: an over-capture is WALLET_FROZEN even when the funds are short too; within the
      // hold a capture goes through.
      const w4 = await funded(100n);
      await reserve(w4, 90n, `${w4}_a`, 600);
      await reserve(w4, 5n, `${w4}_b`, 600);
      await setStatus(w4, WalletStatus.FROZEN);
      await failedPrecondition(ledger.capture({ holdId: `${w4}_a`, amount: 1000n, idempotencyKey: key() }), "WALLET_FROZEN");
      expect((await ledger.capture({ holdId: `${w4}_b`, amount: 5n, idempotencyKey: key() })).balance?.posted).toBe(95n);
      // Active again, the same over-capture is short of funds: INSUFFICIENT_FUNDS, hold untouched.
      await setStatus(w4, WalletStatus.ACTIVE);
      await failedPrecondition(ledger.capture({ holdId: `${w4}_a`, amount: 1000n, idempotencyKey: key() }), "INSUFFICIENT_FUNDS");
      expect((await ledger.getHold({ holdId: `${w4}_a` })).hold?.amount).toBe(90n);
    });

    it("Refund: the transfer before the wallet's status, the status before what remains", async () => {
      const w = await funded(100n);
      const spent = (await spend(w, 40n)).transfer!.transferId;
      const deposited = (await deposit(w, 1n)).transfer!.transferId;
      await ledger.refund({ transferId: spent, amount: 40n, idempotencyKey: key() });
      await setStatus(w, WalletStatus.CLOSED);
      await refused(ledger.refund({ transferId: randomUUID(), idempotencyKey: key() }), Code.NotFound, "TRANSFER_NOT_FOUND");
      await failedPrecondition(ledger.refund({ transferId: deposited, idempotencyKey: key() }), "NOT_REFUNDABLE");
      await failedPrecondition(ledger.refund({ transferId: spent, amount: 1n, idempotencyKey: key() }), "WALLET_CLOSED");

      // On a frozen wallet refunds still land, and what remains is checked.
      const f = await funded(100n);
      const t = (await spend(f, 40n)).transfer!.transferId;
      await setStatus(f, WalletStatus.FROZEN);
      const over = await failedPrecondition(ledger.refund({ transferId: t, amount: 41n, idempotencyKey: key() }), "REFUND_EXCEEDS_REMAINING");
      expect(over.metadata).toMatchObject({ remaining: "40" });
    });

    it("Transfer: the source's status, then the destination's, then the funds", async () => {
      const source = await funded(10n);
      const closedTarget = await funded(1n);
      await setStatus(closedTarget, WalletStatus.CLOSED);
      const transfer = (from: string, to: string, amount: bigint) =>
        ledger.transfer({ fromWalletId: from, toWalletId: to, asset: "USD", amount, idempotencyKey: key() });
      await failedPrecondition(transfer(source, closedTarget, 1000n), "WALLET_CLOSED");
      await setStatus(source, WalletStatus.FROZEN);
      await failedPrecondition(transfer(source, closedTarget, 1000n), "WALLET_FROZEN");
      await refused(transfer(wallet(), closedTarget, 1n), Code.NotFound, "WALLET_NOT_FOUND");
    });

    it("CreateGrant: the window, then the grant id, then the wallet's status; VoidGrant: the wallet's status before the grant's", async () => {
      const w = await funded(10n);
      const grant = (grantId: string, expiresInMs: number) =>
        ledger.createGrant({
          walletId: w,
          asset: "USD",
          amount: 5n,
          grantId,
          expiresAt: timestampFromDate(new Date(s.clock().getTime() + expiresInMs)),
          idempotencyKey: key(),
        });
      await grant(`${w}_g`, MINUTE_MS);
      await setStatus(w, WalletStatus.CLOSED);
      const past = await refused(grant(`${w}_g`, -1000), Code.InvalidArgument, "INVALID_FIELD");
      expect(past.field).toBe("expires_at");
      await refused(grant(`${w}_g`, MINUTE_MS), Code.AlreadyExists, "GRANT_ALREADY_EXISTS");
      await failedPrecondition(grant(`${w}_g2`, MINUTE_MS), "WALLET_CLOSED");
      // The grant has expired and its wallet is closed: WALLET_CLOSED, not GRANT_NOT_ACTIVE.
      s.clock.advance(2 * MINUTE_MS);
      await failedPrecondition(ledger.voidGrant({ grantId: `${w}_g`, idempotencyKey: key() }), "WALLET_CLOSED");

      const open = await funded(10n);
      await ledger.createGrant({ walletId: open, asset: "USD", amount: 5n, grantId: `${open}_g`, expiresAt: timestampFromDate(new Date(s.clock().getTime() + MINUTE_MS)), idempotencyKey: key() });
      s.clock.advance(2 * MINUTE_MS);
      const expired = await failedPrecondition(ledger.voidGrant({ grantId: `${open}_g`, idempotencyKey: key() }), "GRANT_NOT_ACTIVE");
      expect(expired.metadata).toMatchObject({ status: "expired" });
    });
  });

  describe("what the idempotency key records", () => {
    it("a validation error is not recorded: the same key then serves a valid request", async () => {
      const w = await funded(10n);
      const k = key();
      await refused(ledger.spend({ walletId: w, asset: "USD", amount: 0n, idempotencyKey: k }), Code.InvalidArgument, "INVALID_FIELD");
      const r = await spend(w, 3n, k);
      expect(r.replayed).toBe(false);
      expect(r.balance?.posted).toBe(7n);
    });

    it("a refusal of the ledger is recorded: a retry with the same key answers it again after the cause is gone; a new key goes through", async () => {
      const w = await funded(10n);
      const k = key();
      await failedPrecondition(spend(w, 50n, k), "INSUFFICIENT_FUNDS");
      await deposit(w, 100n);
      await failedPrecondition(spend(w, 50n, k), "INSUFFICIENT_FUNDS");
      // The key is taken by that request: another request with it is IDEMPOTENCY_KEY_REUSED.
      await refused(spend(w, 1n, k), Code.AlreadyExists, "IDEMPOTENCY_KEY_REUSED");
      expect((await spend(w, 50n)).balance?.posted).toBe(60n);
    });

    it("WALLET_NOT_FOUND is recorded too: the Spend keeps answering it after the wallet is created", async () => {
      const w = wallet();
      const k = key();
      await refused(spend(w, 5n, k), Code.NotFound, "WALLET_NOT_FOUND");
      await deposit(w, 100n);
      await refused(spend(w, 5n, k), Code.NotFound, "WALLET_NOT_FOUND");
      const fresh = await spend(w, 5n);
      expect(fresh.replayed).toBe(false);
      expect(fresh.balance?.posted).toBe(95n);
    });

    it("a grant's expires_at in the past is the ledger's refusal, recorded; one not after starts_at is validation, not recorded", async () => {
      const w = await funded(10n);
      const at = (ms: number) => timestampFromDate(new Date(s.clock().getTime() + ms));
      const recorded = key();
      await refused(ledger.createGrant({ walletId: w, asset: "USD", amount: 5n, expiresAt: at(-1000), idempotencyKey: recorded }), Code.InvalidArgument, "INVALID_FIELD");
      await refused(ledger.createGrant({ walletId: w, asset: "USD", amount: 5n, expiresAt: at(MINUTE_MS), idempotencyKey: recorded }), Code.AlreadyExists, "IDEMPOTENCY_KEY_REUSED");
      const free = key();
      await refused(
        ledger.createGrant({ walletId: w, asset: "USD", amount: 5n, startsAt: at(MINUTE_MS), expiresAt: at(MINUTE_MS), idempotencyKey: free }),
        Code.InvalidArgument,
        "INVALID_FIELD",
      );
      expect((await ledger.createGrant({ walletId: w, asset: "USD", amount: 5n, expiresAt: at(MINUTE_MS), idempotencyKey: free })).replayed).toBe(false);
    });
  });

  describe("ttl_seconds", () => {
    it("0 on Reserve takes HOLDFAST_DEFAULT_HOLD_TTL_SECONDS; on ExtendHold it is refused, naming the field", async () => {
      const w = await funded(100n);
      const { hold } = await ledger.reserve({ walletId: w, asset: "USD", amount: 10n, ttlSeconds: 0, idempotencyKey: key() });
      expect(timestampDate(hold!.expiresAt!).getTime() - timestampDate(hold!.createdAt!).getTime()).toBe(DEFAULT_HOLD_TTL_SECONDS * 1000);
      const bad = await refused(ledger.extendHold({ holdId: hold!.holdId, ttlSeconds: 0, idempotencyKey: key() }), Code.InvalidArgument, "INVALID_FIELD");
      expect(bad.field).toBe("ttl_seconds");
    });
  });

  describe("the lifetime counters", () => {
    it("after deposits totalling 2^63-1 a wallet takes no more money, even with a small balance: INVALID_FIELD on amount, not recorded", async () => {
      const w = wallet();
      await deposit(w, INT64_MAX - 100n);
      await deposit(w, 100n);
      const spent = await spend(w, INT64_MAX - 10n);
      expect(spent.balance).toMatchObject({ posted: 10n, available: 10n });

      const k = key();
      const overflow = await refused(deposit(w, 1n, k), Code.InvalidArgument, "INVALID_FIELD");
      expect(overflow.field).toBe("amount");
      await refused(ledger.createGrant({ walletId: w, asset: "USD", amount: 1n, idempotencyKey: key() }), Code.InvalidArgument, "INVALID_FIELD");
      await refused(ledger.refund({ transferId: spent.transfer!.transferId, amount: 1n, idempotencyKey: key() }), Code.InvalidArgument, "INVALID_FIELD");
      // Another asset of the same wallet has counters of its own.
      expect((await ledger.deposit({ walletId: w, asset: "EUR", amount: 1n, idempotencyKey: key() })).balance?.posted).toBe(1n);
      // The overflow raised in the ledger and rolled back: nothing changed and the key is free.
      const still = await spend(w, 10n, k);
      expect(still.replayed).toBe(false);
      expect(still.balance).toMatchObject({ posted: 0n, available: 0n });
    });
  });
});

describe("the whole database", () => {
  it("keeps every ledger invariant", async () => {
    expect(await checkInvariants(s.app.pool)).toEqual([]);
  });
});
