// Goal: `holdfast billing backfill` re-sends a period of usage from the journal, and a period
// the stream already sent is not billed twice: every engine dedupes on the transfer id.
// Method: the billing-stream bench (ledger + relay + worker + fake engines); let the stream
// deliver a run of usage, then backfill the same period through the CLI, in process, and
// compare what each engine holds before and after.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { main } from "@holdfast/cli/main";
import { checkUsage, customerMetadata, ENGINES, engineCustomer, startBillingBench, waitFor, waitForUsage, type BillingBench, type ExpectedUsage } from "./support/billing.js";

let bench: BillingBench;

beforeAll(async () => {
  bench = await startBillingBench();
  await bench.wallet("w_erin", customerMetadata("erin"));
  await bench.wallet("w_frank", customerMetadata("frank"));
});
afterAll(async () => {
  await bench?.close();
});

/** Runs the CLI in process and returns its exit code and output. */
async function cli(...args: string[]) {
  const out: string[] = [];
  const err: string[] = [];
  const code = await main(["node", "holdfast", "--database-url", bench.server.db.url, ...args], {
    out: (line) => out.push(line),
    err: (line) => err.push(line),
  });
  return { code, out, err };
}

/** The ledger's test clock starts at 2026-01-01; this period covers everything it wrote. */
const SINCE = "2025-12-31T00:00:00Z";

describe("billing backfill", () => {
  it("re-sends a period already sent without billing anything twice", async () => {
    const expected: ExpectedUsage[] = [];
    for (let i = 1; i <= 60; i++) {
      const walletId = i % 2 === 0 ? "w_erin" : "w_frank";
      const t = i % 3 === 0 ? await bench.capture(walletId, 1000n, BigInt(i)) : await bench.spend(walletId, BigInt(i));
      expected.push({ transferId: t.transferId, walletId, value: BigInt(i), model: "gpt-4o" });
    }
    for (const type of ENGINES) await waitForUsage(bench.engines[type], expected);
    const before = Object.fromEntries(ENGINES.map((type) => [type, new Map(bench.engines[type].stored)]));

    for (const sink of ENGINES) {
      const run = await cli("billing", "backfill", "--sink", sink, "--since", SINCE, "--config", bench.configPath);
      expect(run.err.filter((l) => !l.startsWith("["))).toEqual([]);
      expect(run.code).toBe(0);
      expect(run.out.join("\n")).toContain(`sent ${expected.length}, dead-lettered 0`);
      // A progress bar, ending at 100%.
      expect(run.err.at(-1)).toMatch(/^\[#{30}\] 100% 60\/60 usage records/);
    }
    for (const type of ENGINES) {
      const engine = bench.engines[type];
      // Every record was offered again...
      for (const e of expected) expect(engine.seen.get(e.transferId)).toBeGreaterThanOrEqual(2);
      // ...and the engine holds exactly what it held: nothing billed twice.
      expect(engine.stored).toEqual(before[type]);
      checkUsage(engine, expected, engineCustomer[type]);
    }
    expect(await bench.deadLetters()).toEqual([]);
  });

  it("delivers dead-lettered usage once its cause is fixed, and marks the dead letter resolved", async () => {
    await bench.wallet("w_gina", {});
    const t = await bench.spend("w_gina", 42n);
    await waitFor("a stripe dead letter", async () => (await bench.deadLetters("stripe")).some((l) => l.transfer_id === t.transferId));
    expect(bench.engines.stripe.stored.has(t.transferId)).toBe(false);

    const fixed = await bench.server.app.ledger.updateWallet(bench.caller, { walletId: "w_gina", status: null, creditLimits: [], metadata: customerMetadata("gina") });
    expect(fixed.ok).toBe(true);
    const run = await cli("billing", "backfill", "--sink", "stripe", "--since", SINCE, "--tenant", bench.caller.tenantId, "--config", bench.configPath);
    expect(run.code).toBe(0);
    expect(bench.engines.stripe.stored.get(t.transferId)).toMatchObject({ customer: "cus_gina", value: 42n });
    const letter = (await bench.deadLetters("stripe")).find((l) => l.transfer_id === t.transferId)!;
    expect(letter.resolved_at).not.toBeNull();
  });

  it("refuses an unknown sink and a malformed time", async () => {
    const unknown = await cli("billing", "backfill", "--sink", "nope", "--since", SINCE, "--config", bench.configPath);
    expect(unknown.code).toBe(1);
    expect(unknown.err.join("\n")).toContain('no sink named "nope"');
    const badTime = await cli("billing", "backfill", "--sink", "stripe", "--since", "yesterday", "--config", bench.configPath);
    expect(badTime.code).toBe(1);
    expect(badTime.err.join("\n")).toContain("--since must be an ISO 8601 time");
  });
});
