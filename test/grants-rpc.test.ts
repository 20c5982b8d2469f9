// Goal: the credit-grant RPCs (CreateGrant, VoidGrant, GetGrant, ListGrants) and the grant
// fields of the other RPCs (categories on Spend and Reserve, Balance.scheduled,
// Hold.allocations, Transfer.grants, RefundResponse.breakage) behave on the wire as
// docs/grants.md and proto/holdfast/v1 state them: refusals with their codes, reasons and
// fields, who may call what, the breakdown of which grants paid, and the grant events on NATS.
// Method: one real ledger server on port 0 over a fresh database with a manual clock and the
// outbox relay publishing to a nats-server of the file's own; the suite runs over Connect JSON
// and over gRPC (describe.each), each run with its own wallet and grant id prefix. Grants
// expire by advancing the manual clock, never by sleeping. The file ends by checking every
// ledger invariant over the whole database.
import { randomUUID } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import { fromBinary } from "@bufbuild/protobuf";
import { timestampDate, timestampFromDate, type Timestamp } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type Client } from "@connectrpc/connect";
import { jetstream } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ErrorDetailSchema, type ErrorDetail } from "@holdfast/gen/holdfast/v1/errors_pb";
import { EventSchema, type Event } from "@holdfast/gen/holdfast/v1/events_pb";
import { LedgerService } from "@holdfast/gen/holdfast/v1/ledger_pb";
import { GrantStatus, HoldStatus, TransferKind } from "@holdfast/gen/holdfast/v1/types_pb";
import { checkInvariants } from "@holdfast/ledger/invariants";
import { startNatsServer } from "./support/nats.js";
import { startTestServer, type Protocol } from "./support/server.js";

const STREAM = "HOLDFAST_EVENTS";
const HOUR_MS = 3_600_000;

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

const key = () => `k-${randomUUID()}`;
/** A time `ms` after the server's (manual) clock, as a protobuf Timestamp. */
const after = (ms: number) => timestampFromDate(new Date(s.clock().getTime() + ms));

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

/** Awaits a call that must fail with INVALID_ARGUMENT / INVALID_FIELD naming `field`. */
async function invalid(call: Promise<unknown>, field: string): Promise<void> {
  const detail = await refused(call, Code.InvalidArgument, "INVALID_FIELD");
  expect(detail.field).toBe(field);
  expect(detail.message.startsWith(`${field}: `), detail.message).toBe(true);
}

/** Every event of one wallet on the stream, once the relay has published the whole outbox. */
async function walletEvents(walletId: string): Promise<Event[]> {
  const deadline = Date.now() + 30_000;
  while ((await s.app.relay!.refreshStatus()).backlog > 0) {
    if (Date.now() > deadline) throw new Error("timed out waiting for the relay");
    await sleep(50);
  }
  const { rows } = await s.app.pool.query<{ n: number }>("select count(*)::int as n from events where tenant_id = $1 and wallet_id = $2", [
    s.tenantId,
    walletId,
  ]);
  const total = rows[0]!.n;
  const nc = await connect({ servers: nats.url });
  try {
    const consumer = await jetstream(nc).consumers.get(STREAM, { filter_subjects: `holdfast.events.${s.tenantId}.${walletId}.>` });
    const out: Event[] = [];
    while (out.length < total) {
      for await (const m of await consumer.fetch({ max_messages: 100, expires: 2000 })) {
        out.push(fromBinary(EventSchema, m.data));
      }
    }
    return out;
  } finally {
    await nc.close();
  }
}

