// Goal: the web console (console/, docs/console.md) works in a real browser against a real
// ledger: a bad key is refused with an error that says what to do; a writer key sees a wallet's
// balances change live (WatchWallet) without a reload when money moves outside the page, sees
// the hold it has to capture with its countdown, captures it, releases another, refunds a
// capture, and sees the balance chart; a reader key sees the same wallet without any write
// action and without the admin pages; an admin key creates a key (secret shown once) and revokes
// it, sees webhook deliveries with their last error and retries one, and reads the rate cards.
// Every page is saved as a screenshot at 1280 and 390 px wide under test-artifacts/console/.
// Method: the console is built by Vite from its sources into a temporary folder and served by a
// ledger started here (port 0, fresh database, the system clock, so that countdowns are real);
// Debian's chromium (/usr/bin/chromium, or HOLDFAST_TEST_CHROMIUM) is driven by playwright-core
// with its executablePath and a fresh user-data-dir: nothing downloads a browser. Money moves
// from this process through @holdfast/client, as another service of the tenant would. Waits
// poll what the page shows; nothing asserts how long anything took.
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { chromium, type BrowserContext, type Page } from "playwright-core";
import { build } from "vite";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { Holdfast, HoldStatus } from "@holdfast/client";
import { DeliveryStatus } from "@holdfast/client/proto";
import { createApiKey, createTenant } from "@holdfast/ledger/auth/api-keys";
import { startLedgerApp, type LedgerApp } from "@holdfast/ledger/app";
import { loadLedgerConfig } from "@holdfast/ledger/config";
import { checkInvariants } from "@holdfast/ledger/invariants";
import { createTestDatabase, type TestDatabase } from "./support/db.js";
import { quietLogger } from "./support/ledger.js";

const CHROMIUM = process.env["HOLDFAST_TEST_CHROMIUM"] ?? "/usr/bin/chromium";
const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];
const ARTIFACTS = path.resolve("test-artifacts/console");
const WIDTHS = [1280, 390] as const;
const VIEWPORT_HEIGHT_PX = 900;
/** How long a wait for the page may poll before the test fails (a bound, not a measurement). */
const WAIT_MS = 15_000;
const CONSOLE_ROOT = path.resolve("console");

let folder: string;
let db: TestDatabase;
let app: LedgerApp;
let context: BrowserContext;
let keys: { admin: string; writer: string; reader: string };
let admin: Holdfast;
let writer: Holdfast;

beforeAll(async () => {
  if (!existsSync(CHROMIUM)) {
    throw new Error(`no chromium at ${CHROMIUM}: install it (apt-get install -y chromium) or set HOLDFAST_TEST_CHROMIUM`);
  }
  folder = await mkdtemp(path.join(tmpdir(), "holdfast-console-"));
  const consoleDirectory = path.join(folder, "console");
  await build({ root: CONSOLE_ROOT, configFile: path.join(CONSOLE_ROOT, "vite.config.ts"), logLevel: "warn", build: { outDir: consoleDirectory, emptyOutDir: true } });
  db = await createTestDatabase();
  const config = loadLedgerConfig({
    DATABASE_URL: db.url,
    HOLDFAST_PORT: "0",
    HOLDFAST_HOST: "127.0.0.1",
    HOLDFAST_AUTH_CACHE_MS: "0",
    HOLDFAST_WEBHOOK_ALLOWED_NETWORKS: "127.0.0.0/8,::1/128",
  });
  app = await startLedgerApp({ config, logger: quietLogger, migrate: false, relay: false, consoleDirectory });
  const { tenantId } = await createTenant(app.pool, "console-tenant");
  const issue = async (role: "admin" | "writer" | "reader") => (await createApiKey(app.pool, { tenantId, name: `${role} key`, role })).secret;
  keys = { admin: await issue("admin"), writer: await issue("writer"), reader: await issue("reader") };
  admin = new Holdfast({ baseUrl: app.url, apiKey: keys.admin, asset: "USD" });
  writer = new Holdfast({ baseUrl: app.url, apiKey: keys.writer, asset: "USD" });
  await mkdir(ARTIFACTS, { recursive: true });
  context = await chromium.launchPersistentContext(path.join(folder, "profile"), {
    executablePath: CHROMIUM,
    headless: true,
    args: CHROMIUM_ARGS,
    viewport: { width: WIDTHS[0], height: VIEWPORT_HEIGHT_PX },
  });
});

afterAll(async () => {
  await context?.close();
  admin?.close();
  writer?.close();
  if (app !== undefined) expect(await checkInvariants(app.pool)).toEqual([]);
  await app?.stop();
  await db?.drop();
  if (folder !== undefined) await rm(folder, { recursive: true, force: true });
});

