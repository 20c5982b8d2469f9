// Goal: RateCardService behaves as proto/holdfast/v1/rate_cards.proto says: PutRateCard makes
// version 1 or the next, idempotently; GetRateCard answers a version or the one in effect now
// (effective_at may be in the future); ListRateCards pages; QuoteUsage prices exactly per class
// with fallbacks, tiers and markup; bad input is INVALID_ARGUMENT naming the field; missing
// cards are RATE_CARD_NOT_FOUND and missing prices MODEL_NOT_PRICED; admin writes, reader reads;
// tenants never see each other's cards; versions cannot be changed in the database.
// Method: a real ledger server on port 0 with a manual clock, called over Connect JSON and gRPC
// (and once with fetch, to see the JSON on the wire).
import { Code, ConnectError } from "@connectrpc/connect";
import { timestampDate, timestampFromDate, type Timestamp } from "@bufbuild/protobuf/wkt";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ErrorDetailSchema, type ErrorDetail } from "@holdfast/gen/holdfast/v1/errors_pb";
import { RateCardService, TokenClass, type ModelPriceSchema, type PutRateCardRequest } from "@holdfast/gen/holdfast/v1/rate_cards_pb";
import { createApiKey, createTenant } from "@holdfast/ledger/auth/api-keys";
import { key } from "./support/ledger.js";
import { startTestServer, type Protocol } from "./support/server.js";

let s: Awaited<ReturnType<typeof startTestServer>>;

beforeAll(async () => {
  s = await startTestServer();
});
afterAll(async () => {
  await s?.close();
});

async function failure(call: Promise<unknown>): Promise<{ code: Code; detail: ErrorDetail }> {
  const err = await call.then(
    () => {
      throw new Error("expected the call to fail");
    },
    (e: unknown) => ConnectError.from(e),
  );
  const [detail] = err.findDetails(ErrorDetailSchema);
  expect(detail, err.message).toBeDefined();
  return { code: err.code, detail: detail! };
}

const cards = (protocol: Protocol = "connect-json", apiKey: string | null = s.keys.admin) => s.client(RateCardService, protocol, apiKey);

// Real list prices in nano-cents per million tokens: $0.40 = 40 cents = 40e9.
const GPT_41_MINI = { model: "gpt-4.1-mini", inputNanoPerMtok: 40_000_000_000n, cachedInputNanoPerMtok: 10_000_000_000n, outputNanoPerMtok: 160_000_000_000n };
const CLAUDE_SONNET = {
  model: "claude-sonnet-4-5",
  inputNanoPerMtok: 300_000_000_000n,
  cachedInputNanoPerMtok: 30_000_000_000n,
  cacheWriteNanoPerMtok: 375_000_000_000n,
  cacheWrite1hNanoPerMtok: 600_000_000_000n,
  outputNanoPerMtok: 1_500_000_000_000n,
  tiers: [
    {
      aboveInputTokens: 200_000n,
      inputNanoPerMtok: 600_000_000_000n,
      cachedInputNanoPerMtok: 60_000_000_000n,
      cacheWriteNanoPerMtok: 750_000_000_000n,
      cacheWrite1hNanoPerMtok: 1_200_000_000_000n,
      outputNanoPerMtok: 2_250_000_000_000n,
    },
  ],
};

type PutRequest = Partial<Omit<PutRateCardRequest, "$typeName" | "$unknown" | "models" | "effectiveAt">> & {
  models?: MessageInitShape<typeof ModelPriceSchema>[];
  effectiveAt?: Timestamp;
};
const putRequest = (rateCardId: string, extra: Partial<PutRequest> = {}): PutRequest => ({
  rateCardId,
  asset: "USD",
  models: [GPT_41_MINI, CLAUDE_SONNET],
  markupBps: 2000,
  idempotencyKey: key(),
  ...extra,
});

