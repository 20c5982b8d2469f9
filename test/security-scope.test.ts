// Goal: a wallet-scoped key (what a browser or an agent holds) can only spend, reserve,
// capture, release, extend holds, refund and read within its own wallet (issue 12, finding 1):
// it can never create money (Deposit), move money to or from another wallet (Transfer), create
// wallets or call administration; everything else of other wallets looks NOT_FOUND or is
// PERMISSION_DENIED; and one table (services/ledger/src/rpc/scope.ts) decides it for every RPC,
// the same table the README prints.
// Method: a real ledger server on port 0 with a scoped writer key, a scoped reader key and the
// tenant's unscoped keys; every RPC is called over Connect. The rule table is compared with the
// services' descriptors (every RPC listed) and with the README's "Who may call what".
import { readFile } from "node:fs/promises";
import { Code, ConnectError, type Client } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AdminService, Role } from "@holdfast/gen/holdfast/v1/admin_pb";
import { ErrorDetailSchema, type ErrorDetail } from "@holdfast/gen/holdfast/v1/errors_pb";
import { LedgerService } from "@holdfast/gen/holdfast/v1/ledger_pb";
import { RateCardService } from "@holdfast/gen/holdfast/v1/rate_cards_pb";
import { WebhookService } from "@holdfast/gen/holdfast/v1/webhooks_pb";
import { checkInvariants } from "@holdfast/ledger/invariants";
import { METHOD_RULES, ruleOf } from "@holdfast/ledger/rpc/scope";
import { key } from "./support/ledger.js";
import { startTestServer } from "./support/server.js";

let s: Awaited<ReturnType<typeof startTestServer>>;
let scoped: Client<typeof LedgerService>;
let scopedReader: Client<typeof LedgerService>;
let writer: Client<typeof LedgerService>;
let scopedKey: string;

/** The scoped keys' wallet, funded by the tenant's writer key; "other" is a neighbour's. */
const MINE = "scope_mine";
const OTHER = "scope_other";

beforeAll(async () => {
  s = await startTestServer();
  scopedKey = await s.issue("writer", MINE);
  scoped = s.client(LedgerService, "connect", scopedKey);
  scopedReader = s.client(LedgerService, "connect", await s.issue("reader", MINE));
  writer = s.client(LedgerService, "connect", s.keys.writer);
  await writer.deposit({ walletId: MINE, asset: "USD", amount: 1000n, idempotencyKey: key() });
  await writer.deposit({ walletId: OTHER, asset: "USD", amount: 1000n, idempotencyKey: key() });
});
afterAll(async () => {
  await s?.close();
});

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

const posted = async (walletId: string) => (await writer.getWallet({ walletId })).wallet?.balances[0]?.posted;