/** Uncaught errors of the console's script; each test ends with none. */
const pageErrors: string[] = [];
afterEach(() => {
  expect(pageErrors).toEqual([]);
});

/** A new tab: its own sessionStorage, so its own sign-in. */
async function newPage(): Promise<Page> {
  const page = await context.newPage();
  page.on("pageerror", (error) => pageErrors.push(error.message));
  return page;
}

async function signIn(page: Page, apiKey: string): Promise<void> {
  await page.goto(`${app.url}/console/`);
  await page.locator("#api-key").fill(apiKey);
  await page.getByRole("button", { name: "Sign in" }).click();
}

/** The page at each width, whole, as test-artifacts/console/<name>-<width>.png. */
async function screenshots(page: Page, name: string): Promise<void> {
  for (const width of WIDTHS) {
    await page.setViewportSize({ width, height: VIEWPORT_HEIGHT_PX });
    // Two frames: the layout and the chart's resize observer settle at the new width.
    await page.evaluate(() => new Promise((resolve) => requestAnimationFrame(() => requestAnimationFrame(resolve))));
    await page.screenshot({ path: path.join(ARTIFACTS, `${name}-${width}.png`), fullPage: true });
  }
  await page.setViewportSize({ width: WIDTHS[0], height: VIEWPORT_HEIGHT_PX });
}

function text(page: Page, selector: string): () => Promise<string | null> {
  return () => page.locator(selector).first().textContent({ timeout: WAIT_MS }).catch(() => null);
}

const balance = (page: Page, field: string) => text(page, `[data-testid="balance-USD"] [data-field="${field}"]`);

async function openWallet(page: Page, walletId: string): Promise<void> {
  await page.locator("#wallet-id").fill(walletId);
  await page.getByRole("button", { name: "Open" }).click();
  await page.locator('[data-testid="wallet-title"]').waitFor({ timeout: WAIT_MS });
}

const WALLET = "console_user_1";

