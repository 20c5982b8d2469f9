// Goal: `holdfast ratecards import` builds rate cards from @pydantic/genai-prices with every
// price exact: a known model's prices come out as the exact nano units of the published
// decimals; a value that is not exact fails the whole import; dated prices, per-class tiers and
// the package's exact model names are carried over; `holdfast ratecards show` prints the card.
// Method: the import functions on the package's own data and on made-up providers, then the
// CLI end to end (main() with argv) against a test database, and a quote on the imported card.
import { fromJsonString } from "@bufbuild/protobuf";
import { findProvider, type Provider } from "@pydantic/genai-prices";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { main } from "@holdfast/cli/main";
import { buildImportRequest, modelsFromProvider, type ImportOptions } from "@holdfast/cli/ratecards";
import { createManualClock } from "@holdfast/common/ids";
import { PutRateCardRequestSchema, RateCardSchema } from "@holdfast/gen/holdfast/v1/rate_cards_pb";
import { createTenant } from "@holdfast/ledger/auth/api-keys";
import { createRateCards } from "@holdfast/ledger/domain/rate-cards";
import { formatScaled } from "@holdfast/metering/decimal";
import { TOKEN_CLASSES } from "@holdfast/metering/pricing";
import { createTestDatabase, type TestDatabase } from "./support/db.js";

const options = (extra: Partial<ImportOptions> = {}): ImportOptions => ({
  provider: "openai",
  id: "openai-default",
  markupBps: 2000,
  asset: "USD",
  tokenAsset: "TOKENS",
  minorUnitDigits: 2,
  aliases: true,
  ...extra,
});

/** The package's keys for the classes it prices, to read its numbers back. */
const PACKAGE_KEYS = { input: "input_mtok", cached_input: "cache_read_mtok", cache_write: "cache_write_mtok", cache_write_1h: "cache_write_1h_mtok", output: "output_mtok" } as const;

describe("prices from @pydantic/genai-prices", () => {
  it("a known model's prices come out exact: gpt-4.1-mini at $0.40 / $0.10 / $1.60 per million tokens", () => {
    const { request } = buildImportRequest(options());
    const mini = request.models.find((m) => m.model === "gpt-4.1-mini");
    expect(mini).toMatchObject({ inputNanoPerMtok: 40_000_000_000n, cachedInputNanoPerMtok: 10_000_000_000n, outputNanoPerMtok: 160_000_000_000n, tiers: [] });
    expect(mini?.reasoningNanoPerMtok).toBeUndefined();
    // The dated snapshot name OpenAI answers with is priced too, with the same prices.
    expect(request.models.find((m) => m.model === "gpt-4.1-mini-2025-04-14")).toMatchObject({ inputNanoPerMtok: 40_000_000_000n });
    expect(request).toMatchObject({ rateCardId: "openai-default", asset: "USD", markupBps: 2000 });
  });

  it("a tiered model keeps its tier: claude-sonnet-4-5 above 200k prompt tokens", () => {
    const { request } = buildImportRequest(options({ provider: "anthropic", id: "anthropic-default" }));
    const sonnet = request.models.find((m) => m.model === "claude-sonnet-4-5");
    expect(sonnet).toMatchObject({
      inputNanoPerMtok: 300_000_000_000n,
      cachedInputNanoPerMtok: 30_000_000_000n,
      cacheWriteNanoPerMtok: 375_000_000_000n,
      cacheWrite1hNanoPerMtok: 600_000_000_000n,
      outputNanoPerMtok: 1_500_000_000_000n,
    });
    expect(sonnet?.tiers).toHaveLength(1);
    expect(sonnet?.tiers[0]).toMatchObject({ aboveInputTokens: 200_000n, inputNanoPerMtok: 600_000_000_000n, outputNanoPerMtok: 2_250_000_000_000n });
  });

  it("every imported price reads back as exactly the number the package publishes", () => {
    for (const providerId of ["openai", "anthropic", "google"]) {
      const provider = findProvider({ providerId })!;
      const at = new Date();
      const { models } = modelsFromProvider(provider, { at, minorUnitDigits: 2, aliases: false });
      expect(models.length, providerId).toBeGreaterThan(5);
      for (const entry of models) {
        const info = provider.models.find((m) => m.id === entry.model)!;
        const published = Array.isArray(info.prices) ? null : info.prices;
        if (published === null) continue;
        for (const tokenClass of TOKEN_CLASSES) {
          const ours = entry.prices[tokenClass];
          const theirs = published[PACKAGE_KEYS[tokenClass as keyof typeof PACKAGE_KEYS]];
          if (ours === undefined) {
            expect(theirs, `${entry.model} ${tokenClass}`).toBeUndefined();
            continue;
          }
          const base = typeof theirs === "object" ? theirs.base : theirs;
          // Nano-cents per million tokens, printed as dollars: 11 decimal places.
          expect(Number(formatScaled(ours, 11)), `${entry.model} ${tokenClass}`).toBe(base);
        }
      }
    }
  });
});

