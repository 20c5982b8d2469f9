// Goal: @holdfast/client does what docs/sdk.md says against a real ledger: each wallet, hold
// and grant method and the services it exposes answer as the RPCs do, in every protocol it
// offers; commands get a fresh idempotency key unless given one; a command whose answer is lost
// is retried with the same key and applied once; business refusals are never retried; errors
// arrive as the typed class of their ErrorDetail reason; lists page as async iterators; watch()
// streams balance changes and survives a dropped connection; the provider usage adapters follow
// docs/metering.md, "Provider mappings".
// Method: one real ledger server on port 0 over a fresh database with a manual clock; the client
// reaches it directly or through a TCP proxy in this file that can drop the first answer (it
// resets the connection the moment the server starts answering, after the server committed) or
// cut every open connection. Attempts are counted by an interceptor of the client, never timed.
// The file ends by checking every ledger invariant over the whole database.
import net from "node:net";
import { readFileSync } from "node:fs";
import { create } from "@bufbuild/protobuf";
import { ConnectError } from "@connectrpc/connect";
import { ErrorDetailSchema } from "@holdfast/gen/holdfast/v1/errors_pb";
import { randomUUID } from "node:crypto";
import type { Interceptor } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  Code,
  HoldExpiredError,
  HoldNotFoundError,
  HoldStatus,
  Holdfast,
  HoldfastError,
  IdempotencyKeyReusedError,
  InsufficientFundsError,
  InvalidFieldError,
  PermissionDeniedError,
  TokenClass,
  TransferKind,
  UnauthenticatedError,
  UnavailableError,
  WalletAlreadyExistsError,
  WalletNotFoundError,
  WebhookEndpointNotFoundError,
  fromAnthropicUsage,
  fromOpenAIUsage,
  pages,
  type Protocol,
} from "@holdfast/client";
import { checkInvariants } from "@holdfast/ledger/invariants";
import { startTestServer } from "./support/server.js";

let s: Awaited<ReturnType<typeof startTestServer>>;
const clients: Holdfast[] = [];

beforeAll(async () => {
  s = await startTestServer();
});
afterAll(async () => {
  for (const hf of clients) hf.close();
  await s?.close();
});

/** A client of the test server (or `baseUrl`) that counts the requests it sends per method. */
function client(options: { protocol?: Protocol; apiKey?: string; baseUrl?: string; attemptsMax?: number } = {}) {
  const sent = new Map<string, number>();
  const count: Interceptor = (next) => (req) => {
    sent.set(req.method.name, (sent.get(req.method.name) ?? 0) + 1);
    return next(req);
  };
  const hf = new Holdfast({
    baseUrl: options.baseUrl ?? s.app.url,
    apiKey: options.apiKey ?? s.keys.writer,
    asset: "USD",
    protocol: options.protocol,
    interceptors: [count],
    retry: { attemptsMax: options.attemptsMax ?? 4, delayMsInitial: 1, delayMsMax: 10 },
  });
  clients.push(hf);
  return { hf, sent };
}