describe("the console in chromium", () => {
  it("refuses a bad key with an error that says what to do, and keeps nothing", async () => {
    const page = await newPage();
    await signIn(page, "hf_notakey_0000000000000000");
    const alert = page.getByRole("alert");
    await alert.waitFor({ timeout: WAIT_MS });
    expect(await alert.getAttribute("data-reason")).toBe("UNAUTHENTICATED");
    expect(await alert.textContent()).toContain("Check it, or sign in with another key");
    expect(await page.evaluate(() => sessionStorage.length)).toBe(0);
    await screenshots(page, "sign-in-refused");
    await page.close();
  });

  it("shows a writer the wallet's balances changing live, its holds, and captures, releases and refunds", async () => {
    await writer.wallet(WALLET).deposit({ amount: 1000n });
    const page = await newPage();
    await signIn(page, keys.writer);
    await expect.poll(text(page, '[data-testid="role"]'), { timeout: WAIT_MS }).toBe("writer");
    await screenshots(page, "wallets-empty");
    await openWallet(page, WALLET);
    await expect.poll(balance(page, "available"), { timeout: WAIT_MS }).toBe("1,000");
    await page.locator('[data-testid="live"][data-state="live"]').waitFor({ timeout: WAIT_MS });
    // Marks this document: a reload would make a new one without the mark.
    await page.evaluate(() => Object.assign(window, { notReloaded: true }));

    await writer.wallet(WALLET).deposit({ amount: 250n });
    await expect.poll(balance(page, "available"), { timeout: WAIT_MS }).toBe("1,250");
    await expect.poll(balance(page, "posted"), { timeout: WAIT_MS }).toBe("1,250");

    await writer.wallet(WALLET).reserve({ amount: 300n, holdId: "console_hold_1", ttlSeconds: 600 });
    const hold = page.locator('[data-testid="hold-console_hold_1"]');
    await hold.waitFor({ timeout: WAIT_MS });
    await expect.poll(balance(page, "held"), { timeout: WAIT_MS }).toBe("300");
    expect(await balance(page, "available")()).toBe("950");
    expect(await hold.locator('[data-field="status"]').textContent()).toBe("pending");
    expect(await hold.locator('[data-field="expires"]').textContent()).toMatch(/^(9|10)m \d\ds$/);

    await hold.getByLabel("capture amount").fill("120");
    await hold.getByTestId("capture").click();
    await hold.getByTestId("capture-confirm").click();
    await hold.waitFor({ state: "detached", timeout: WAIT_MS });
    await expect.poll(balance(page, "posted"), { timeout: WAIT_MS }).toBe("1,130");
    expect(await balance(page, "held")()).toBe("0");
    expect(await balance(page, "available")()).toBe("1,130");
    expect((await writer.hold("console_hold_1").get()).status).toBe(HoldStatus.CAPTURED);

    await writer.wallet(WALLET).reserve({ amount: 100n, holdId: "console_hold_2", ttlSeconds: 600 });
    const second = page.locator('[data-testid="hold-console_hold_2"]');
    await second.waitFor({ timeout: WAIT_MS });
    await second.getByTestId("release").click();
    await second.getByTestId("release-confirm").click();
    await second.waitFor({ state: "detached", timeout: WAIT_MS });
    expect((await writer.hold("console_hold_2").get()).status).toBe(HoldStatus.RELEASED);
    await expect.poll(balance(page, "held"), { timeout: WAIT_MS }).toBe("0");

    const capture = page.locator('[data-testid="transfers"] tr[data-kind="capture"]');
    await capture.waitFor({ timeout: WAIT_MS });
    await capture.getByTestId("refund").click();
    await capture.getByTestId("refund-confirm").click();
    await expect.poll(text(page, '[data-testid="transfers"] .notice'), { timeout: WAIT_MS }).toBe("Refunded 120 USD.");
    await expect.poll(balance(page, "available"), { timeout: WAIT_MS }).toBe("1,250");

    const chart = page.locator('[data-testid="balance-chart"]');
    await chart.locator("canvas").waitFor({ timeout: WAIT_MS });
    await expect.poll(async () => Number(await chart.getAttribute("data-points")), { timeout: WAIT_MS }).toBeGreaterThanOrEqual(7);
    expect(await page.evaluate(() => (window as unknown as { notReloaded?: boolean }).notReloaded)).toBe(true);

    // What the screenshots show: a pending hold, a grant besides the default one, a spend.
    await writer.wallet(WALLET).spend({ amount: 75n });
    await writer.wallet(WALLET).reserve({ amount: 200n, holdId: "console_hold_3", ttlSeconds: 900 });
    await admin.wallet(WALLET).createGrant({ amount: 500n, grantId: "console_promo", category: "promotional", priority: 10, expiresAt: new Date(Date.now() + 30 * 86_400_000) });
    await page.locator('[data-testid="hold-console_hold_3"]').waitFor({ timeout: WAIT_MS });
    await page.locator('[data-testid="grant-console_promo"]').waitFor({ timeout: WAIT_MS });
    await expect.poll(balance(page, "available"), { timeout: WAIT_MS }).toBe("1,475");
    await screenshots(page, "wallet-writer");
    await page.close();
  });

  it("shows a reader key the wallet without any write action, and no admin page", async () => {
    const page = await newPage();
    await signIn(page, keys.reader);
    await expect.poll(text(page, '[data-testid="role"]'), { timeout: WAIT_MS }).toBe("reader");
    const nav = await page.getByRole("navigation", { name: "pages" }).first().textContent();
    expect(nav).toContain("Wallets");
    expect(nav).toContain("Rate cards");
    expect(nav).not.toContain("API keys");
    expect(nav).not.toContain("Webhooks");
    await openWallet(page, WALLET);
    await page.locator('[data-testid="hold-console_hold_3"]').waitFor({ timeout: WAIT_MS });
    await page.locator('[data-testid="transfers"] tr[data-kind="spend"]').waitFor({ timeout: WAIT_MS });
    expect(await balance(page, "available")()).toBe("1,475");
    for (const action of ["capture", "release", "refund"]) {
      expect(await page.getByTestId(action).count()).toBe(0);
    }
    expect(await page.getByLabel("capture amount").count()).toBe(0);
    expect(await page.locator("th", { hasText: "Actions" }).count()).toBe(0);
    await screenshots(page, "wallet-reader");
    // An admin page named in the URL is not shown to a reader.
    await page.evaluate(() => (window.location.hash = "#/keys"));
    await page.locator("#wallet-id").waitFor({ timeout: WAIT_MS });
    expect(await page.getByTestId("api-keys").count()).toBe(0);
    await page.close();
  });

  it("tells a user when the wallet does not exist", async () => {
    const page = await newPage();
    await signIn(page, keys.reader);
    await page.locator("#wallet-id").fill("nobody_here");
    await page.getByRole("button", { name: "Open" }).click();
    await page.getByTestId("wallet-not-found").waitFor({ timeout: WAIT_MS });
    await screenshots(page, "wallet-not-found");
    await page.close();
  });

  it("lets an admin create a key, see its secret once, use it, and revoke it", async () => {
    const page = await newPage();
    await signIn(page, keys.admin);
    await expect.poll(text(page, '[data-testid="role"]'), { timeout: WAIT_MS }).toBe("admin");
    await page.getByRole("link", { name: "API keys" }).click();
    const form = page.getByTestId("create-key");
    await form.locator('input[name="name"]').fill("console-made reader");
    await form.getByRole("button", { name: "Create key" }).click();
    const secret = await page.getByTestId("secret-value").textContent({ timeout: WAIT_MS });
    expect(secret).toMatch(/^hf_/);
    const made = new Holdfast({ baseUrl: app.url, apiKey: secret!, retry: { attemptsMax: 1 } });
    expect((await made.wallet(WALLET).get()).walletId).toBe(WALLET);
    const row = page.locator("tr", { hasText: "console-made reader" });
    await row.waitFor({ timeout: WAIT_MS });
    expect(await row.textContent()).toContain("reader");
    await screenshots(page, "api-keys");
    await row.getByTestId("revoke").click();
    await row.getByTestId("revoke-confirm").click();
    await expect.poll(() => row.locator(".badge.status-revoked").count(), { timeout: WAIT_MS }).toBe(1);
    await expect(made.wallet(WALLET).get()).rejects.toMatchObject({ reason: "UNAUTHENTICATED" });
    made.close();
    await page.close();
  });

  it("shows an admin the webhook deliveries with their last error, and retries a failed one", async () => {
    const { endpoint } = await admin.webhooks.createEndpoint({ url: "http://127.0.0.1:9/hooks", eventTypes: ["holdfast.hold.*"], description: "billing service" });
    const tenantId = (await app.pool.query<{ id: string }>("select id from tenants where name = 'console-tenant'")).rows[0]!.id;
    // What the webhook worker leaves after its last attempt at a receiver that refused: written
    // here as the worker writes it, since this file runs no worker.
    const eventId = "0190f0d2-7c1a-7000-8000-000000000001";
    await app.pool.query(
      `insert into webhook_events (tenant_id, event_id, type, body, occurred_at) values ($1, $2, 'holdfast.hold.captured', '{}', now())`,
      [tenantId, eventId],
    );
    const { rows } = await app.pool.query<{ delivery_id: string }>(
      `insert into webhook_deliveries (tenant_id, endpoint_id, event_id, event_type, status, attempts, next_attempt_at, last_attempt_at, last_http_status, last_error, last_latency_ms, finished_at)
       values ($1, $2, $3, 'holdfast.hold.captured', 'failed', 8, now(), now(), 503, 'HTTP 503: upstream unavailable', 41, now()) returning delivery_id`,
      [tenantId, endpoint!.endpointId, eventId],
    );
    const deliveryId = rows[0]!.delivery_id;
    const page = await newPage();
    await signIn(page, keys.admin);
    await page.getByRole("link", { name: "Webhooks" }).click();
    const delivery = page.getByTestId(`delivery-${deliveryId}`);
    await delivery.waitFor({ timeout: WAIT_MS });
    const row = await delivery.textContent();
    expect(row).toContain("failed");
    expect(row).toContain("HTTP 503: upstream unavailable");
    await screenshots(page, "webhooks");
    await delivery.getByTestId("retry").click();
    await delivery.getByTestId("retry-confirm").click();
    await expect.poll(() => delivery.locator(".badge").first().textContent(), { timeout: WAIT_MS }).toBe("pending");
    const listed = await admin.webhooks.listDeliveries({ endpointId: endpoint!.endpointId });
    expect(listed.deliveries[0]?.status).toBe(DeliveryStatus.PENDING);
    await page.close();
  });

  it("lists the rate cards and a card's prices", async () => {
    const page = await newPage();
    await signIn(page, keys.reader);
    await page.getByRole("link", { name: "Rate cards" }).click();
    await page.getByTestId("rate-cards").getByText("No rate cards yet").waitFor({ timeout: WAIT_MS });
    await screenshots(page, "rate-cards-empty");
    await admin.rateCards.putRateCard({
      rateCardId: "llm-default",
      asset: "USD",
      markupBps: 1500,
      models: [
        { model: "gpt-4.1", inputNanoPerMtok: 200_000_000_000n, cachedInputNanoPerMtok: 50_000_000_000n, outputNanoPerMtok: 800_000_000_000n },
        { model: "claude-sonnet-4-5", inputNanoPerMtok: 300_000_000_000n, cacheWriteNanoPerMtok: 375_000_000_000n, outputNanoPerMtok: 1_500_000_000_000n },
      ],
    });
    await page.reload();
    const card = page.getByTestId("card-llm-default");
    await card.waitFor({ timeout: WAIT_MS });
    expect(await card.textContent()).toContain("15.00%");
    await card.getByRole("link").click();
    const detail = page.getByTestId("rate-card-detail");
    await detail.getByText("claude-sonnet-4-5").waitFor({ timeout: WAIT_MS });
    // 1,500,000,000,000 billionths of a cent per million tokens: 1,500 cents.
    const claude = await detail.locator("tr", { hasText: "claude-sonnet-4-5" }).textContent();
    expect(claude).toContain("1,500");
    expect(claude).not.toContain("1,500,000");
    await screenshots(page, "rate-cards");
    await page.close();
  });
});