describe.each(["connect-json", "grpc"] as const)("RateCardService over %s", (protocol) => {
  const id = `card-${protocol}`;

  it("PutRateCard creates version 1 with the models as sent", async () => {
    const { rateCard, replayed } = await cards(protocol).putRateCard(putRequest(id));
    expect(replayed).toBe(false);
    expect(rateCard).toMatchObject({ rateCardId: id, version: 1, latestVersion: 1, asset: "USD", tokenAsset: "TOKENS", markupBps: 2000, modelCount: 2 });
    expect(timestampDate(rateCard!.effectiveAt!)).toEqual(new Date("2026-01-01T00:00:00Z"));
    expect(rateCard!.models[0]).toMatchObject({ ...GPT_41_MINI, tiers: [] });
    expect(rateCard!.models[0]!.reasoningNanoPerMtok).toBeUndefined();
    expect(rateCard!.models[1]).toMatchObject(CLAUDE_SONNET);
  });

  it("GetRateCard answers the version in effect, ListRateCards lists it without models", async () => {
    const { rateCard } = await cards(protocol, s.keys.reader).getRateCard({ rateCardId: id });
    expect(rateCard).toMatchObject({ rateCardId: id, version: 1, modelCount: 2 });
    expect(rateCard!.models.map((m) => m.model)).toEqual(["gpt-4.1-mini", "claude-sonnet-4-5"]);
    const listed = await cards(protocol, s.keys.reader).listRateCards({ pageSize: 500 });
    const found = listed.rateCards.find((c) => c.rateCardId === id);
    expect(found).toMatchObject({ version: 1, latestVersion: 1, modelCount: 2, models: [] });
  });

  it("QuoteUsage prices each class exactly, with fallback and markup", async () => {
    const { quote } = await cards(protocol, s.keys.reader).quoteUsage({
      rateCardId: id,
      model: "gpt-4.1-mini",
      usage: { inputTokens: 1000n, cachedInputTokens: 200n, outputTokens: 500n, reasoningTokens: 100n },
    });
    // Σ tokens × price = 1000·40e9 + 200·10e9 + 500·160e9 + 100·160e9 (reasoning falls back to
    // output) = 1.38e14; / 1e6 = 138,000,000 nano; × 1.2 = 165,600,000 nano = 0.1656 cent.
    expect(quote).toMatchObject({ rateCardId: id, rateCardVersion: 1, model: "gpt-4.1-mini", asset: "USD", tokenAsset: "TOKENS", markupBps: 2000 });
    expect(quote!.tierAboveInputTokens).toBeUndefined();
    expect(quote!.lines.map((l) => [l.tokenClass, l.tokens, l.priceNanoPerMtok, l.costNano])).toEqual([
      [TokenClass.INPUT, 1000n, 40_000_000_000n, 48_000_000n],
      [TokenClass.CACHED_INPUT, 200n, 10_000_000_000n, 2_400_000n],
      [TokenClass.OUTPUT, 500n, 160_000_000_000n, 96_000_000n],
      [TokenClass.REASONING, 100n, 160_000_000_000n, 19_200_000n],
    ]);
    expect(quote).toMatchObject({ baseCostNano: 138_000_000n, costNano: 165_600_000n, chargeAmount: 0n, holdAmount: 1n });
  });

  it("QuoteUsage uses the tier above 200k prompt tokens, counting cached tokens", async () => {
    const { quote } = await cards(protocol).quoteUsage({
      rateCardId: id,
      model: "claude-sonnet-4-5",
      usage: { inputTokens: 150_000n, cachedInputTokens: 60_000n, outputTokens: 1000n },
    });
    // 150000·600e9 + 60000·60e9 + 1000·2250e9 = 9.585e16; / 1e6 × 1.2 = 115,020,000,000 nano.
    expect(quote!.tierAboveInputTokens).toBe(200_000n);
    expect(quote).toMatchObject({ costNano: 115_020_000_000n, chargeAmount: 115n, holdAmount: 116n });
  });
});