describe("a wallet-scoped writer key", () => {
  it("cannot deposit, not even into its own wallet: no money is created", async () => {
    for (const amount of [1n, 9_223_372_036_854_775_000n]) {
      const detail = await refused(scoped.deposit({ walletId: MINE, asset: "USD", amount, idempotencyKey: key() }), Code.PermissionDenied, "PERMISSION_DENIED");
      expect(detail.field).toBe("wallet_id");
    }
    expect(await posted(MINE)).toBe(1000n);
  });

  it("cannot transfer out of its wallet, into it, or to a wallet that does not exist", async () => {
    const transfers = [
      { fromWalletId: MINE, toWalletId: OTHER },
      { fromWalletId: OTHER, toWalletId: MINE },
      { fromWalletId: MINE, toWalletId: "scope_new_wallet" },
    ];
    for (const t of transfers) {
      const detail = await refused(scoped.transfer({ ...t, asset: "USD", amount: 10n, idempotencyKey: key() }), Code.PermissionDenied, "PERMISSION_DENIED");
      expect(detail.field).toBe("from_wallet_id");
    }
    expect([await posted(MINE), await posted(OTHER)]).toEqual([1000n, 1000n]);
    await refused(writer.getWallet({ walletId: "scope_new_wallet" }), Code.NotFound, "WALLET_NOT_FOUND");
  });

  it("cannot create a wallet, even the one it is limited to", async () => {
    await refused(scoped.createWallet({ walletId: MINE }), Code.PermissionDenied, "PERMISSION_DENIED");
  });

  it("spends, reserves, captures, releases, extends and refunds within its wallet", async () => {
    const spent = await scoped.spend({ walletId: MINE, asset: "USD", amount: 100n, idempotencyKey: key() });
    expect(spent.balance?.posted).toBe(900n);
    const held = (await scoped.reserve({ walletId: MINE, asset: "USD", amount: 50n, ttlSeconds: 60, idempotencyKey: key() })).hold!;
    expect((await scoped.extendHold({ holdId: held.holdId, ttlSeconds: 120, idempotencyKey: key() })).hold?.holdId).toBe(held.holdId);
    expect((await scoped.capture({ holdId: held.holdId, amount: 20n, idempotencyKey: key() })).balance?.posted).toBe(880n);
    const second = (await scoped.reserve({ walletId: MINE, asset: "USD", amount: 5n, ttlSeconds: 60, idempotencyKey: key() })).hold!;
    expect((await scoped.release({ holdId: second.holdId, idempotencyKey: key() })).balance?.available).toBe(880n);
    expect((await scoped.refund({ transferId: spent.transfer!.transferId, amount: 30n, idempotencyKey: key() })).balance?.posted).toBe(910n);
  });

  it("reads its own wallet and nothing of another", async () => {
    expect((await scoped.getWallet({ walletId: MINE })).wallet?.walletId).toBe(MINE);
    expect((await scoped.listTransfers({ walletId: MINE })).transfers.length).toBeGreaterThan(0);
    await scoped.listHolds({ walletId: MINE });
    for (const call of [
      () => scoped.getWallet({ walletId: OTHER }),
      () => scoped.listTransfers({ walletId: OTHER }),
      () => scoped.listHolds({ walletId: OTHER }),
      () => scoped.spend({ walletId: OTHER, asset: "USD", amount: 1n, idempotencyKey: key() }),
      () => scoped.reserve({ walletId: OTHER, asset: "USD", amount: 1n, idempotencyKey: key() }),
      // A malformed wallet id is not its wallet either.
      () => scoped.getWallet({ walletId: "" }),
    ]) {
      expect((await refused(call(), Code.PermissionDenied, "PERMISSION_DENIED")).field).toBe("wallet_id");
    }
    const stream = scoped.watchWallet({ walletId: OTHER })[Symbol.asyncIterator]();
    await refused(stream.next(), Code.PermissionDenied, "PERMISSION_DENIED");
  });

  it("finds no hold or transfer of another wallet (NOT_FOUND, as if it did not exist)", async () => {
    const hold = (await writer.reserve({ walletId: OTHER, asset: "USD", amount: 5n, ttlSeconds: 60, idempotencyKey: key() })).hold!;
    const spend = (await writer.spend({ walletId: OTHER, asset: "USD", amount: 5n, idempotencyKey: key() })).transfer!;
    await refused(scoped.getHold({ holdId: hold.holdId }), Code.NotFound, "HOLD_NOT_FOUND");
    await refused(scoped.capture({ holdId: hold.holdId, idempotencyKey: key() }), Code.NotFound, "HOLD_NOT_FOUND");
    await refused(scoped.release({ holdId: hold.holdId, idempotencyKey: key() }), Code.NotFound, "HOLD_NOT_FOUND");
    await refused(scoped.extendHold({ holdId: hold.holdId, ttlSeconds: 60, idempotencyKey: key() }), Code.NotFound, "HOLD_NOT_FOUND");
    await refused(scoped.refund({ transferId: spend.transferId, idempotencyKey: key() }), Code.NotFound, "TRANSFER_NOT_FOUND");
  });

  it("learns only that a hold id is taken in the tenant, nothing about the hold (accepted, docs/security.md)", async () => {
    const theirs = (await writer.reserve({ walletId: OTHER, asset: "USD", amount: 7n, ttlSeconds: 60, holdId: "scope_taken", idempotencyKey: key() })).hold!;
    const detail = await refused(
      scoped.reserve({ walletId: MINE, asset: "USD", amount: 1n, holdId: theirs.holdId, idempotencyKey: key() }),
      Code.AlreadyExists,
      "HOLD_ALREADY_EXISTS",
    );
    expect(detail.metadata).toEqual({});
    expect(detail.message).not.toContain(OTHER);
  });

  it("cannot call administration, webhooks or PutRateCard; reads rate cards and quotes", async () => {
    const admin = s.client(AdminService, "connect", scopedKey);
    await refused(admin.listApiKeys({}), Code.PermissionDenied, "PERMISSION_DENIED");
    await refused(admin.createApiKey({ name: "x", role: Role.WRITER }), Code.PermissionDenied, "PERMISSION_DENIED");
    await refused(s.client(WebhookService, "connect", scopedKey).listEndpoints({}), Code.PermissionDenied, "PERMISSION_DENIED");
    const cards = s.client(RateCardService, "connect", scopedKey);
    await refused(cards.putRateCard({ rateCardId: "c", idempotencyKey: key() }), Code.PermissionDenied, "PERMISSION_DENIED");
    expect((await cards.listRateCards({})).rateCards).toEqual([]);
    // NOT_FOUND (not PERMISSION_DENIED) means the call was allowed and looked for the card.
    await refused(cards.getRateCard({ rateCardId: "none" }), Code.NotFound, "RATE_CARD_NOT_FOUND");
    await refused(cards.quoteUsage({ rateCardId: "none", model: "m" }), Code.NotFound, "RATE_CARD_NOT_FOUND");
  });
});