describe.each(["connect-json", "grpc"] as Protocol[])("over %s", (protocol) => {
  const prefix = `${protocol.replace("-", "_")}_`;
  let n = 0;
  const wallet = () => `${prefix}w${++n}`;
  const grantId = () => `${prefix}g${++n}`;
  let writer: Client<typeof LedgerService>;
  let reader: Client<typeof LedgerService>;

  beforeAll(() => {
    writer = s.client(LedgerService, protocol, s.keys.writer);
    reader = s.client(LedgerService, protocol, s.keys.reader);
  });

  it("CreateGrant credits a wallet with a grant; GetGrant and ListGrants answer it; a replay answers the original", async () => {
    const w = wallet();
    const id = grantId();
    const request = {
      walletId: w,
      asset: "USD",
      amount: 100n,
      grantId: id,
      category: "promotional",
      priority: 10,
      expiresAt: after(HOUR_MS),
      idempotencyKey: key(),
      metadata: { campaign: "spring" },
    };
    const r = await writer.createGrant(request);
    expect(r.replayed).toBe(false);
    expect(r.grant).toMatchObject({
      grantId: id,
      walletId: w,
      asset: "USD",
      category: "promotional",
      priority: 10,
      amount: 100n,
      remaining: 100n,
      held: 0n,
      consumed: 0n,
      expired: 0n,
      voided: 0n,
      status: GrantStatus.ACTIVE,
      metadata: { campaign: "spring" },
    });
    expect(timestampDate(r.grant!.startsAt!)).toEqual(s.clock());
    expect(timestampDate(r.grant!.expiresAt!)).toEqual(timestampDate(request.expiresAt));
    expect(r.grant?.voidedAt).toBeUndefined();
    expect(r.balance).toMatchObject({ asset: "USD", posted: 100n, held: 0n, available: 100n, scheduled: 0n });
    expect(r.transfer).toMatchObject({ kind: TransferKind.GRANT, debitWalletId: "@world", creditWalletId: w, amount: 100n });
    expect(r.transfer?.grants).toMatchObject([{ grantId: id, amount: 100n }]);

    const replay = await writer.createGrant(request);
    expect(replay.replayed).toBe(true);
    expect(replay.grant).toEqual(r.grant);
    const taken = await refused(writer.createGrant({ ...request, idempotencyKey: key() }), Code.AlreadyExists, "GRANT_ALREADY_EXISTS");
    expect(taken.field).toBe("");

    // An empty id, category and priority take the defaults; an unset expiry never comes.
    const plain = await writer.createGrant({ walletId: w, asset: "USD", amount: 5n, idempotencyKey: key() });
    expect(plain.grant?.grantId).toMatch(/^grant_[0-9a-f-]{36}$/);
    expect(plain.grant).toMatchObject({ category: "default", priority: 100, status: GrantStatus.ACTIVE });
    expect(plain.grant?.expiresAt).toBeUndefined();

    expect((await reader.getGrant({ grantId: id })).grant).toEqual(r.grant);
    await refused(reader.getGrant({ grantId: `${prefix}missing` }), Code.NotFound, "GRANT_NOT_FOUND");
    const listed = await reader.listGrants({ walletId: w });
    expect(listed.grants.map((g) => g.grantId)).toEqual([id, plain.grant!.grantId]);
    expect(listed.nextPageToken).toBe("");
  });

  it("a scheduled grant counts in scheduled, not available, and is spendable once it starts, without any worker", async () => {
    const w = wallet();
    const id = grantId();
    const r = await writer.createGrant({
      walletId: w,
      asset: "USD",
      amount: 100n,
      grantId: id,
      startsAt: after(60_000),
      expiresAt: after(HOUR_MS),
      idempotencyKey: key(),
    });
    expect(r.grant?.status).toBe(GrantStatus.SCHEDULED);
    expect(r.balance).toMatchObject({ posted: 100n, available: 0n, scheduled: 100n });
    const short = await refused(writer.spend({ walletId: w, asset: "USD", amount: 10n, idempotencyKey: key() }), Code.FailedPrecondition, "INSUFFICIENT_FUNDS");
    expect(short.metadata["available"]).toBe("0");
    s.clock.advance(60_000);
    const spent = await writer.spend({ walletId: w, asset: "USD", amount: 10n, idempotencyKey: key() });
    expect(spent.transfer?.grants).toMatchObject([{ grantId: id, amount: 10n }]);
    expect(spent.balance).toMatchObject({ posted: 90n, available: 90n, scheduled: 0n });
    expect((await reader.getGrant({ grantId: id })).grant).toMatchObject({ status: GrantStatus.ACTIVE, remaining: 90n, consumed: 10n });
  });

  it("a reserve draws on a promotional grant first, then the paid deposit; Capture consumes the hold's allocations in order", async () => {
    const w = wallet();
    const promo = grantId();
    await writer.createGrant({ walletId: w, asset: "USD", amount: 30n, grantId: promo, category: "promotional", priority: 10, expiresAt: after(HOUR_MS), idempotencyKey: key() });
    const deposit = await writer.deposit({ walletId: w, asset: "USD", amount: 100n, idempotencyKey: key() });
    const paid = deposit.transfer!.grants[0]!.grantId;
    expect(deposit.balance).toMatchObject({ posted: 130n, available: 130n });

    const reserved = await writer.reserve({ walletId: w, asset: "USD", amount: 50n, ttlSeconds: 3600, idempotencyKey: key() });
    expect(reserved.hold?.allocations).toMatchObject([
      { grantId: promo, amount: 30n },
      { grantId: paid, amount: 20n },
    ]);
    expect(reserved.hold?.categories).toEqual([]);
    expect(reserved.balance).toMatchObject({ posted: 130n, held: 50n, available: 80n });

    const captured = await writer.capture({ holdId: reserved.hold!.holdId, amount: 40n, idempotencyKey: key() });
    expect(captured.transfer?.grants).toMatchObject([
      { grantId: promo, amount: 30n },
      { grantId: paid, amount: 10n },
    ]);
    expect(captured.balance).toMatchObject({ posted: 90n, held: 0n, available: 90n });
    const grants = (await reader.listGrants({ walletId: w, includeClosed: true })).grants;
    expect(grants.map((g) => [g.grantId, g.status, g.remaining, g.consumed])).toEqual([
      [promo, GrantStatus.EXHAUSTED, 0n, 30n],
      [paid, GrantStatus.ACTIVE, 90n, 10n],
    ]);
    // By default an exhausted grant with nothing held is not listed.
    expect((await reader.listGrants({ walletId: w })).grants.map((g) => g.grantId)).toEqual([paid]);

    // A refund goes back to the grants the capture drew from, latest consumed first.
    const refund = await writer.refund({ transferId: captured.transfer!.transferId, amount: 15n, idempotencyKey: key() });
    expect(refund.transfer?.grants).toMatchObject([
      { grantId: paid, amount: 10n },
      { grantId: promo, amount: 5n },
    ]);
    expect(refund.breakage).toBe(0n);
  });

  it("a promotional grant that expires under a hold: the hold keeps it, what comes back is broken; events reach NATS with the breakdown", async () => {
    const w = wallet();
    const promo = grantId();
    const created = await writer.createGrant({
      walletId: w,
      asset: "USD",
      amount: 30n,
      grantId: promo,
      category: "promotional",
      priority: 10,
      expiresAt: after(60_000),
      idempotencyKey: key(),
    });
    await writer.deposit({ walletId: w, asset: "USD", amount: 100n, idempotencyKey: key() });
    const hold = (await writer.reserve({ walletId: w, asset: "USD", amount: 50n, ttlSeconds: 3600, idempotencyKey: key() })).hold!;
    s.clock.advance(60_000);

    // Expired, the grant is no longer spendable, yet the hold keeps what it drew from it.
    const read = (await reader.getGrant({ grantId: promo })).grant!;
    expect(read).toMatchObject({ status: GrantStatus.EXPIRED, remaining: 0n, held: 30n });
    expect((await reader.getWallet({ walletId: w })).wallet?.balances[0]).toMatchObject({ posted: 130n, held: 50n, available: 80n });

    const released = await writer.release({ holdId: hold.holdId, idempotencyKey: key() });
    expect(released.hold?.status).toBe(HoldStatus.RELEASED);
    expect(released.balance).toMatchObject({ posted: 100n, held: 0n, available: 100n });
    expect((await reader.getGrant({ grantId: promo })).grant).toMatchObject({ status: GrantStatus.EXPIRED, held: 0n, expired: 30n });
    await refused(writer.voidGrant({ grantId: promo, idempotencyKey: key() }), Code.FailedPrecondition, "GRANT_NOT_ACTIVE");

    const events = await walletEvents(w);
    expect(events.map((e) => e.type)).toEqual([
      "holdfast.grant.created",
      "holdfast.deposit.completed",
      "holdfast.hold.created",
      "holdfast.hold.released",
      "holdfast.grant.expired",
    ]);
    const [grantCreated, , holdCreated, holdReleased, grantExpired] = events;
    expect(grantCreated?.payload.case).toBe("grantCreated");
    expect(grantCreated?.payload.value).toMatchObject({ grant: { grantId: promo, amount: 30n, status: GrantStatus.ACTIVE } });
    expect(grantCreated?.payload.case === "grantCreated" && grantCreated.payload.value.transfer?.transferId).toBe(created.transfer?.transferId);
    expect(holdCreated?.payload.case === "holdCreated" && holdCreated.payload.value.hold?.allocations.map((a) => [a.grantId, a.amount])).toEqual([
      [promo, 30n],
      [expect.stringMatching(/^grant_/), 20n],
    ]);
    expect(holdReleased?.payload.case === "holdReleased" && holdReleased.payload.value.transfer?.grants[0]).toMatchObject({ grantId: promo, amount: 30n });
    expect(grantExpired?.payload.case).toBe("grantExpired");
    expect(grantExpired?.payload.value).toMatchObject({
      grant: { grantId: promo, status: GrantStatus.EXPIRED, expired: 30n },
      transfer: { kind: TransferKind.BREAKAGE, debitWalletId: w, creditWalletId: "@breakage", amount: 30n, grants: [{ grantId: promo, amount: 30n }] },
    });
    expect(grantExpired?.balance).toMatchObject({ posted: 100n, available: 100n });
  });

  it("VoidGrant posts what remains unheld to @breakage, leaves the held part with its hold, and refuses a second void", async () => {
    const w = wallet();
    const id = grantId();
    await writer.createGrant({ walletId: w, asset: "USD", amount: 100n, grantId: id, idempotencyKey: key() });
    await writer.reserve({ walletId: w, asset: "USD", amount: 40n, ttlSeconds: 3600, idempotencyKey: key() });
    const request = { grantId: id, idempotencyKey: key() };
    const voided = await writer.voidGrant(request);
    expect(voided.grant).toMatchObject({ status: GrantStatus.VOIDED, remaining: 0n, held: 40n, voided: 60n });
    expect(voided.grant?.voidedAt).toBeDefined();
    expect(voided.transfer).toMatchObject({ kind: TransferKind.BREAKAGE, debitWalletId: w, creditWalletId: "@breakage", amount: 60n });
    expect(voided.balance).toMatchObject({ posted: 40n, held: 40n, available: 0n });
    expect((await writer.voidGrant(request)).replayed).toBe(true);
    const again = await refused(writer.voidGrant({ grantId: id, idempotencyKey: key() }), Code.FailedPrecondition, "GRANT_NOT_ACTIVE");
    expect(again.metadata).toMatchObject({ status: "voided" });
    await refused(writer.voidGrant({ grantId: `${prefix}missing`, idempotencyKey: key() }), Code.NotFound, "GRANT_NOT_FOUND");

    // With everything held, the void posts no journal row.
    const held = grantId();
    const w2 = wallet();
    await writer.createGrant({ walletId: w2, asset: "USD", amount: 10n, grantId: held, idempotencyKey: key() });
    await writer.reserve({ walletId: w2, asset: "USD", amount: 10n, ttlSeconds: 3600, idempotencyKey: key() });
    const quiet = await writer.voidGrant({ grantId: held, idempotencyKey: key() });
    expect(quiet.transfer).toBeUndefined();
    expect(quiet.grant).toMatchObject({ status: GrantStatus.VOIDED, held: 10n, voided: 0n });
  });

  it("categories: Spend and Reserve draw only on grants of those categories; none eligible is INSUFFICIENT_FUNDS with their available", async () => {
    const w = wallet();
    const image = grantId();
    const chat = grantId();
    await writer.createGrant({ walletId: w, asset: "USD", amount: 50n, grantId: image, category: "image", idempotencyKey: key() });
    await writer.createGrant({ walletId: w, asset: "USD", amount: 20n, grantId: chat, category: "chat", idempotencyKey: key() });
    const short = await refused(
      writer.spend({ walletId: w, asset: "USD", amount: 30n, categories: ["chat"], idempotencyKey: key() }),
      Code.FailedPrecondition,
      "INSUFFICIENT_FUNDS",
    );
    expect(short.metadata).toMatchObject({ available: "20", categories: "chat" });
    const none = await refused(
      writer.reserve({ walletId: w, asset: "USD", amount: 1n, categories: ["video"], idempotencyKey: key() }),
      Code.FailedPrecondition,
      "INSUFFICIENT_FUNDS",
    );
    expect(none.metadata).toMatchObject({ available: "0", categories: "video" });

    const spent = await writer.spend({ walletId: w, asset: "USD", amount: 40n, categories: ["image"], idempotencyKey: key() });
    expect(spent.transfer?.grants).toMatchObject([{ grantId: image, amount: 40n }]);
    const hold = (await writer.reserve({ walletId: w, asset: "USD", amount: 15n, categories: ["chat", "image"], idempotencyKey: key() })).hold!;
    expect(hold.categories).toEqual(["chat", "image"]);
    expect(hold.allocations.map((a) => [a.grantId, a.amount])).toEqual(
      // Equal priority and expiry: the order falls to starts_at, then created_at (image first).
      [
        [image, 10n],
        [chat, 5n],
      ],
    );
  });

  it("ListGrants pages in consumption order; include_closed adds voided grants", async () => {
    const w = wallet();
    const ids: string[] = [];
    for (const priority of [5, 1, 4, 2, 3]) {
      const id = `${grantId()}_p${priority}`;
      ids[priority - 1] = id;
      await writer.createGrant({ walletId: w, asset: "USD", amount: 10n, grantId: id, priority, idempotencyKey: key() });
    }
    const seen: string[] = [];
    let pageToken = "";
    for (let page = 0; page < 5; page++) {
      const r = await reader.listGrants({ walletId: w, asset: "USD", pageSize: 2, pageToken });
      seen.push(...r.grants.map((g) => g.grantId));
      pageToken = r.nextPageToken;
      if (pageToken === "") break;
    }
    expect(seen).toEqual(ids);
    await writer.voidGrant({ grantId: ids[0]!, idempotencyKey: key() });
    expect((await reader.listGrants({ walletId: w })).grants.map((g) => g.grantId)).toEqual(ids.slice(1));
    expect((await reader.listGrants({ walletId: w, includeClosed: true })).grants.map((g) => g.grantId)).toEqual(ids);
    expect((await reader.listGrants({ walletId: w, asset: "EUR" })).grants).toEqual([]);
  });

  it("refuses bad input, naming the field; a bad window is not recorded under the key", async () => {
    const w = wallet();
    type GrantFields = { walletId: string; asset: string; amount: bigint; grantId: string; category: string; priority: number };
    const grant = (over: Partial<GrantFields & { startsAt: Timestamp; expiresAt: Timestamp; idempotencyKey: string }>) =>
      writer.createGrant({ walletId: w, asset: "USD", amount: 10n, idempotencyKey: key(), ...over });
    for (const category of ["Promo", "a b", "x".repeat(65), "é"]) {
      await invalid(grant({ category }), "category");
    }
    for (const priority of [1001, 5000]) {
      await invalid(grant({ priority }), "priority");
    }
    expect((await grant({ priority: 0 })).grant?.priority).toBe(0);
    expect((await grant({ priority: 1000, category: "x".repeat(64) })).grant?.priority).toBe(1000);
    for (const amount of [0n, -5n]) {
      await invalid(grant({ amount }), "amount");
    }
    for (const id of ["a b", "x".repeat(129), "g/1"]) {
      await invalid(grant({ grantId: id }), "grant_id");
    }
    await invalid(grant({ walletId: "" }), "wallet_id");
    await invalid(grant({ asset: "usd" }), "asset");

    const k = key();
    await invalid(grant({ startsAt: after(HOUR_MS), expiresAt: after(HOUR_MS), idempotencyKey: k }), "expires_at");
    await invalid(grant({ startsAt: after(HOUR_MS), expiresAt: after(60_000), idempotencyKey: k }), "expires_at");
    // The key was not used: the same key now serves a valid request.
    expect((await grant({ startsAt: after(60_000), expiresAt: after(HOUR_MS), idempotencyKey: k })).replayed).toBe(false);
    // An expiry in the past depends on the command's clock: the ledger refuses it, naming the field.
    await invalid(grant({ expiresAt: after(-1000) }), "expires_at");

    for (const categories of [["IMAGE"], ["image", ""], Array.from({ length: 17 }, (_, i) => `c${i}`)]) {
      await invalid(writer.spend({ walletId: w, asset: "USD", amount: 1n, categories, idempotencyKey: key() }), "categories");
      await invalid(writer.reserve({ walletId: w, asset: "USD", amount: 1n, categories, idempotencyKey: key() }), "categories");
    }
    await invalid(writer.voidGrant({ grantId: "", idempotencyKey: key() }), "grant_id");
    await invalid(writer.voidGrant({ grantId: "g", idempotencyKey: "" }), "idempotency_key");
    await invalid(reader.getGrant({ grantId: "a b" }), "grant_id");
    await invalid(reader.listGrants({ walletId: "" }), "wallet_id");
    await invalid(reader.listGrants({ walletId: w, asset: "usd" }), "asset");
    await invalid(reader.listGrants({ walletId: w, pageSize: 501 }), "page_size");
    await invalid(reader.listGrants({ walletId: w, pageToken: "bm90LW91cnM" }), "page_token");
  });

  it("roles: readers read grants, writers create and void them, a wallet-scoped key may not create or void any", async () => {
    const w = wallet();
    const id = grantId();
    await refused(reader.createGrant({ walletId: w, asset: "USD", amount: 1n, idempotencyKey: key() }), Code.PermissionDenied, "PERMISSION_DENIED");
    await writer.createGrant({ walletId: w, asset: "USD", amount: 100n, grantId: id, idempotencyKey: key() });
    await refused(reader.voidGrant({ grantId: id, idempotencyKey: key() }), Code.PermissionDenied, "PERMISSION_DENIED");
    expect((await reader.getGrant({ grantId: id })).grant?.grantId).toBe(id);

    const scoped = s.client(LedgerService, protocol, await s.issue("writer", w));
    const scopedReader = s.client(LedgerService, protocol, await s.issue("reader", w));
    const denied = await refused(scoped.createGrant({ walletId: w, asset: "USD", amount: 1n, idempotencyKey: key() }), Code.PermissionDenied, "PERMISSION_DENIED");
    expect(denied.field).toBe("wallet_id");
    await refused(scoped.voidGrant({ grantId: id, idempotencyKey: key() }), Code.PermissionDenied, "PERMISSION_DENIED");
    await refused(scopedReader.getGrant({ grantId: id }), Code.PermissionDenied, "PERMISSION_DENIED");
    expect((await scopedReader.listGrants({ walletId: w })).grants.map((g) => g.grantId)).toEqual([id]);
    await refused(scopedReader.listGrants({ walletId: wallet() }), Code.PermissionDenied, "PERMISSION_DENIED");
    // The scoped key spends its own wallet's grants, with categories.
    const spent = await scoped.spend({ walletId: w, asset: "USD", amount: 5n, categories: ["default"], idempotencyKey: key() });
    expect(spent.transfer?.grants).toMatchObject([{ grantId: id, amount: 5n }]);
    expect((await reader.getGrant({ grantId: id })).grant?.remaining).toBe(95n);
  });
});

describe("the whole database", () => {
  it("keeps every ledger invariant", async () => {
    expect(await checkInvariants(s.app.pool)).toEqual([]);
  });
});