describe("versions", () => {
  it("a future version takes effect at its effective_at; earlier versions stay as they were", async () => {
    const now = s.clock();
    const later = new Date(now.getTime() + 3600_000);
    await cards().putRateCard(putRequest("versions"));
    const v2 = await cards().putRateCard(putRequest("versions", { markupBps: 0, effectiveAt: timestampFromDate(later) }));
    expect(v2.rateCard).toMatchObject({ version: 2, latestVersion: 2 });
    const usage = { inputTokens: 1_000_000n };
    expect((await cards().getRateCard({ rateCardId: "versions" })).rateCard).toMatchObject({ version: 1, latestVersion: 2 });
    expect((await cards().quoteUsage({ rateCardId: "versions", model: "gpt-4.1-mini", usage })).quote).toMatchObject({ rateCardVersion: 1, costNano: 48_000_000_000n });
    s.clock.set(later);
    try {
      expect((await cards().getRateCard({ rateCardId: "versions" })).rateCard).toMatchObject({ version: 2, markupBps: 0 });
      expect((await cards().quoteUsage({ rateCardId: "versions", model: "gpt-4.1-mini", usage })).quote).toMatchObject({ rateCardVersion: 2, costNano: 40_000_000_000n });
      // An explicit version still prices as it did.
      const pinned = await cards().quoteUsage({ rateCardId: "versions", version: 1, model: "gpt-4.1-mini", usage });
      expect(pinned.quote).toMatchObject({ rateCardVersion: 1, costNano: 48_000_000_000n });
      // A new version may not take effect before the one it follows.
      const { code, detail } = await failure(cards().putRateCard(putRequest("versions", { effectiveAt: timestampFromDate(now) })));
      expect(code).toBe(Code.InvalidArgument);
      expect(detail).toMatchObject({ reason: "INVALID_FIELD", field: "effective_at" });
    } finally {
      s.clock.set(now);
    }
  });

  it("a card whose only version is in the future has none in effect yet", async () => {
    const tomorrow = new Date(s.clock().getTime() + 86_400_000);
    await cards().putRateCard(putRequest("future-only", { effectiveAt: timestampFromDate(tomorrow) }));
    const { code, detail } = await failure(cards().getRateCard({ rateCardId: "future-only" }));
    expect(code).toBe(Code.NotFound);
    expect(detail.reason).toBe("RATE_CARD_NOT_FOUND");
    expect(detail.message).toContain("no version in effect yet");
    expect((await cards().getRateCard({ rateCardId: "future-only", version: 1 })).rateCard?.version).toBe(1);
  });

  it("version rows cannot be updated or deleted, even by SQL", async () => {
    await expect(s.app.pool.query("update rate_card_versions set markup_bps = 0")).rejects.toThrow(/immutable/);
    await expect(s.app.pool.query("delete from rate_card_models")).rejects.toThrow(/immutable/);
  });
});

describe("idempotency", () => {
  it("a replay answers the same version; the key with another request is refused", async () => {
    const request = putRequest("idem");
    const first = await cards().putRateCard(request);
    s.clock.advance(60_000);
    // The replay comes later, but its effective_at was the default: still the same request.
    const again = await cards("grpc").putRateCard(request);
    expect(again.replayed).toBe(true);
    expect(again.rateCard).toEqual(first.rateCard);
    const other = await failure(cards().putRateCard({ ...request, markupBps: 1 }));
    expect(other.code).toBe(Code.AlreadyExists);
    expect(other.detail.reason).toBe("IDEMPOTENCY_KEY_REUSED");
    const otherCard = await failure(cards().putRateCard({ ...request, rateCardId: "idem-other" }));
    expect(otherCard.detail.reason).toBe("IDEMPOTENCY_KEY_REUSED");
    expect((await cards().getRateCard({ rateCardId: "idem" })).rateCard?.latestVersion).toBe(1);
    await expect(cards().getRateCard({ rateCardId: "idem-other" })).rejects.toThrow(/not found/);
  });

  it("concurrent puts: one key makes one version, distinct keys make consecutive versions", async () => {
    const request = putRequest("race");
    const same = await Promise.all(Array.from({ length: 8 }, () => cards().putRateCard(request)));
    expect(new Set(same.map((r) => r.rateCard?.version))).toEqual(new Set([1]));
    expect(same.filter((r) => !r.replayed)).toHaveLength(1);
    const distinct = await Promise.all(Array.from({ length: 8 }, () => cards().putRateCard(putRequest("race"))));
    expect(distinct.map((r) => r.rateCard!.version).sort((a, b) => a - b)).toEqual([2, 3, 4, 5, 6, 7, 8, 9]);
  });
});

