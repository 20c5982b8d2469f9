// Goal: every capture and spend becomes exactly one usage record in each configured billing
// engine (refunds as each engine expects them), across outages, rate limits and bad input.
// Method: the real ledger with its outbox relay on a private nats-server and a fresh
// database; the billing-stream worker with five sinks pointed at local servers that check
// each engine's documented request format, auth header and idempotency key, and dedupe on it
// as the engine does. No wall-clock assertion except a lower bound on Retry-After.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Transfer } from "@holdfast/ledger/domain";
import { checkUsage, customerMetadata, ENGINES, engineCustomer, startBillingBench, waitFor, waitForUsage, type BillingBench, type ExpectedUsage } from "./support/billing.js";

let bench: BillingBench;

beforeAll(async () => {
  bench = await startBillingBench();
  await bench.wallet("w_alice", customerMetadata("alice"));
  await bench.wallet("w_bob", customerMetadata("bob"));
});
afterAll(async () => {
  await bench?.close();
});

const usage = (t: Transfer, value: bigint, model: string): ExpectedUsage => ({
  transferId: t.transferId,
  walletId: t.kind === "refund" ? t.creditWalletId : t.debitWalletId,
  value,
  model,
});

describe("billing stream", () => {
  it("delivers a run of spends, captures and refunds once to every engine, with values and customers", async () => {
    const expected: ExpectedUsage[] = [];
    for (const walletId of ["w_alice", "w_bob"]) {
      for (let i = 1; i <= 5; i++) {
        expected.push(usage(await bench.spend(walletId, BigInt(10 * i), "gpt-4o"), BigInt(10 * i), "gpt-4o"));
        expected.push(usage(await bench.capture(walletId, 500n, BigInt(100 + i), "claude"), BigInt(100 + i), "claude"));
      }
    }
    const refunded = expected[0]!;
    // A partial refund of a spend: negative value, same customer, the refunded usage's model.
    expected.push(usage(await bench.refund(refunded.transferId, 4n), -4n, "gpt-4o"));

    for (const type of ENGINES) {
      const engine = bench.engines[type];
      await waitForUsage(engine, expected);
      checkUsage(engine, expected, engineCustomer[type]);
    }
    const stripe = bench.engines.stripe.stored.get(expected[0]!.transferId)!;
    expect(stripe.eventName).toBe("llm_tokens");
    const lago = bench.engines.lago.stored.get(expected.at(-1)!.transferId)!;
    expect(lago).toMatchObject({ eventName: "llm_usage", value: -4n });
    // The refund carries the refunded usage's metadata under its own.
    expect(lago.properties).toMatchObject({ model: "gpt-4o", reason: "bad answer", kind: "refund", refund_of: refunded.transferId });
    const capture = bench.engines.metronome.stored.get(expected[1]!.transferId)!;
    expect(capture.properties).toMatchObject({ model: "claude", feature: "chat", asset: "USD", kind: "capture" });
    // OpenMeter dedupes on id + source: the source is stable per tenant.
    expect(bench.engines.openmeter.stored.get(expected[0]!.transferId)!.properties["source"]).toBe(`/holdfast/tenants/${bench.caller.tenantId}`);
    expect(await bench.deadLetters()).toEqual([]);
  });

  it("keeps an up sink on time while another is down, and the down one catches up without gaps or duplicates", async () => {
    const { lago, metronome } = bench.engines;
    await lago.stop();
    const expected: ExpectedUsage[] = [];
    for (let i = 0; i < 30; i++) {
      const walletId = i % 2 === 0 ? "w_alice" : "w_bob";
      expected.push(usage(await bench.spend(walletId, BigInt(i + 1)), BigInt(i + 1), "gpt-4o"));
    }
    await waitForUsage(metronome, expected);
    checkUsage(metronome, expected, engineCustomer.metronome);
    expect(expected.some((e) => lago.stored.has(e.transferId))).toBe(false);
    expect(bench.worker.metrics.get("lago")!.failed).toBeGreaterThan(0);

    await lago.start();
    await waitForUsage(lago, expected);
    checkUsage(lago, expected, engineCustomer.lago);
    // Nothing missing, and no idempotency key arrived twice at the engine.
    for (const e of expected) expect(lago.seen.get(e.transferId)).toBe(1);
    expect(await bench.deadLetters()).toEqual([]);
  });

  it("honours 429 with Retry-After", async () => {
    const { openmeter } = bench.engines;
    openmeter.answerNext({ status: 429, headers: { "retry-after": "1" }, body: '{"title":"Too Many Requests"}' });
    const before = openmeter.received.length;
    const t = await bench.spend("w_alice", 7n);
    await waitForUsage(openmeter, [usage(t, 7n, "gpt-4o")]);
    const [limited, accepted] = openmeter.received.slice(before).filter((r) => r.status === 429 || r.keys.includes(t.transferId));
    expect(limited!.status).toBe(429);
    expect(accepted!.keys).toContain(t.transferId);
    // Retry-After: 1 second. A lower bound only: the retry may come later, never sooner.
    expect(accepted!.at - limited!.at).toBeGreaterThanOrEqual(950);
    expect(bench.worker.metrics.get("openmeter")!.retried).toBeGreaterThan(0);
  });

  it("dead-letters a refused record with the engine's answer and keeps delivering the usage behind it", async () => {
    const { stripe, lago, metronome } = bench.engines;
    await bench.wallet("w_carol", customerMetadata("carol"));
    stripe.refuse("cus_carol");
    lago.refuse("sub_carol");
    metronome.refuse("mc_carol");
    // A wallet without customer ids: Stripe, Lago and Metronome cannot map it at all.
    await bench.wallet("w_dave", {});

    const bad = await bench.spend("w_carol", 11n);
    const unmapped = await bench.spend("w_dave", 12n);
    const after: ExpectedUsage[] = [];
    for (let i = 0; i < 6; i++) after.push(usage(await bench.spend("w_alice", BigInt(20 + i)), BigInt(20 + i), "gpt-4o"));

    for (const type of ["stripe", "lago", "metronome"] as const) {
      await waitForUsage(bench.engines[type], after);
      checkUsage(bench.engines[type], after, engineCustomer[type]);
      expect(bench.engines[type].stored.has(bad.transferId)).toBe(false);
    }
    await waitFor("dead letters", async () => (await bench.deadLetters()).length === 6);
    const letters = await bench.deadLetters();
    const refused = (sink: string) => letters.find((l) => l.sink === sink && l.transfer_id === bad.transferId)!;
    expect(refused("stripe")).toMatchObject({ http_status: 400, tenant_id: bench.caller.tenantId });
    expect(refused("stripe").answer).toContain("No such customer");
    expect(refused("lago")).toMatchObject({ http_status: 422 });
    expect(refused("lago").answer).toContain("subscription_not_found");
    // Metronome's 400 named no event: the worker split the batch down to the one at fault.
    expect(refused("metronome")).toMatchObject({ http_status: 400 });
    const missing = letters.filter((l) => l.transfer_id === unmapped.transferId);
    expect(missing.map((l) => l.sink).sort()).toEqual(["lago", "metronome", "stripe"]);
    expect(missing.every((l) => l.http_status === null && l.answer.startsWith("no customer"))).toBe(true);
    // Engines that key customers by wallet id take both.
    for (const type of ["openmeter", "http"] as const) {
      await waitFor(`${type} to hold both`, () => bench.engines[type].stored.has(bad.transferId) && bench.engines[type].stored.has(unmapped.transferId));
    }
    expect(bench.worker.metrics.get("stripe")!.deadLettered).toBe(2);
  });

  it("resumes from its durable consumers after a restart, delivering what was made while it was away", async () => {
    await bench.stopWorker();
    const expected: ExpectedUsage[] = [];
    for (let i = 0; i < 10; i++) expected.push(usage(await bench.spend("w_bob", BigInt(50 + i)), BigInt(50 + i), "gpt-4o"));
    await bench.startWorker();
    for (const type of ENGINES) {
      await waitForUsage(bench.engines[type], expected);
      checkUsage(bench.engines[type], expected, engineCustomer[type]);
    }
  });
});