describe("made-up provider data", () => {
  const provider = (models: Provider["models"]): Provider => ({ id: "fake", name: "Fake", api_pattern: "fake", models });

  it("an inexact value fails the import, naming the model and the key", () => {
    const good = { id: "good", match: { equals: "good" }, prices: { input_mtok: 1.25, output_mtok: 10 } };
    for (const bad of [0.1 + 0.2, 0.123456789012, 1e-12]) {
      const fake = provider([good, { id: "bad", match: { equals: "bad" }, prices: { input_mtok: 1, output_mtok: bad } }]);
      expect(() => buildImportRequest(options({ provider: "fake" }), fake)).toThrow(/fake model bad, output_mtok: .* is not exact at 11 decimal places; nothing was imported/);
    }
    const huge = provider([{ id: "huge", match: { equals: "huge" }, prices: { input_mtok: 1e9 } }]);
    expect(() => buildImportRequest(options({ provider: "fake" }), huge)).toThrow(/huge, input_mtok: .*int64/);
    expect(() => buildImportRequest(options({ provider: "no-such-provider" }))).toThrow(/has no provider "no-such-provider"/);
  });

  it("takes the dated prices in effect, merges per-class tiers, and skips models without token prices", () => {
    const fake = provider([
      {
        id: "dated",
        match: { or: [{ equals: "dated" }, { equals: "dated-2025" }, { starts_with: "dated-ft-" }] },
        prices: [
          { prices: { input_mtok: 10, output_mtok: 40 } },
          { constraint: { type: "start_date", start_date: "2025-06-10" }, prices: { input_mtok: 2, output_mtok: 8 } },
          { constraint: { type: "time_of_date", start_time: "16:30:00Z", end_time: "00:30:00Z" }, prices: { input_mtok: 1, output_mtok: 4 } },
        ],
      },
      {
        id: "tiered",
        match: { equals: "tiered" },
        prices: {
          input_mtok: { base: 1, tiers: [{ start: 128_000, price: 2 }] },
          output_mtok: { base: 4, tiers: [{ start: 200_000, price: 8 }] },
          cache_read_mtok: 0.25,
          web_searches_kcount: 10,
        },
      },
      { id: "image-only", match: { equals: "image-only" }, prices: { input_image_mtok: 5 } },
    ]);
    const before = modelsFromProvider(fake, { at: new Date("2025-01-01T00:00:00Z"), minorUnitDigits: 2, aliases: true });
    expect(before.models.map((m) => [m.model, m.prices.input])).toEqual([
      ["dated", 1_000_000_000_000n],
      ["dated-2025", 1_000_000_000_000n],
      ["tiered", 100_000_000_000n],
    ]);
    expect(before.skipped).toEqual(["image-only: no token prices"]);
    const after = modelsFromProvider(fake, { at: new Date("2026-01-01T18:00:00Z"), minorUnitDigits: 2, aliases: false });
    expect(after.models[0]).toEqual({ model: "dated", prices: { input: 200_000_000_000n, output: 800_000_000_000n }, tiers: [] });
    expect(after.models[1]!.tiers).toEqual([
      { aboveInputTokens: 128_000n, prices: { input: 200_000_000_000n, output: 400_000_000_000n, cached_input: 25_000_000_000n } },
      { aboveInputTokens: 200_000n, prices: { input: 200_000_000_000n, output: 800_000_000_000n, cached_input: 25_000_000_000n } },
    ]);
  });
});