describe("bad input names the field", () => {
  const model = (extra: object) => ({ ...GPT_41_MINI, ...extra });
  it.each<[string, Partial<PutRequest>, string]>([
    ["rate_card_id empty", { rateCardId: "" }, "rate_card_id"],
    ["rate_card_id pattern", { rateCardId: "a b" }, "rate_card_id"],
    ["asset", { asset: "usd" }, "asset"],
    ["token_asset pattern", { tokenAsset: "tokens" }, "token_asset"],
    ["token_asset equal to asset", { tokenAsset: "USD" }, "token_asset"],
    ["markup_bps", { markupBps: 1_000_001 }, "markup_bps"],
    ["no models", { models: [] }, "models"],
    ["model name", { models: [model({ model: "-bad" })] }, "models[0].model"],
    ["duplicate model", { models: [GPT_41_MINI, GPT_41_MINI] }, "models[1].model"],
    ["negative price", { models: [GPT_41_MINI, model({ model: "m2", outputNanoPerMtok: -1n })] }, "models[1].output_nano_per_mtok"],
    ["tier threshold 0", { models: [model({ tiers: [{ aboveInputTokens: 0n }] })] }, "models[0].tiers[0].above_input_tokens"],
    ["tiers out of order", { models: [model({ tiers: [{ aboveInputTokens: 10n }, { aboveInputTokens: 10n }] })] }, "models[0].tiers[1].above_input_tokens"],
    ["negative tier price", { models: [model({ tiers: [{ aboveInputTokens: 10n, cacheWrite1hNanoPerMtok: -5n }] })] }, "models[0].tiers[0].cache_write_1h_nano_per_mtok"],
    ["idempotency_key", { idempotencyKey: "" }, "idempotency_key"],
    ["effective_at", { effectiveAt: timestampFromDate(new Date("1969-12-31T23:59:59Z")) }, "effective_at"],
  ])("PutRateCard: %s", async (_name, extra, field) => {
    const { code, detail } = await failure(cards().putRateCard(putRequest("bad", extra)));
    expect(code).toBe(Code.InvalidArgument);
    expect(detail).toMatchObject({ reason: "INVALID_FIELD", field });
    expect(detail.message.startsWith(`${field}: `)).toBe(true);
  });

  it("too many models or tiers", async () => {
    const many = Array.from({ length: 1001 }, (_, i) => ({ model: `m${i}`, inputNanoPerMtok: 1n }));
    expect((await failure(cards().putRateCard(putRequest("bad", { models: many })))).detail.field).toBe("models");
    const tiers = Array.from({ length: 9 }, (_, i) => ({ aboveInputTokens: BigInt(i + 1) }));
    expect((await failure(cards().putRateCard(putRequest("bad", { models: [model({ tiers })] })))).detail.field).toBe("models[0].tiers");
  });

  it("QuoteUsage, GetRateCard and ListRateCards check their fields", async () => {
    await cards().putRateCard(putRequest("quote-checks", { models: [{ model: "input-only", inputNanoPerMtok: 1n }, { model: "dear", outputNanoPerMtok: 9_223_372_036_854_775_807n }] }));
    // Thunks, so that no call runs (and fails) before its turn.
    const cases: [() => Promise<unknown>, string][] = [
      [() => cards().quoteUsage({ rateCardId: "", model: "input-only" }), "rate_card_id"],
      [() => cards().quoteUsage({ rateCardId: "quote-checks", model: "" }), "model"],
      [() => cards().quoteUsage({ rateCardId: "quote-checks", model: "input-only", usage: { outputTokens: -1n } }), "usage.output_tokens"],
      [() => cards().quoteUsage({ rateCardId: "quote-checks", model: "dear", usage: { outputTokens: 2_000_000n, inputTokens: 0n } }), "usage.output_tokens"],
      [() => cards().getRateCard({ rateCardId: "no such id!" }), "rate_card_id"],
      [() => cards().listRateCards({ pageToken: "forged" }), "page_token"],
      [() => cards().listRateCards({ pageSize: 501 }), "page_size"],
    ];
    for (const [call, field] of cases) {
      const { code, detail } = await failure(call());
      expect(code, field).toBe(Code.InvalidArgument);
      expect(detail).toMatchObject({ reason: "INVALID_FIELD", field });
    }
  });

  it("RATE_CARD_NOT_FOUND and MODEL_NOT_PRICED", async () => {
    const missing = await failure(cards().quoteUsage({ rateCardId: "nope", model: "gpt-4.1-mini" }));
    expect(missing.code).toBe(Code.NotFound);
    expect(missing.detail.reason).toBe("RATE_CARD_NOT_FOUND");
    const noVersion = await failure(cards().getRateCard({ rateCardId: "quote-checks", version: 99 }));
    expect(noVersion.code).toBe(Code.NotFound);
    expect(noVersion.detail.message).toContain("no version 99");
    const noModel = await failure(cards().quoteUsage({ rateCardId: "quote-checks", model: "gpt-5" }));
    expect(noModel.code).toBe(Code.FailedPrecondition);
    expect(noModel.detail).toMatchObject({ reason: "MODEL_NOT_PRICED", metadata: { model: "gpt-5" } });
    const noClass = await failure(cards().quoteUsage({ rateCardId: "quote-checks", model: "input-only", usage: { inputTokens: 5n, reasoningTokens: 1n } }));
    expect(noClass.code).toBe(Code.FailedPrecondition);
    expect(noClass.detail).toMatchObject({ reason: "MODEL_NOT_PRICED", metadata: { model: "input-only", token_class: "reasoning" } });
    // Cached tokens fall back to the input price, so this one is priced.
    const fallback = await cards().quoteUsage({ rateCardId: "quote-checks", model: "input-only", usage: { cachedInputTokens: 5n } });
    expect(fallback.quote?.lines[0]).toMatchObject({ tokenClass: TokenClass.CACHED_INPUT, priceNanoPerMtok: 1n });
  });
});

