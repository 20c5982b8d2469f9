// Goal: under kills and restarts of every component, no acknowledged command is lost or
// applied twice, balances equal the journal, the stream holds each event once, and every
// webhook and usage record arrives (at least once; receivers and engines dedupe). And the
// checker that says so can fail: doctored data makes it fail on exactly the doctored check.
// Method: the fault battery (tools/faults) at its CI size: a private embedded PostgreSQL and
// private nats-servers (never the machine's 5432 or 4222); the compiled ledger and workers as
// processes; clients that retry the same idempotency key on transport errors while the ledger,
// PostgreSQL (immediate mode), nats-server and each worker are killed and restarted; then a
// 3-node NATS cluster with the stream at 3 replicas and its leader killed under load. The
// figures are checked, never timings: how long anything took is this machine's business.
import { existsSync } from "node:fs";
import { beforeAll, describe, expect, it } from "vitest";
import type { BatteryReport, ScenarioReport } from "@holdfast/faults/battery";
import { runBattery } from "@holdfast/faults/battery";
import { checkRun, type RunSnapshot } from "@holdfast/faults/checker";
import { runNegativeControl } from "@holdfast/faults/negative-control";
import { formatReport } from "@holdfast/faults/report";
import { CI_SETTINGS } from "@holdfast/faults/settings";

/** Both scenarios, their settling and the servers' starts, with room for a loaded machine. */
const BATTERY_TIMEOUT_MS = 900_000;
const ENTRY_POINTS = ["services/ledger/dist/main.js", "workers/webhooks/dist/main.js", "workers/billing-stream/dist/main.js", "workers/hold-expiry/dist/main.js"];

let report: BatteryReport;
let printed: string;
const scenario = (name: string): ScenarioReport => report.scenarios.find((s) => s.settings.name === name)!;

describe("fault battery", () => {
  beforeAll(async () => {
    for (const script of ENTRY_POINTS) expect(existsSync(script), `${script} is missing: run npx tsc -b first`).toBe(true);
    report = await runBattery(CI_SETTINGS);
    printed = formatReport(report, "npx vitest run test/faults.test.ts");
  }, BATTERY_TIMEOUT_MS);

  describe.each(["single", "cluster"])("%s NATS", (name) => {
    it("injected every fault and settled", () => {
      const s = scenario(name);
      expect(s.faults.map((f) => f.target), printed).toEqual(CI_SETTINGS.scenarios.find((c) => c.name === name)!.faults);
      expect(s.faults.filter((f) => f.error !== null), printed).toEqual([]);
      expect(s.quiesced, printed).toBe(true);
    });

    it("stored every acknowledged command exactly once, with the answer the client got", () => {
      const { figures, violationCounts } = scenario(name).result;
      expect(figures.commands).toBeGreaterThan(0);
      expect(figures.underFault, printed).toBeGreaterThan(0);
      expect({ lost: figures.lost, doubled: figures.doubled, unacknowledged: figures.unacknowledged, errors: figures.errors }, printed).toEqual({
        lost: 0,
        doubled: 0,
        unacknowledged: 0,
        errors: 0,
      });
      for (const check of ["command-lost", "command-doubled", "command-answer", "command-error", "refusal-applied", "idempotency-record", "journal-unattributed"] as const) {
        expect(violationCounts[check], `${check}\n${printed}`).toBeUndefined();
      }
    });

    it("kept every balance equal to its journal, and the ledger's invariants", () => {
      const { violationCounts } = scenario(name).result;
      expect(violationCounts.balance, printed).toBeUndefined();
      expect(violationCounts.invariant, printed).toBeUndefined();
    });

    it("holds exactly one stream message per outbox row", () => {
      const { figures, violationCounts } = scenario(name).result;
      expect(figures.streamMessages).toBe(figures.events);
      for (const check of ["outbox-unpublished", "stream-missing", "stream-duplicate", "stream-unknown"] as const) {
        expect(violationCounts[check], `${check}\n${printed}`).toBeUndefined();
      }
    });

    it("delivered every webhook to each endpoint and every usage record to each engine, none lost", () => {
      const { figures, violationCounts } = scenario(name).result;
      for (const delivery of [...figures.endpoints, ...figures.engines]) {
        expect(delivery.expected, delivery.name).toBeGreaterThan(0);
        expect({ name: delivery.name, lost: delivery.lost, delivered: delivery.delivered }).toEqual({ name: delivery.name, lost: 0, delivered: delivery.expected });
      }
      for (const check of ["webhook-lost", "webhook-unexpected", "webhook-rejected", "billing-lost", "billing-unexpected", "billing-stored-twice"] as const) {
        expect(violationCounts[check], `${check}\n${printed}`).toBeUndefined();
      }
    });

    it("had no process die that the battery did not kill", () => {
      expect(scenario(name).result.violationCounts.process, printed).toBeUndefined();
    });

    it("has a checker that fails on each doctored copy of the run", () => {
      const control = scenario(name).negativeControl;
      expect(control.cases.length).toBeGreaterThanOrEqual(6);
      for (const c of control.cases) expect(c.caught, `${c.name}: ${c.detail}`).toBe(true);
    });
  });
});