describe("holdfast ratecards", () => {
  let db: TestDatabase;
  let tenantId: string;
  beforeAll(async () => {
    db = await createTestDatabase();
    tenantId = (await createTenant(db.pool, "ratecards-cli")).tenantId;
  });
  afterAll(async () => {
    await db?.drop();
  });

  async function cli(...args: string[]) {
    const out: string[] = [];
    const err: string[] = [];
    const code = await main(["node", "holdfast", "--database-url", db.url, ...args], { out: (l) => void out.push(l), err: (l) => void err.push(l) });
    return { code, out, err };
  }

  it("without --tenant prints the PutRateCard request as JSON and writes nothing", async () => {
    const { code, out } = await cli("ratecards", "import", "--provider", "openai", "--markup-bps", "2000", "--id", "openai-default");
    expect(code).toBe(0);
    const request = fromJsonString(PutRateCardRequestSchema, out.join("\n"));
    expect(request).toMatchObject({ rateCardId: "openai-default", asset: "USD", markupBps: 2000 });
    expect(request.idempotencyKey).toMatch(/^ratecards-import:/);
    expect(request.models.find((m) => m.model === "gpt-4.1-mini")?.inputNanoPerMtok).toBe(40_000_000_000n);
    const { rows } = await db.pool.query("select 1 from rate_cards");
    expect(rows).toHaveLength(0);
  });

  it("with --tenant writes the card; show prints it; the card prices usage exactly", async () => {
    const imported = await cli("ratecards", "import", "--provider", "openai", "--markup-bps", "2000", "--id", "openai-default", "--tenant", tenantId);
    expect(imported.code, imported.err.join("\n")).toBe(0);
    expect(imported.out[0]).toMatch(/^Imported rate card openai-default version 1: \d+ models from openai, effective /);
    const again = await cli("ratecards", "import", "--provider", "openai", "--id", "openai-default", "--tenant", tenantId, "--idempotency-key", "k1");
    expect(again.out[0]).toMatch(/^Imported rate card openai-default version 2: /);
    const replay = await cli("ratecards", "import", "--provider", "openai", "--id", "openai-default", "--tenant", tenantId, "--idempotency-key", "k1");
    expect(replay.out[0]).toMatch(/^Already imported rate card openai-default version 2: /);

    const shown = await cli("ratecards", "show", "openai-default", "--tenant", tenantId, "--version", "1");
    expect(shown.code).toBe(0);
    expect(shown.out[0]).toMatch(/^Rate card openai-default version 1 of 2, effective /);
    expect(shown.out).toContain("  gpt-4.1-mini  input 40  cached_input 10  output 160");
    const json = await cli("ratecards", "show", "openai-default", "--tenant", tenantId, "--json");
    expect(fromJsonString(RateCardSchema, json.out.join("\n"))).toMatchObject({ version: 2, markupBps: 0 });

    const store = createRateCards({ pool: db.pool, clock: createManualClock(new Date()) });
    const quote = await store.quote(tenantId, {
      rateCardId: "openai-default",
      version: 1,
      model: "gpt-4.1-mini-2025-04-14",
      usage: { input: 1000n, cached_input: 0n, cache_write: 0n, cache_write_1h: 0n, output: 500n, reasoning: 0n },
    });
    // (1000 × 40e9 + 500 × 160e9) / 1e6 × 1.2 = 144,000,000 nano-cents.
    expect(quote).toMatchObject({ version: 1, costNano: 144_000_000n, chargeAmount: 0n, holdAmount: 1n });
  });

  it("reports bad flags, unknown providers and cards as one line", async () => {
    const cases: [string[], RegExp][] = [
      [["ratecards", "import", "--provider", "openai", "--id", "x", "--markup-bps", "abc"], /--markup-bps must be an integer from 0 to 1000000/],
      [["ratecards", "import", "--provider", "nobody", "--id", "x"], /has no provider "nobody"/],
      [["ratecards", "import", "--provider", "openai", "--id", "bad id"], /rate_card_id: must be/],
      [["ratecards", "import", "--provider", "openai", "--id", "x", "--effective-at", "soon"], /--effective-at must be an ISO 8601 time/],
      [["ratecards", "show", "nope", "--tenant", tenantId], /rate card nope not found/],
    ];
    for (const [args, message] of cases) {
      const { code, err } = await cli(...args);
      expect(code, args.join(" ")).toBe(1);
      expect(err.join("\n")).toMatch(message);
    }
  });
});
