// Goal: `holdfast events tail` follows the stream with tenant, wallet and type filters, and the
// example subscriber's subject scheme matches what the relay publishes.
// Method: a private nats-server and a ledger with its relay; a few commands; then tailEvents
// (the function behind the command) replays the stream with filters and a limit, and its
// readable and JSON lines are checked.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { tailEvents, tailSubject } from "@holdfast/cli/events-tail";
import { key } from "./support/ledger.js";
import { startNatsServer } from "./support/nats.js";
import { startTestServer } from "./support/server.js";

let nats: Awaited<ReturnType<typeof startNatsServer>>;
let s: Awaited<ReturnType<typeof startTestServer>>;

beforeAll(async () => {
  nats = await startNatsServer();
  s = await startTestServer({ NATS_URL: nats.url });
  const caller = { tenantId: s.tenantId, scopeWalletId: null };
  for (const walletId of ["tail_a", "tail_b"]) {
    await s.app.ledger.deposit(caller, { walletId, asset: "USD", amount: 100n, idempotencyKey: key(), metadata: {} });
    const h = await s.app.ledger.reserve(caller, { walletId, asset: "USD", amount: 30n, holdId: `${walletId}_h`, ttlSeconds: 60, idempotencyKey: key(), metadata: {} });
    expect(h.ok).toBe(true);
    await s.app.ledger.capture(caller, { holdId: `${walletId}_h`, amount: 25n, idempotencyKey: key(), metadata: {} });
  }
  const deadline = Date.now() + 20_000;
  while ((await s.app.relay!.refreshStatus()).backlog > 0) {
    if (Date.now() > deadline) throw new Error("relay did not drain");
    await new Promise((r) => setTimeout(r, 50));
  }
});
afterAll(async () => {
  await s?.close();
  await nats?.close();
});

function collect() {
  const lines: string[] = [];
  return { lines, out: (line: string) => void lines.push(line) };
}

describe("holdfast events tail", () => {
  it("builds subject filters from tenant, wallet and type", () => {
    expect(tailSubject({})).toBe("holdfast.events.*.*.>");
    expect(tailSubject({ tenant: "t1", wallet: "user_1", type: "holdfast.hold.captured" })).toBe("holdfast.events.t1.user_1.hold.captured");
    expect(tailSubject({ type: "hold" })).toBe("holdfast.events.*.*.hold.*");
    expect(() => tailSubject({ wallet: "a.b" })).toThrow(/--wallet/);
    expect(() => tailSubject({ type: "hold.>" })).toThrow(/--type/);
  });

  it("prints one readable line per event of one wallet, in order", async () => {
    const output = collect();
    const seen = await tailEvents(
      { natsUrl: nats.url, stream: "HOLDFAST_EVENTS", tenant: s.tenantId, wallet: "tail_a", json: false, fromStart: true, limit: 3 },
      output,
    );
    expect(seen).toBe(3);
    expect(output.lines.map((l) => l.split("  ").slice(1, 4))).toEqual([
      ["tail_a", "#1", "deposit.completed"],
      ["tail_a", "#2", "hold.created"],
      ["tail_a", "#3", "hold.captured"],
    ]);
    expect(output.lines[2]).toContain("amount=25");
    expect(output.lines[2]).toContain("available=75");
  });

  it("filters by type across wallets and prints JSON", async () => {
    const output = collect();
    await tailEvents({ natsUrl: nats.url, stream: "HOLDFAST_EVENTS", type: "hold.captured", json: true, fromStart: true, limit: 2 }, output);
    const events = output.lines.map((l) => JSON.parse(l) as { type: string; walletId: string; holdCaptured: { transfer: { amount: string } } });
    expect(events.map((e) => e.walletId).sort()).toEqual(["tail_a", "tail_b"]);
    expect(events.every((e) => e.type === "holdfast.hold.captured" && e.holdCaptured.transfer.amount === "25")).toBe(true);
  });
});