describe("roles and tenants", () => {
  it("admin writes; reader and writer keys read but cannot write", async () => {
    await cards().putRateCard(putRequest("roles"));
    for (const apiKey of [s.keys.reader, s.keys.writer]) {
      const { code, detail } = await failure(cards("grpc", apiKey).putRateCard(putRequest("roles")));
      expect(code).toBe(Code.PermissionDenied);
      expect(detail.reason).toBe("PERMISSION_DENIED");
      await cards("grpc", apiKey).getRateCard({ rateCardId: "roles" });
      await cards("grpc", apiKey).listRateCards({});
      await cards("grpc", apiKey).quoteUsage({ rateCardId: "roles", model: "gpt-4.1-mini", usage: { inputTokens: 1n } });
    }
    const scoped = await s.issue("reader", "user_1");
    await cards("connect-json", scoped).quoteUsage({ rateCardId: "roles", model: "gpt-4.1-mini" });
    expect((await failure(cards("connect-json", null).getRateCard({ rateCardId: "roles" }))).code).toBe(Code.Unauthenticated);
  });

  it("tenants are isolated: same ids, separate cards, nothing visible across", async () => {
    await cards().putRateCard(putRequest("shared-id", { markupBps: 0 }));
    const { tenantId } = await createTenant(s.app.pool, "rate-card-other-tenant");
    const otherAdmin = (await createApiKey(s.app.pool, { tenantId, name: "admin", role: "admin" })).secret;
    const other = cards("grpc", otherAdmin);
    expect((await failure(other.getRateCard({ rateCardId: "shared-id" }))).detail.reason).toBe("RATE_CARD_NOT_FOUND");
    expect((await failure(other.quoteUsage({ rateCardId: "shared-id", model: "gpt-4.1-mini" }))).detail.reason).toBe("RATE_CARD_NOT_FOUND");
    expect((await other.listRateCards({})).rateCards).toEqual([]);
    const mine = await other.putRateCard(putRequest("shared-id", { markupBps: 500, models: [GPT_41_MINI] }));
    expect(mine.rateCard).toMatchObject({ version: 1, markupBps: 500, modelCount: 1 });
    expect((await cards().getRateCard({ rateCardId: "shared-id" })).rateCard).toMatchObject({ version: 1, markupBps: 0, modelCount: 2 });
    // An idempotency key of one tenant means nothing in another.
    const request = putRequest("key-scope");
    await cards().putRateCard(request);
    expect((await other.putRateCard(request)).replayed).toBe(false);
  });

  it("ListRateCards pages by id", async () => {
    const { tenantId } = await createTenant(s.app.pool, "rate-card-paging");
    const admin = cards("connect-json", (await createApiKey(s.app.pool, { tenantId, name: "admin", role: "admin" })).secret);
    const ids = ["p-e", "p-a", "p-c", "p-b", "p-d"];
    for (const rateCardId of ids) await admin.putRateCard(putRequest(rateCardId));
    const seen: string[] = [];
    let pageToken = "";
    let pages = 0;
    do {
      const page = await admin.listRateCards({ pageSize: 2, pageToken });
      seen.push(...page.rateCards.map((c) => c.rateCardId));
      pageToken = page.nextPageToken;
      pages += 1;
    } while (pageToken !== "");
    expect(seen).toEqual([...ids].sort());
    expect(pages).toBe(3);
  });
});

describe("on the wire", () => {
  it("Connect JSON carries int64 as strings and classes by enum name", async () => {
    await cards().putRateCard(putRequest("wire"));
    const res = await fetch(`${s.app.url}/holdfast.v1.RateCardService/QuoteUsage`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${s.keys.reader}` },
      body: JSON.stringify({ rateCardId: "wire", model: "gpt-4.1-mini", usage: { inputTokens: "1000", outputTokens: "500" } }),
    });
    expect(res.status).toBe(200);
    const body = (await res.json()) as { quote: Record<string, unknown> };
    expect(body.quote).toMatchObject({
      rateCardId: "wire",
      rateCardVersion: 1,
      costNano: "144000000",
      holdAmount: "1",
      lines: [
        { tokenClass: "TOKEN_CLASS_INPUT", tokens: "1000", priceNanoPerMtok: "40000000000", costNano: "48000000" },
        { tokenClass: "TOKEN_CLASS_OUTPUT", tokens: "500", priceNanoPerMtok: "160000000000", costNano: "96000000" },
      ],
    });
  });
});
