/**
 * The negative control: proof that the checker can fail. It takes a run's snapshot, which the
 * checker passed, doctors one thing at a time (a command applied twice, an acknowledged command
 * missing, an event dropped from the stream or published twice, a webhook or a usage record
 * never delivered) and checks that the checker names exactly that. A checker that passes
 * everything would pass a broken system too.
 *
 * @module
 */
import { randomUUID } from "node:crypto";

import { checkRun, type CheckName, type RunSnapshot } from "./checker.js";

/** One doctoring and whether the checker caught it. */
export interface ControlCase {
  readonly name: string;
  /** The check that must fail. */
  readonly expected: CheckName;
  /** False also when the snapshot had nothing to doctor. */
  readonly caught: boolean;
  /** The checks the doctoring made fail, or why the case could not run. */
  readonly detail: string;
}

export interface NegativeControlResult {
  /** True when every doctored snapshot fails the check its doctoring breaks. */
  readonly ok: boolean;
  /** Whether the untouched snapshot passes (the run's own result). */
  readonly baselineOk: boolean;
  readonly cases: readonly ControlCase[];
}

/** One way to break a snapshot; undefined when the snapshot has nothing of the kind. */
interface Doctoring {
  readonly name: string;
  readonly expected: CheckName;
  doctor(snapshot: RunSnapshot): RunSnapshot | undefined;
}

const DOCTORINGS: readonly Doctoring[] = [
  {
    name: "a command applied twice (its journal row repeated under a new transfer id)",
    expected: "command-doubled",
    doctor(s) {
      const command = s.commands.find((c) => c.outcome === "applied" && (c.kind === "deposit" || c.kind === "spend" || c.kind === "transfer"));
      const row = s.transfers.find((t) => t.faultKey === command?.key);
      return row && { ...s, transfers: [...s.transfers, { ...row, transferId: randomUUID() }] };
    },
  },
  {
    name: "an acknowledged command missing from the journal",
    expected: "command-lost",
    doctor(s) {
      const command = s.commands.find((c) => c.outcome === "applied" && c.kind === "deposit");
      const index = s.transfers.findIndex((t) => t.faultKey === command?.key);
      return index < 0 ? undefined : { ...s, transfers: s.transfers.filter((_, i) => i !== index) };
    },
  },
  {
    name: "an event dropped from the stream",
    expected: "stream-missing",
    doctor(s) {
      return s.streamMessageIds.length === 0 ? undefined : { ...s, streamMessageIds: s.streamMessageIds.slice(1) };
    },
  },
  {
    name: "an event in the stream twice",
    expected: "stream-duplicate",
    doctor(s) {
      const id = s.streamMessageIds[0];
      return id === undefined ? undefined : { ...s, streamMessageIds: [...s.streamMessageIds, id] };
    },
  },
  {
    name: "a webhook never delivered",
    expected: "webhook-lost",
    doctor(s) {
      const endpoint = s.endpoints.find((e) => e.deliveries.size > 0);
      if (endpoint === undefined) return undefined;
      const deliveries = new Map(endpoint.deliveries);
      deliveries.delete(deliveries.keys().next().value!);
      return { ...s, endpoints: s.endpoints.map((e) => (e === endpoint ? { ...e, deliveries } : e)) };
    },
  },
  {
    name: "a usage record never stored by a billing engine",
    expected: "billing-lost",
    doctor(s) {
      const engine = s.engines.find((e) => e.stored.size > 0);
      if (engine === undefined) return undefined;
      const stored = new Map(engine.stored);
      stored.delete(stored.keys().next().value!);
      return { ...s, engines: s.engines.map((e) => (e === engine ? { ...e, stored } : e)) };
    },
  },
];

/**
 * Runs every doctoring on `snapshot`. A case is caught when the doctored snapshot fails the
 * expected check more often than the untouched one, so the control stays meaningful even for a
 * run that failed on its own (which `baselineOk` reports).
 */
export function runNegativeControl(snapshot: RunSnapshot): NegativeControlResult {
  const baseline = checkRun(snapshot);
  const cases = DOCTORINGS.map((d): ControlCase => {
    const doctored = d.doctor(snapshot);
    if (doctored === undefined) return { name: d.name, expected: d.expected, caught: false, detail: "nothing in the run to doctor" };
    const result = checkRun(doctored);
    const added = (Object.keys(result.violationCounts) as CheckName[]).filter(
      (check) => (result.violationCounts[check] ?? 0) > (baseline.violationCounts[check] ?? 0),
    );
    return { name: d.name, expected: d.expected, caught: added.includes(d.expected), detail: added.join(", ") || "(nothing new)" };
  });
  return { ok: cases.every((c) => c.caught), baselineOk: baseline.ok, cases };
}