describe("exactly-once checker on hand-made data", () => {
  // A tiny consistent run: one funded wallet, one spend, their events, webhooks and billing.
  const consistent = (): RunSnapshot => ({
    commands: [
      { key: "deposit-1", kind: "deposit", walletId: "w_0", toWalletId: null, holdId: null, amount: 100n, outcome: "applied", detail: null, transferId: "t1", attempts: 2, replayed: true, startedAtMs: 0, endedAtMs: 10 },
      { key: "spend-1", kind: "spend", walletId: "w_0", toWalletId: null, holdId: null, amount: 30n, outcome: "applied", detail: null, transferId: "t2", attempts: 1, replayed: false, startedAtMs: 10, endedAtMs: 20 },
      { key: "spend-2", kind: "spend", walletId: "w_0", toWalletId: null, holdId: null, amount: 999n, outcome: "refused", detail: "INSUFFICIENT_FUNDS", transferId: null, attempts: 1, replayed: false, startedAtMs: 20, endedAtMs: 30 },
    ],
    idempotency: [
      { key: "deposit-1", command: "Deposit", ok: true, reason: null, transferId: "t1" },
      { key: "spend-1", command: "Spend", ok: true, reason: null, transferId: "t2" },
      { key: "spend-2", command: "Spend", ok: false, reason: "INSUFFICIENT_FUNDS", transferId: null },
    ],
    transfers: [
      { transferId: "t1", kind: "deposit", debitWalletId: "@world", creditWalletId: "w_0", asset: "USD", amount: 100n, holdId: null, faultKey: "deposit-1" },
      { transferId: "t2", kind: "spend", debitWalletId: "w_0", creditWalletId: "@revenue", asset: "USD", amount: 30n, holdId: null, faultKey: "spend-1" },
    ],
    accounts: [{ walletId: "w_0", asset: "USD", creditsPosted: 100n, debitsPosted: 30n, debitsPending: 0n }],
    holds: [],
    events: [
      { eventId: "e1", type: "holdfast.deposit.completed", published: true },
      { eventId: "e2", type: "holdfast.spend.completed", published: true },
    ],
    streamMessageIds: ["e1", "e2"],
    endpoints: [{ name: "all", typePrefix: null, deliveries: new Map([["e1", 1], ["e2", 2]]), rejected: 0 }],
    engines: [{ name: "http", stored: new Map([["t2", 1]]), seen: new Map([["t2", 3]]) }],
    invariantViolations: [],
    processProblems: [],
    faults: [{ startMs: 5, endMs: 15 }],
  });

  it("passes a consistent run and counts repeats as duplicates, not failures", () => {
    const result = checkRun(consistent());
    expect(result.violations).toEqual([]);
    expect(result.figures).toMatchObject({ commands: 3, applied: 2, refused: 1, retries: 1, replayed: 1, underFault: 2, lost: 0, doubled: 0 });
    expect(result.figures.endpoints[0]).toEqual({ name: "all", expected: 2, delivered: 2, lost: 0, duplicates: 1 });
    expect(result.figures.engines[0]).toEqual({ name: "http", expected: 1, delivered: 1, lost: 0, duplicates: 2 });
  });

  it("fails a command applied twice, naming it, and the balance it broke", () => {
    const doubled = consistent();
    const result = checkRun({ ...doubled, transfers: [...doubled.transfers, { ...doubled.transfers[1]!, transferId: "t3" }] });
    expect(result.ok).toBe(false);
    expect(result.figures.doubled).toBe(1);
    expect(result.violations.map((v) => v.check)).toEqual(expect.arrayContaining(["command-doubled", "balance"]));
    expect(result.violations.find((v) => v.check === "command-doubled")!.detail).toContain("spend-1");
  });

  it("fails an event dropped from the stream, a refusal applied, and a lost webhook", () => {
    const s = consistent();
    expect(Object.keys(checkRun({ ...s, streamMessageIds: ["e1"] }).violationCounts)).toEqual(["stream-missing"]);
    const refusalApplied = { ...s, transfers: [...s.transfers, { ...s.transfers[1]!, transferId: "t4", faultKey: "spend-2", amount: 999n }] };
    expect(checkRun(refusalApplied).violationCounts).toMatchObject({ "refusal-applied": 1, balance: 1 });
    const lostWebhook = { ...s, endpoints: [{ ...s.endpoints[0]!, deliveries: new Map([["e1", 1]]) }] };
    expect(checkRun(lostWebhook).violationCounts).toEqual({ "webhook-lost": 1 });
  });

  it("runs the negative control on it: every doctoring caught", () => {
    const control = runNegativeControl(consistent());
    expect(control.baselineOk).toBe(true);
    expect(control.cases.filter((c) => !c.caught)).toEqual([]);
  });
});