/** Awaits a call that must fail; returns its error as the client typed it. */
async function failure(call: Promise<unknown> | (() => Promise<unknown>)): Promise<HoldfastError> {
  const error = await (typeof call === "function" ? call() : call).then(
    (value) => {
      throw new Error(`expected the call to fail, it answered ${JSON.stringify(value, (_k, v: unknown) => (typeof v === "bigint" ? String(v) : v))}`);
    },
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(HoldfastError);
  return error as HoldfastError;
}

let n = 0;
const walletId = (prefix = "sdk") => `${prefix}_w${++n}`;

/**
 * A TCP proxy to the test server. `dropNextAnswer()` makes it reset the client's connection at
 * the first byte of the next answer (HTTP/1.1) or at the first response HEADERS frame of a
 * stream (HTTP/2: the server's SETTINGS and the like pass), so the server has done the work and
 * the client never hears of it. `cutAll()` resets every open connection.
 */
async function startProxy(target: URL, http: "1.1" | "2") {
  const open = new Set<net.Socket>();
  let drop = false;
  let dropped = 0;
  const server = net.createServer((downstream) => {
    const upstream = net.connect(Number(target.port), target.hostname);
    open.add(downstream);
    downstream.on("close", () => open.delete(downstream));
    downstream.on("error", () => upstream.destroy());
    upstream.on("error", () => downstream.destroy());
    downstream.on("close", () => upstream.destroy());
    upstream.on("close", () => downstream.destroy());
    downstream.pipe(upstream);
    let pending = Buffer.alloc(0);
    upstream.on("data", (chunk: Buffer) => {
      if (!drop) {
        downstream.write(chunk);
        return;
      }
      // Forward whole frames that are not an answer; reset at the first one that is.
      pending = Buffer.concat([pending, chunk]);
      let offset = 0;
      while (http === "2" && pending.length - offset >= 9) {
        const length = pending.readUIntBE(offset, 3);
        const type = pending[offset + 3]!;
        const stream = pending.readUInt32BE(offset + 5) & 0x7fffffff;
        if (type === 0x1 && stream !== 0) break;
        if (pending.length - offset < 9 + length) break;
        offset += 9 + length;
      }
      downstream.write(pending.subarray(0, offset));
      pending = pending.subarray(offset);
      const answerStarts = http === "1.1" ? pending.length > 0 : pending.length >= 9 && pending[3] === 0x1;
      if (answerStarts) {
        drop = false;
        dropped++;
        pending = Buffer.alloc(0);
        downstream.resetAndDestroy();
        upstream.destroy();
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as net.AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    dropNextAnswer: () => {
      drop = true;
    },
    dropped: () => dropped,
    cutAll: () => {
      for (const socket of open) socket.resetAndDestroy();
    },
    close: async () => {
      for (const socket of open) socket.destroy();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

const protocols: Protocol[] = ["connect", "connect-json", "grpc", "grpc-web"];

describe.each(protocols)("over %s", (protocol) => {
  it("runs deposit, reserve, capture, get, holds and transfers on a wallet", async () => {
    const { hf } = client({ protocol });
    const wallet = hf.wallet(walletId(protocol.replace("-", "_")));
    const deposit = await wallet.deposit({ amount: 1000n, metadata: { source: "test" } });
    expect(deposit).toMatchObject({ replayed: false, balance: { asset: "USD", posted: 1000n, available: 1000n } });
    expect(deposit.transfer).toMatchObject({ kind: TransferKind.DEPOSIT, amount: 1000n, creditWalletId: wallet.walletId, metadata: { source: "test" } });

    const { hold, balance } = await wallet.reserve({ amount: 500, holdId: `${wallet.walletId}_h1`, ttlSeconds: 45, metadata: { model: "gpt-4.1" } });
    expect(hold).toMatchObject({ holdId: `${wallet.walletId}_h1`, amount: 500n, status: HoldStatus.PENDING, metadata: { model: "gpt-4.1" } });
    expect(balance).toMatchObject({ held: 500n, available: 500n });

    const captured = await hf.hold(hold!.holdId).capture({ amount: "123" });
    expect(captured.hold).toMatchObject({ status: HoldStatus.CAPTURED, capturedAmount: 123n });
    expect(captured.balance).toMatchObject({ posted: 877n, held: 0n, available: 877n });

    expect(await wallet.get()).toMatchObject({ walletId: wallet.walletId, balances: [{ asset: "USD", posted: 877n, available: 877n }] });
    expect(await hf.hold(hold!.holdId).get()).toMatchObject({ status: HoldStatus.CAPTURED });
    const holds = [];
    for await (const h of wallet.holds()) holds.push(h.holdId);
    expect(holds).toEqual([hold!.holdId]);
    const kinds = [];
    for await (const t of wallet.transfers()) kinds.push(t.kind);
    expect(kinds).toEqual([TransferKind.CAPTURE, TransferKind.RESERVE, TransferKind.DEPOSIT]);
  });
});

describe("wallet, hold and grant methods", () => {
  it("spends, releases, extends, transfers, refunds and creates wallets", async () => {
    const { hf } = client();
    const wallet = hf.wallet(walletId());
    await wallet.deposit({ amount: 1000n });
    const spend = await wallet.spend({ amount: 100n, metadata: { step: "1" } });
    expect(spend).toMatchObject({ transfer: { kind: TransferKind.SPEND, amount: 100n }, balance: { available: 900n } });

    const { hold } = await wallet.reserve({ amount: 300n, ttlSeconds: 60 });
    const extended = await hf.hold(hold!.holdId).extend({ ttlSeconds: 600 });
    expect(extended.hold!.expiresAt!.seconds - hold!.expiresAt!.seconds).toBe(540n);
    const released = await hf.hold(hold!.holdId).release();
    expect(released).toMatchObject({ hold: { status: HoldStatus.RELEASED }, balance: { held: 0n, available: 900n } });

    const other = walletId();
    const moved = await wallet.transfer({ toWalletId: other, amount: 200n });
    expect(moved).toMatchObject({ fromBalance: { available: 700n }, toBalance: { available: 200n } });

    const refund = await hf.refund({ transferId: spend.transfer!.transferId, amount: 40n });
    expect(refund).toMatchObject({ transfer: { kind: TransferKind.REFUND, amount: 40n, refundOfTransferId: spend.transfer!.transferId }, balance: { available: 740n } });

    const created = await hf.wallet(walletId()).create({ metadata: { plan: "pro" } });
    expect(created).toMatchObject({ metadata: { plan: "pro" }, balances: [] });
    expect(await failure(hf.wallet(created.walletId).create())).toBeInstanceOf(WalletAlreadyExistsError);
  });

  it("creates, lists, gets and voids grants", async () => {
    const { hf } = client();
    const wallet = hf.wallet(walletId());
    const grantId = `${wallet.walletId}_promo`;
    const created = await wallet.createGrant({
      amount: 300n,
      grantId,
      category: "promotional",
      priority: 10,
      expiresAt: new Date("2026-02-01T00:00:00Z"),
    });
    expect(created).toMatchObject({ grant: { grantId, category: "promotional", priority: 10, remaining: 300n }, balance: { available: 300n } });
    await wallet.deposit({ amount: 1000n });
    const grants = [];
    for await (const g of wallet.grants()) grants.push([g.category, g.remaining]);
    expect(grants).toEqual([
      ["promotional", 300n],
      ["default", 1000n],
    ]);
    expect(await hf.grant(grantId).get()).toMatchObject({ grantId, remaining: 300n });
    const voided = await hf.grant(grantId).void();
    expect(voided).toMatchObject({ grant: { voided: 300n }, balance: { available: 1000n } });
  });

  it("pages holds and transfers as async iterators, one page at a time", async () => {
    const { hf, sent } = client();
    const wallet = hf.wallet(walletId());
    await wallet.deposit({ amount: 1000n });
    const ids = [];
    for (let i = 0; i < 5; i++) ids.push((await wallet.reserve({ amount: 10n }))!.hold!.holdId);
    const seen = [];
    for await (const h of wallet.holds({ pageSize: 2, status: HoldStatus.PENDING })) seen.push(h.holdId);
    expect(seen.sort()).toEqual(ids.sort());
    expect(sent.get("ListHolds")).toBe(3);

    const firstPage = [];
    for await (const page of wallet.transfers({ pageSize: 4 }).byPage()) {
      firstPage.push(page);
      break;
    }
    expect(firstPage[0]!.items).toHaveLength(4);
    const rest = [];
    for await (const t of wallet.transfers({ pageSize: 4, pageToken: firstPage[0]!.nextPageToken })) rest.push(t.kind);
    expect(rest).toEqual([TransferKind.RESERVE, TransferKind.DEPOSIT]);
  });

  it("exposes rate cards, admin and webhooks, and pages any list with pages()", async () => {
    const { hf: admin } = client({ apiKey: s.keys.admin });
    const id = `card_${randomUUID().slice(0, 8)}`;
    // Claude Sonnet 4.5 in cents: $3 input, $0.30 cache read, $3.75 cache write, $15 output.
    const { rateCard } = await admin.rateCards.putRateCard({
      rateCardId: id,
      asset: "USD",
      models: [
        {
          model: "claude-sonnet-4-5",
          inputNanoPerMtok: 300_000_000_000n,
          cachedInputNanoPerMtok: 30_000_000_000n,
          cacheWriteNanoPerMtok: 375_000_000_000n,
          outputNanoPerMtok: 1_500_000_000_000n,
        },
      ],
    });
    expect(rateCard).toMatchObject({ rateCardId: id, version: 1 });
    expect((await admin.rateCards.getRateCard({ rateCardId: id })).rateCard?.models).toHaveLength(1);
    const cards = [];
    for await (const card of pages((pageToken) => admin.rateCards.listRateCards({ pageToken }), (r) => r.rateCards)) cards.push(card.rateCardId);
    expect(cards).toContain(id);

    // The worked example of docs/metering.md, "Provider mappings", through the adapter.
    const usage = fromAnthropicUsage({ input_tokens: 1200, cache_read_input_tokens: 8000, cache_creation_input_tokens: 500, output_tokens: 700 });
    const { quote } = await client({ apiKey: s.keys.reader }).hf.rateCards.quoteUsage({ rateCardId: id, model: "claude-sonnet-4-5", usage });
    expect(quote).toMatchObject({ costNano: 1_837_500_000n, holdAmount: 2n, chargeAmount: 1n });
    expect(quote!.lines.map((l) => l.tokenClass)).toEqual([TokenClass.INPUT, TokenClass.CACHED_INPUT, TokenClass.CACHE_WRITE, TokenClass.OUTPUT]);

    const keys = [];
    for await (const key of pages((pageToken) => admin.admin.listApiKeys({ pageToken, pageSize: 1 }), (r) => r.apiKeys)) keys.push(key.name);
    expect(keys.sort()).toEqual(["admin key", "reader key", "writer key"]);
    expect((await admin.webhooks.listEndpoints({})).endpoints).toEqual([]);
    expect(await failure(admin.webhooks.deleteEndpoint({ endpointId: randomUUID() }))).toBeInstanceOf(WebhookEndpointNotFoundError);
  });

  it("reserves, captures and spends usage priced by a rate card, with the adapters' token counts", async () => {
    const { hf: admin } = client({ apiKey: s.keys.admin });
    const rateCardId = `usage_${randomUUID().slice(0, 8)}`;
    await admin.rateCards.putRateCard({
      rateCardId,
      asset: "USD",
      models: [
        {
          model: "claude-sonnet-4-5",
          inputNanoPerMtok: 300_000_000_000n,
          cachedInputNanoPerMtok: 30_000_000_000n,
          cacheWriteNanoPerMtok: 375_000_000_000n,
          outputNanoPerMtok: 1_500_000_000_000n,
        },
      ],
    });
    const { hf } = client();
    const wallet = hf.wallet(walletId());
    await wallet.deposit({ amount: 100n });
    // docs/metering.md's example costs 1.8375 cents: a hold of 2, a charge of 1 carrying the rest.
    const usage = fromAnthropicUsage({ input_tokens: 1200, cache_read_input_tokens: 8000, cache_creation_input_tokens: 500, output_tokens: 700 });
    const reserved = await wallet.reserveUsage({ rateCardId, model: "claude-sonnet-4-5", estimate: { inputTokens: 9700n, outputTokens: 1000n } });
    expect(reserved.hold).toMatchObject({ amount: reserved.quote!.holdAmount, status: HoldStatus.PENDING });
    const captured = await hf.hold(reserved.hold!.holdId).captureUsage({ usage });
    expect(captured).toMatchObject({ amount: 1n, carryNano: 837_500_000n, quote: { costNano: 1_837_500_000n } });
    expect(captured.tokenTransfers.map((t) => t.amount)).toEqual([1200n, 8000n, 500n, 700n]);
    const spent = await wallet.spendUsage({ rateCardId, model: "claude-sonnet-4-5", usage });
    expect(spent).toMatchObject({ amount: 2n, carryNano: 675_000_000n, balance: { available: 97n } });
  });

  it("watch() streams the snapshot, then each change, and ends when the loop breaks", async () => {
    const { hf } = client({ apiKey: s.keys.reader });
    const { hf: writer } = client();
    const wallet = walletId();
    await writer.wallet(wallet).deposit({ amount: 1000n });
    const seen: [string, bigint][] = [];
    for await (const change of hf.wallet(wallet).watch()) {
      seen.push([change.eventType, change.balance!.available]);
      if (seen.length === 1) await writer.wallet(wallet).spend({ amount: 300n });
      if (seen.length === 2) break;
    }
    expect(seen).toEqual([
      ["snapshot", 1000n],
      ["holdfast.spend.completed", 700n],
    ]);
  });
});

describe("idempotency keys and retries", () => {
  it("gives every command a fresh key unless the caller gives one, which replays", async () => {
    const { hf } = client();
    const wallet = hf.wallet(walletId());
    const a = await wallet.deposit({ amount: 100n });
    const b = await wallet.deposit({ amount: 100n });
    expect(a.transfer!.transferId).not.toBe(b.transfer!.transferId);
    expect(b.balance!.posted).toBe(200n);

    const idempotencyKey = `k-${randomUUID()}`;
    const first = await wallet.spend({ amount: 30n, idempotencyKey });
    const again = await wallet.spend({ amount: 30n, idempotencyKey });
    expect(again).toMatchObject({ replayed: true, transfer: { transferId: first.transfer!.transferId } });
    expect(await failure(wallet.spend({ amount: 31n, idempotencyKey }))).toBeInstanceOf(IdempotencyKeyReusedError);
  });

  it.each([
    ["connect", "2"],
    ["grpc", "2"],
    ["connect-json", "1.1"],
  ] as const)("over %s, a command whose answer is lost is retried with the same key and applied once", async (protocol, http) => {
    const proxy = await startProxy(new URL(s.app.url), http);
    try {
      const { hf, sent } = client({ protocol, baseUrl: proxy.url });
      const wallet = hf.wallet(walletId());
      await wallet.deposit({ amount: 1000n });
      proxy.dropNextAnswer();
      const { hold, replayed } = await wallet.reserve({ amount: 400n });
      expect(proxy.dropped()).toBe(1);
      expect(sent.get("Reserve")).toBe(2);
      expect(replayed).toBe(true);

      proxy.dropNextAnswer();
      const captured = await hf.hold(hold!.holdId).capture({ amount: 150n });
      expect(captured).toMatchObject({ replayed: true, balance: { posted: 850n, held: 0n, available: 850n } });

      const kinds = [];
      for await (const t of wallet.transfers()) kinds.push(t.kind);
      expect(kinds).toEqual([TransferKind.CAPTURE, TransferKind.RESERVE, TransferKind.DEPOSIT]);
    } finally {
      await proxy.close();
    }
  });

  it("retries UNAVAILABLE up to attemptsMax and then throws UnavailableError; writes without a key are not retried", async () => {
    const closed = net.createServer();
    await new Promise<void>((resolve) => closed.listen(0, "127.0.0.1", resolve));
    const { port } = closed.address() as net.AddressInfo;
    await new Promise((resolve) => closed.close(resolve));
    const { hf, sent } = client({ baseUrl: `http://127.0.0.1:${port}`, attemptsMax: 3 });
    const error = await failure(hf.wallet("w").deposit({ amount: 1n }));
    expect(error).toBeInstanceOf(UnavailableError);
    expect({ code: error.code, reason: error.reason }).toEqual({ code: Code.Unavailable, reason: "UNAVAILABLE" });
    expect(sent.get("Deposit")).toBe(3);
    await failure(hf.wallet("w").get());
    expect(sent.get("GetWallet")).toBe(3);
    await failure(hf.wallet("w").create());
    expect(sent.get("CreateWallet")).toBe(1);
  });

  it("never retries a business refusal", async () => {
    const { hf, sent } = client();
    const wallet = hf.wallet(walletId());
    await wallet.deposit({ amount: 100n });
    await failure(wallet.spend({ amount: 500n }));
    expect(sent.get("Spend")).toBe(1);
  });

  it("watch() reconnects after the connection is cut, without repeating what it delivered", async () => {
    const proxy = await startProxy(new URL(s.app.url), "2");
    try {
      const { hf } = client({ apiKey: s.keys.reader, baseUrl: proxy.url });
      const { hf: writer } = client();
      const wallet = walletId();
      await writer.wallet(wallet).deposit({ amount: 1000n });
      const seen: [string, bigint][] = [];
      for await (const change of hf.wallet(wallet).watch()) {
        seen.push([change.eventType, change.balance!.available]);
        if (seen.length === 1) {
          proxy.cutAll();
          await writer.wallet(wallet).spend({ amount: 300n });
        }
        if (seen.length === 2) break;
      }
      // After the cut: the new snapshot carries the spend's sequence, so it is delivered once,
      // and the spend itself (the same sequence) is not repeated.
      expect(seen).toEqual([
        ["snapshot", 1000n],
        ["snapshot", 700n],
      ]);
    } finally {
      await proxy.close();
    }
  });
});

describe("typed errors", () => {
  it("turns every refusal into the class of its reason, with its code, field and metadata", async () => {
    const { hf } = client();
    const wallet = hf.wallet(walletId());
    await wallet.deposit({ amount: 100n });

    const poor = await failure(wallet.spend({ amount: 500n }));
    expect(poor).toBeInstanceOf(InsufficientFundsError);
    expect(poor).toMatchObject({ code: Code.FailedPrecondition, reason: "INSUFFICIENT_FUNDS", available: 100n, categories: [] });

    const scoped = await failure(wallet.spend({ amount: 500n, categories: ["image"] }));
    expect(scoped).toMatchObject({ available: 0n, categories: ["image"] });

    const bad = await failure(wallet.spend({ amount: 0n }));
    expect(bad).toBeInstanceOf(InvalidFieldError);
    expect(bad).toMatchObject({ code: Code.InvalidArgument, reason: "INVALID_FIELD", field: "amount" });

    const noAsset = await failure(new Holdfast({ baseUrl: s.app.url, apiKey: s.keys.writer }).wallet(wallet.walletId).spend({ amount: 1n }));
    expect(noAsset).toMatchObject({ reason: "INVALID_FIELD", field: "asset" });

    const { hold } = await wallet.reserve({ amount: 50n, ttlSeconds: 30 });
    s.clock.advance(31_000);
    const expired = await failure(hf.hold(hold!.holdId).capture());
    expect(expired).toBeInstanceOf(HoldExpiredError);
    expect(expired.code).toBe(Code.FailedPrecondition);

    expect(await failure(hf.hold("no_such_hold").release())).toBeInstanceOf(HoldNotFoundError);
    expect(await failure(hf.wallet(walletId()).get())).toBeInstanceOf(WalletNotFoundError);
    expect(await failure(client({ apiKey: s.keys.reader }).hf.wallet(wallet.walletId).spend({ amount: 1n }))).toBeInstanceOf(PermissionDeniedError);
    const stranger = await failure(client({ apiKey: "hf_0000000000000000_nope" }).hf.wallet(wallet.walletId).get());
    expect(stranger).toBeInstanceOf(UnauthenticatedError);
  });

  it("has a class of its own for every reason of the contract's table in errors.proto", () => {
    const table = readFileSync(new URL("../proto/holdfast/v1/errors.proto", import.meta.url), "utf8")
      .split("\n")
      .filter((line) => /^\/\/ \| [A-Z]/.test(line))
      .map((line) => line.split("|")[1]!);
    const reasons = table.flatMap((cell) => cell.match(/\b[A-Z][A-Z_]{3,}\b/g) ?? []);
    expect(reasons).toContain("BALANCE_ALERT_LIMIT");
    for (const reason of reasons) {
      const wire = new ConnectError("refused", Code.FailedPrecondition, undefined, [{ desc: ErrorDetailSchema, value: create(ErrorDetailSchema, { reason }) }]);
      const typed = HoldfastError.from(wire);
      expect(typed.reason).toBe(reason);
      expect(typed.constructor, reason).not.toBe(HoldfastError);
    }
  });

  it("refuses, before sending, an amount that is not an integer, naming the field", async () => {
    const { hf, sent } = client();
    for (const amount of [1.5, "12.5", "abc", 2n ** 63n]) {
      const error = await failure(() => hf.wallet(walletId()).deposit({ amount }));
      expect(error).toBeInstanceOf(InvalidFieldError);
      expect(error.field).toBe("amount");
    }
    expect(sent.get("Deposit")).toBeUndefined();
  });
});

describe("provider usage adapters", () => {
  // Usage objects as the providers' APIs answer them (values from real responses' shapes).
  const chatCompletions = {
    prompt_tokens: 2006,
    completion_tokens: 300,
    total_tokens: 2306,
    prompt_tokens_details: { cached_tokens: 1920, audio_tokens: 0 },
    completion_tokens_details: { reasoning_tokens: 192, audio_tokens: 0, accepted_prediction_tokens: 0, rejected_prediction_tokens: 0 },
  };
  const responses = {
    input_tokens: 5012,
    input_tokens_details: { cached_tokens: 4096 },
    output_tokens: 1240,
    output_tokens_details: { reasoning_tokens: 1024 },
    total_tokens: 6252,
  };
  const anthropic = {
    input_tokens: 24,
    cache_creation_input_tokens: 3000,
    cache_read_input_tokens: 18000,
    cache_creation: { ephemeral_5m_input_tokens: 1000, ephemeral_1h_input_tokens: 2000 },
    output_tokens: 512,
    service_tier: "standard",
    server_tool_use: null,
  };
  const counts = (u: ReturnType<typeof fromOpenAIUsage>) => ({
    input: u.inputTokens,
    cachedInput: u.cachedInputTokens,
    cacheWrite: u.cacheWriteTokens,
    cacheWrite1h: u.cacheWrite1hTokens,
    output: u.outputTokens,
    reasoning: u.reasoningTokens,
  });

  it("maps OpenAI Chat Completions: cached out of the prompt, reasoning out of the completion", () => {
    expect(counts(fromOpenAIUsage(chatCompletions))).toEqual({ input: 86n, cachedInput: 1920n, cacheWrite: 0n, cacheWrite1h: 0n, output: 108n, reasoning: 192n });
    expect(counts(fromOpenAIUsage({ prompt_tokens: 10, completion_tokens: 5, total_tokens: 15 } as typeof chatCompletions))).toEqual({
      input: 10n,
      cachedInput: 0n,
      cacheWrite: 0n,
      cacheWrite1h: 0n,
      output: 5n,
      reasoning: 0n,
    });
  });

  it("maps the OpenAI Responses API the same way", () => {
    expect(counts(fromOpenAIUsage(responses))).toEqual({ input: 916n, cachedInput: 4096n, cacheWrite: 0n, cacheWrite1h: 0n, output: 216n, reasoning: 1024n });
  });

  it("maps Anthropic: cache reads and writes as they are, the 1h breakdown when present", () => {
    expect(counts(fromAnthropicUsage(anthropic))).toEqual({ input: 24n, cachedInput: 18000n, cacheWrite: 1000n, cacheWrite1h: 2000n, output: 512n, reasoning: 0n });
    const { cache_creation: _, ...withoutBreakdown } = anthropic;
    expect(counts(fromAnthropicUsage(withoutBreakdown))).toMatchObject({ cacheWrite: 3000n, cacheWrite1h: 0n });
    expect(counts(fromAnthropicUsage({ input_tokens: 7, output_tokens: 3, cache_creation_input_tokens: null, cache_read_input_tokens: null }))).toEqual({
      input: 7n,
      cachedInput: 0n,
      cacheWrite: 0n,
      cacheWrite1h: 0n,
      output: 3n,
      reasoning: 0n,
    });
  });

  it("refuses a malformed usage object, naming the provider's field", () => {
    expect(() => fromOpenAIUsage({ ...chatCompletions, prompt_tokens_details: { cached_tokens: 3000 } })).toThrow(/cached_tokens \(3000\) exceeds prompt_tokens/);
    expect(() => fromAnthropicUsage({ ...anthropic, output_tokens: -1 })).toThrow(/output_tokens must be a non-negative integer/);
    expect(() => fromOpenAIUsage({ ...responses, input_tokens: 1.5 })).toThrow(/input_tokens/);
  });
});

describe("the ledger after the client's calls", () => {
  it("keeps every invariant", async () => {
    expect(await checkInvariants(s.app.pool)).toEqual([]);
  });
});