describe("a wallet-scoped reader key", () => {
  it("reads its wallet and may not run a single command", async () => {
    expect((await scopedReader.getWallet({ walletId: MINE })).wallet?.walletId).toBe(MINE);
    for (const call of [
      () => scopedReader.spend({ walletId: MINE, asset: "USD", amount: 1n, idempotencyKey: key() }),
      () => scopedReader.reserve({ walletId: MINE, asset: "USD", amount: 1n, idempotencyKey: key() }),
      () => scopedReader.deposit({ walletId: MINE, asset: "USD", amount: 1n, idempotencyKey: key() }),
    ]) {
      expect((await refused(call(), Code.PermissionDenied, "PERMISSION_DENIED")).message).toContain("writer role");
    }
  });
});

describe("the rule table", () => {
  const services = [LedgerService, AdminService, WebhookService, RateCardService];

  it("lists every RPC of every service by name, and nothing else", () => {
    const rpcs = services.flatMap((service) => service.methods.map((m) => `${service.typeName}/${m.name}`));
    expect(Object.keys(METHOD_RULES).sort()).toEqual(rpcs.sort());
  });

  it("closes an RPC it does not list to scoped keys", () => {
    expect(ruleOf("holdfast.v1.LedgerService", "SomeNewCommand")).toMatchObject({ role: "writer", scoped: { kind: "refused" } });
    expect(ruleOf("holdfast.v1.SomeNewService", "Anything")).toMatchObject({ role: "admin", scoped: { kind: "refused" } });
  });

  it("is the table the README prints under \"Who may call what\"", async () => {
    const readme = await readFile("README.md", "utf8");
    const section = readme.slice(readme.indexOf("### Who may call what"));
    const rows = [...section.matchAll(/^\| `(\w+)\.(\w+)` \| (\w+) \| ([^|]+) \|$/gm)].map(([, service, method, role, scopedCell]) => [
      `holdfast.v1.${service}/${method}`,
      role,
      scopedKind(scopedCell!.trim()),
    ]);
    const expected = Object.entries(METHOD_RULES).map(([rpc, rule]) => [rpc, rule.role, rule.scoped.kind]);
    expect(rows.sort()).toEqual(expected.sort());
  });
});

/** The README's wording of each kind of scoped access. */
function scopedKind(cell: string): string {
  if (cell.startsWith("no")) return "refused";
  if (cell.startsWith("its wallet only")) return "own-wallet";
  if (cell.startsWith("its wallet's holds and transfers only")) return "own-records";
  if (cell.startsWith("yes, tenant-wide, read only")) return "tenant-read";
  return `unknown: ${cell}`;
}

it("leaves every ledger invariant intact", async () => {
  expect(await checkInvariants(s.app.pool)).toEqual([]);
});
