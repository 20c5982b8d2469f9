// The billing-stream test bench: a private nats-server, the ledger with its outbox relay, the
// five fake engines, and the worker reading the stream, all on a fresh database.
import { rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { randomUUID } from "node:crypto";
import { expect } from "vitest";
import { readNatsConfig } from "@holdfast/common/config";
import { streamSettingsOf } from "@holdfast/common/nats";
import { createPool } from "@holdfast/common/pg";
import type { Transfer } from "@holdfast/ledger/domain";
import { parseBillingConfig } from "@holdfast/billing-core/config";
import { createBillingWorker } from "@holdfast/billing-stream/worker";
import { sinkConfigs, SINK_ENV, startFakeEngines, type EngineType, type FakeEngine } from "@holdfast/testing/billing-engines";
import { key, quietLogger } from "./ledger.js";
import { startNatsServer } from "./nats.js";
import { startTestServer } from "./server.js";

export const ENGINES: EngineType[] = ["stripe", "openmeter", "lago", "metronome", "http"];

/** Wallet metadata that maps a wallet to a customer in every engine. */
export const customerMetadata = (name: string) => ({
  stripe_customer_id: `cus_${name}`,
  lago_subscription_id: `sub_${name}`,
  metronome_customer_id: `mc_${name}`,
});

/** What each engine should hold for one transfer. */
export interface ExpectedUsage {
  transferId: string;
  walletId: string;
  value: bigint;
  model: string;
}

export async function startBillingBench(extra: Parameters<typeof sinkConfigs>[1] = {}) {
  const nats = await startNatsServer();
  const server = await startTestServer({ NATS_URL: nats.url });
  const engines = await startFakeEngines();
  const rawConfig = sinkConfigs(engines, extra);
  const config = parseBillingConfig(rawConfig, SINK_ENV);
  const configPath = join(tmpdir(), `holdfast-billing-${randomUUID()}.json`);
  await writeFile(configPath, JSON.stringify(rawConfig));
  for (const [name, value] of Object.entries(SINK_ENV)) process.env[name] = value;
  const pool = createPool({ databaseUrl: server.db.url, pgPoolMax: 5, pgConnectTimeoutMs: 5000, pgStatementTimeoutMs: 30_000 }, quietLogger);
  const newWorker = () =>
    createBillingWorker({
      config,
      pool,
      natsUrl: nats.url,
      stream: streamSettingsOf(readNatsConfig({})),
      logger: quietLogger,
      statusLogMs: 60_000,
    });
  let worker = newWorker();
  await worker.start();
  const caller = { tenantId: server.tenantId, scopeWalletId: null };
  const ledger = server.app.ledger;

  async function wallet(walletId: string, metadata: Record<string, string>, funds = 1_000_000n): Promise<void> {
    const created = await ledger.createWallet(caller, walletId, metadata);
    expect(created.ok).toBe(true);
    const deposit = await ledger.deposit(caller, { walletId, asset: "USD", amount: funds, idempotencyKey: key(), metadata: {} });
    expect(deposit.ok).toBe(true);
  }

  async function spend(walletId: string, amount: bigint, model = "gpt-4o"): Promise<Transfer> {
    const r = await ledger.spend(caller, { walletId, asset: "USD", amount, idempotencyKey: key(), metadata: { model } });
    if (!r.ok) throw new Error(r.reason);
    return r.transfer;
  }

  async function capture(walletId: string, reserve: bigint, amount: bigint, model = "claude"): Promise<Transfer> {
    const h = await ledger.reserve(caller, { walletId, asset: "USD", amount: reserve, holdId: "", ttlSeconds: 600, idempotencyKey: key(), metadata: { model } });
    if (!h.ok) throw new Error(h.reason);
    const c = await ledger.capture(caller, { holdId: h.hold.holdId, amount, idempotencyKey: key(), metadata: { feature: "chat" } });
    if (!c.ok) throw new Error(c.reason);
    return c.transfer;
  }

  async function refund(transferId: string, amount: bigint): Promise<Transfer> {
    const r = await ledger.refund(caller, { transferId, amount, idempotencyKey: key(), metadata: { reason: "bad answer" } });
    if (!r.ok) throw new Error(r.reason);
    return r.transfer;
  }

  return {
    nats,
    server,
    engines,
    config,
    configPath,
    pool,
    get worker() {
      return worker;
    },
    /** Stops the worker; `startWorker` starts a new one on the same durable consumers. */
    async stopWorker() {
      await worker.stop();
    },
    async startWorker() {
      worker = newWorker();
      await worker.start();
    },
    caller,
    wallet,
    spend,
    capture,
    refund,
    async deadLetters(sink?: string) {
      const { rows } = await pool.query<{ sink: string; transfer_id: string; http_status: number | null; answer: string; resolved_at: Date | null; tenant_id: string }>(
        "select sink, transfer_id, http_status, answer, resolved_at, tenant_id from billing_dead_letters where $1::text is null or sink = $1 order by first_failed_at",
        [sink ?? null],
      );
      return rows;
    },
    async close() {
      await worker.stop();
      await pool.end();
      for (const engine of Object.values(engines)) await engine.stop();
      await server.close();
      await nats.close();
      await rm(configPath, { force: true });
    },
  };
}

export type BillingBench = Awaited<ReturnType<typeof startBillingBench>>;

/** Polls `check` until it holds; the timeout only guards against a hang. */
export async function waitFor(what: string, check: () => boolean | Promise<boolean>, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

/** Waits until `engine` holds every expected transfer. */
export async function waitForUsage(engine: FakeEngine, expected: readonly ExpectedUsage[]): Promise<void> {
  await waitFor(`${engine.type} to hold ${expected.length} usage records`, () => expected.every((e) => engine.stored.has(e.transferId)));
}

/** Each transfer stored once, never stored twice, with the right value and customer. */
export function checkUsage(engine: FakeEngine, expected: readonly ExpectedUsage[], customer: (walletId: string) => string): void {
  expect(engine.violations).toEqual([]);
  for (const e of expected) {
    const stored = engine.stored.get(e.transferId);
    expect(stored, `${engine.type} ${e.transferId}`).toBeDefined();
    expect(stored!.value).toBe(e.value);
    expect(stored!.customer).toBe(customer(e.walletId));
    expect(engine.storedCount.get(e.transferId)).toBe(1);
  }
}

/** Each engine's customer for a wallet created with customerMetadata(name) as `w_<name>`. */
export const engineCustomer: Record<EngineType, (walletId: string) => string> = {
  stripe: (w) => `cus_${w.slice(2)}`,
  openmeter: (w) => w,
  lago: (w) => `sub_${w.slice(2)}`,
  metronome: (w) => `mc_${w.slice(2)}`,
  http: (w) => w,
};
