/**
 * The exactly-once checker. A pure function of a {@link RunSnapshot}, which holds what the
 * clients were told and what every part of the system stored, so the negative control can feed
 * it doctored data and prove that it notices a command applied twice or an event dropped.
 *
 * What it checks, each a named check in the result:
 * - every command the client saw applied is in the journal exactly once (by the key in its
 *   metadata), with the transfer id the client was told, and has its idempotency record;
 *   a refused command left no journal row; no key has two rows; no row lacks its command;
 * - each stored balance equals what the journal and the pending holds add up to, and the
 *   ledger's own invariants (services/ledger/src/invariants.ts) hold;
 * - the stream holds exactly one message per outbox row, and every row was published;
 * - every endpoint received every event it subscribes to, signed (at least once: receivers
 *   dedupe on webhook-id, so repeats are counted, not failed), and nothing else;
 * - every billing engine stored every usage record (spends and captures) exactly once;
 * - no process died that the battery did not kill, and every fault was injected.
 *
 * @module
 */
import type { CommandKind, CommandRecord } from "./load.js";

/** An idempotency record as the ledger stored it. */
export interface IdempotencyRow {
  readonly key: string;
  readonly command: string;
  /** The stored answer's `ok`; null while a command holds the key (never after a run). */
  readonly ok: boolean | null;
  readonly reason: string | null;
  /** The journal row the stored answer names (a transfer, or a reserve's transfer). */
  readonly transferId: string | null;
}

/** A journal row, with the command key from its metadata. */
export interface TransferRow {
  readonly transferId: string;
  readonly kind: string;
  readonly debitWalletId: string;
  readonly creditWalletId: string;
  readonly asset: string;
  readonly amount: bigint;
  readonly holdId: string | null;
  /** metadata.fault_key: the key of the command that wrote the row (a release carries its hold's). */
  readonly faultKey: string | null;
}

export interface AccountRow {
  readonly walletId: string;
  readonly asset: string;
  readonly creditsPosted: bigint;
  readonly debitsPosted: bigint;
  readonly debitsPending: bigint;
}

export interface HoldRow {
  readonly holdId: string;
  readonly walletId: string;
  readonly asset: string;
  readonly amount: bigint;
  readonly status: string;
}

/** An outbox row. */
export interface EventRow {
  readonly eventId: string;
  readonly type: string;
  readonly published: boolean;
}

/** What one webhook endpoint's receiver counted. */
export interface EndpointDeliveries {
  readonly name: string;
  /** The endpoint's filter as a type prefix (`holdfast.hold.`); null takes every type. */
  readonly typePrefix: string | null;
  /** Verified deliveries per webhook-id. */
  readonly deliveries: ReadonlyMap<string, number>;
  /** Requests no secret verified. */
  readonly rejected: number;
}

/** What one billing engine stand-in holds. */
export interface EngineRecords {
  readonly name: string;
  /** How often each idempotency key (the transfer id) was stored: 1, or more for a doubled record. */
  readonly stored: ReadonlyMap<string, number>;
  /** How often each key arrived in any request, stored or deduplicated. */
  readonly seen: ReadonlyMap<string, number>;
}

/** When a fault was active, for counting the commands that ran under one. */
export interface FaultSpan {
  readonly startMs: number;
  readonly endMs: number;
}

/** Everything the checker looks at. */
export interface RunSnapshot {
  readonly commands: readonly CommandRecord[];
  readonly idempotency: readonly IdempotencyRow[];
  readonly transfers: readonly TransferRow[];
  readonly accounts: readonly AccountRow[];
  readonly holds: readonly HoldRow[];
  readonly events: readonly EventRow[];
  /** The event id of every message in the stream, repeats included. */
  readonly streamMessageIds: readonly string[];
  readonly endpoints: readonly EndpointDeliveries[];
  readonly engines: readonly EngineRecords[];
  /** checkInvariants' answer on the database. */
  readonly invariantViolations: readonly string[];
  /** Processes that died unasked, faults that could not be injected. */
  readonly processProblems: readonly string[];
  readonly faults: readonly FaultSpan[];
}

/** The names of the checks; each violation belongs to one. */
export type CheckName =
  | "command-lost"
  | "command-doubled"
  | "command-answer"
  | "command-error"
  | "refusal-applied"
  | "idempotency-record"
  | "journal-unattributed"
  | "balance"
  | "invariant"
  | "outbox-unpublished"
  | "stream-missing"
  | "stream-duplicate"
  | "stream-unknown"
  | "webhook-lost"
  | "webhook-unexpected"
  | "webhook-rejected"
  | "billing-lost"
  | "billing-unexpected"
  | "billing-stored-twice"
  | "process";

export interface Violation {
  readonly check: CheckName;
  readonly detail: string;
}

/** Per endpoint or engine: what should have arrived and what did. */
export interface DeliveryFigures {
  readonly name: string;
  readonly expected: number;
  /** Distinct ids delivered (stored, for an engine). */
  readonly delivered: number;
  readonly lost: number;
  /** Arrivals beyond the first of an id: allowed (receivers and engines dedupe), reported. */
  readonly duplicates: number;
}

export interface CheckFigures {
  readonly commands: number;
  readonly applied: number;
  readonly refused: number;
  /** Commands whose retries ran out: the client never learned the outcome. */
  readonly unacknowledged: number;
  /** Of those, how many the journal shows applied (once: more would be a violation). */
  readonly unacknowledgedApplied: number;
  readonly errors: number;
  readonly attempts: number;
  /** Attempts beyond each command's first. */
  readonly retries: number;
  readonly retriedCommands: number;
  /** Commands whose counted answer was a replay: applied by an attempt whose answer was lost. */
  readonly replayed: number;
  /** Commands in flight at some moment of a fault window. */
  readonly underFault: number;
  readonly lost: number;
  readonly doubled: number;
  readonly journalRows: number;
  readonly events: number;
  readonly streamMessages: number;
  readonly endpoints: readonly DeliveryFigures[];
  readonly engines: readonly DeliveryFigures[];
}

export interface CheckResult {
  readonly ok: boolean;
  /** At most {@link VIOLATIONS_PER_CHECK_MAX} of each check; `violationCounts` has the totals. */
  readonly violations: readonly Violation[];
  readonly violationCounts: Readonly<Partial<Record<CheckName, number>>>;
  readonly figures: CheckFigures;
}

/** Violations listed per check; the rest are only counted. */
export const VIOLATIONS_PER_CHECK_MAX = 20;

/** The journal kind each command writes, found by the key in the row's metadata. */
const JOURNAL_KIND: Readonly<Record<Exclude<CommandKind, "release">, string>> = {
  deposit: "deposit",
  spend: "spend",
  transfer: "transfer",
  reserve: "reserve",
  capture: "capture",
};
/** Kinds whose row carries its own command's key; releases and expiries carry their hold's. */
const KEYED_KINDS: ReadonlySet<string> = new Set(Object.values(JOURNAL_KIND));
/** Usage the billing engines receive: spends and captures (the battery sends no refunds). */
const USAGE_KINDS: ReadonlySet<string> = new Set(["spend", "capture", "refund"]);
/** Journal kinds that credit or debit a wallet's posted balance, as invariant 1 counts them. */
const CREDIT_KINDS: ReadonlySet<string> = new Set(["deposit", "refund", "transfer", "grant"]);
const DEBIT_KINDS: ReadonlySet<string> = new Set(["spend", "capture", "transfer", "breakage"]);

/** Collects violations, listing a bounded number per check. */
function createViolations() {
  const listed: Violation[] = [];
  const counts: Partial<Record<CheckName, number>> = {};
  return {
    add(check: CheckName, detail: string) {
      const n = (counts[check] ?? 0) + 1;
      counts[check] = n;
      if (n <= VIOLATIONS_PER_CHECK_MAX) listed.push({ check, detail });
    },
    listed,
    counts,
  };
}
type Violations = ReturnType<typeof createViolations>;

/** Checks a run; `ok` is true only when no check found anything. */
export function checkRun(snapshot: RunSnapshot): CheckResult {
  const v = createViolations();
  const commandFigures = checkCommands(snapshot, v);
  checkBalances(snapshot, v);
  for (const violation of snapshot.invariantViolations) v.add("invariant", violation);
  for (const problem of snapshot.processProblems) v.add("process", problem);
  checkStream(snapshot, v);
  const endpoints = snapshot.endpoints.map((e) => checkEndpoint(snapshot, e, v));
  const engines = snapshot.engines.map((e) => checkEngine(snapshot, e, v));
  return {
    ok: v.listed.length === 0,
    violations: v.listed,
    violationCounts: v.counts,
    figures: {
      ...commandFigures,
      journalRows: snapshot.transfers.length,
      events: snapshot.events.length,
      streamMessages: snapshot.streamMessageIds.length,
      endpoints,
      engines,
    },
  };
}

type CommandFigures = Omit<CheckFigures, "journalRows" | "events" | "streamMessages" | "endpoints" | "engines">;

/** The journal rows that belong to each command: by key, and releases by hold. */
function indexJournal(transfers: readonly TransferRow[]) {
  const byKey = new Map<string, TransferRow[]>();
  const releasesByHold = new Map<string, TransferRow[]>();
  for (const t of transfers) {
    if (t.kind === "release" && t.holdId !== null) push(releasesByHold, t.holdId, t);
    else if (KEYED_KINDS.has(t.kind) && t.faultKey !== null) push(byKey, t.faultKey, t);
  }
  return { byKey, releasesByHold };
}

function push<K, T>(map: Map<K, T[]>, key: K, value: T): void {
  const list = map.get(key);
  if (list === undefined) map.set(key, [value]);
  else list.push(value);
}

function rowsOf(command: CommandRecord, journal: ReturnType<typeof indexJournal>): TransferRow[] {
  if (command.kind === "release") return journal.releasesByHold.get(command.holdId ?? "") ?? [];
  return (journal.byKey.get(command.key) ?? []).filter((t) => t.kind === JOURNAL_KIND[command.kind as Exclude<CommandKind, "release">]);
}

function checkCommands(snapshot: RunSnapshot, v: Violations): CommandFigures {
  const journal = indexJournal(snapshot.transfers);
  const records = new Map(snapshot.idempotency.map((r) => [r.key, r]));
  const counts = { applied: 0, refused: 0, unacknowledged: 0, unacknowledgedApplied: 0, errors: 0, lost: 0, doubled: 0 };
  const keys = new Set<string>();
  const releasedHolds = new Set<string>();
  for (const c of snapshot.commands) {
    if (keys.has(c.key)) v.add("command-error", `${c.key}: the client sent two commands with one key`);
    keys.add(c.key);
    if (c.kind === "release" && c.holdId !== null) releasedHolds.add(c.holdId);
    const rows = rowsOf(c, journal);
    if (rows.length > 1) {
      counts.doubled++;
      v.add("command-doubled", `${c.kind} ${c.key}: ${rows.length} journal rows (${rows.map((r) => r.transferId).join(", ")})`);
    }
    const record = records.get(c.key);
    switch (c.outcome) {
      case "applied":
        counts.applied++;
        if (rows.length === 0) {
          counts.lost++;
          v.add("command-lost", `${c.kind} ${c.key}: acknowledged, but no journal row`);
        } else if (c.transferId !== null && rows[0]!.transferId !== c.transferId) {
          v.add("command-answer", `${c.kind} ${c.key}: the client was told ${c.transferId}, the journal has ${rows[0]!.transferId}`);
        }
        if (record?.ok !== true || (c.transferId !== null && record.transferId !== c.transferId)) {
          v.add("idempotency-record", `${c.kind} ${c.key}: acknowledged, but its idempotency record is ${describeRecord(record)}`);
        }
        break;
      case "refused":
        counts.refused++;
        if (rows.length > 0) v.add("refusal-applied", `${c.kind} ${c.key}: refused (${c.detail}), yet ${rows.length} journal row(s)`);
        if (record !== undefined && (record.ok !== false || record.reason !== c.detail)) {
          v.add("idempotency-record", `${c.kind} ${c.key}: refused ${c.detail}, but its idempotency record is ${describeRecord(record)}`);
        }
        break;
      case "unknown":
        counts.unacknowledged++;
        if (rows.length > 0) counts.unacknowledgedApplied++;
        break;
      case "error":
        counts.errors++;
        v.add("command-error", `${c.kind} ${c.key}: ${c.detail}`);
        break;
    }
  }
  checkUnattributed(snapshot, keys, releasedHolds, v);
  const attempts = snapshot.commands.reduce((sum, c) => sum + c.attempts, 0);
  return {
    commands: snapshot.commands.length,
    ...counts,
    attempts,
    retries: attempts - snapshot.commands.length,
    retriedCommands: snapshot.commands.filter((c) => c.attempts > 1).length,
    replayed: snapshot.commands.filter((c) => c.replayed).length,
    underFault: snapshot.commands.filter((c) => snapshot.faults.some((f) => c.startedAtMs <= f.endMs && c.endedAtMs >= f.startMs)).length,
  };
}

function describeRecord(record: IdempotencyRow | undefined): string {
  return record === undefined ? "missing" : `ok=${record.ok} reason=${record.reason} transfer=${record.transferId}`;
}

/** Journal rows and idempotency records that no command of the run accounts for. */
function checkUnattributed(snapshot: RunSnapshot, keys: ReadonlySet<string>, releasedHolds: ReadonlySet<string>, v: Violations): void {
  for (const t of snapshot.transfers) {
    if (t.kind === "release") {
      if (t.holdId === null || !releasedHolds.has(t.holdId)) v.add("journal-unattributed", `release ${t.transferId} of hold ${t.holdId}: no release command`);
    } else if (KEYED_KINDS.has(t.kind) && (t.faultKey === null || !keys.has(t.faultKey))) {
      v.add("journal-unattributed", `${t.kind} ${t.transferId}: key ${t.faultKey} belongs to no command`);
    }
  }
  for (const r of snapshot.idempotency) {
    if (!keys.has(r.key)) v.add("journal-unattributed", `idempotency record ${r.key}: no command sent it`);
  }
}

/** Each account's stored columns against the sums of its journal rows and pending holds. */
function checkBalances(snapshot: RunSnapshot, v: Violations): void {
  const sums = new Map<string, { credits: bigint; debits: bigint; pending: bigint }>();
  const at = (walletId: string, asset: string) => {
    const id = `${walletId} ${asset}`;
    let s = sums.get(id);
    if (s === undefined) sums.set(id, (s = { credits: 0n, debits: 0n, pending: 0n }));
    return s;
  };
  for (const t of snapshot.transfers) {
    if (CREDIT_KINDS.has(t.kind) && !t.creditWalletId.startsWith("@")) at(t.creditWalletId, t.asset).credits += t.amount;
    if (DEBIT_KINDS.has(t.kind) && !t.debitWalletId.startsWith("@")) at(t.debitWalletId, t.asset).debits += t.amount;
  }
  for (const h of snapshot.holds) if (h.status === "pending") at(h.walletId, h.asset).pending += h.amount;
  const stored = new Set<string>();
  for (const a of snapshot.accounts) {
    const id = `${a.walletId} ${a.asset}`;
    stored.add(id);
    const s = sums.get(id) ?? { credits: 0n, debits: 0n, pending: 0n };
    if (s.credits !== a.creditsPosted || s.debits !== a.debitsPosted || s.pending !== a.debitsPending) {
      v.add("balance", `${id}: stored ${a.creditsPosted}/${a.debitsPosted}/${a.debitsPending}, journal ${s.credits}/${s.debits}/${s.pending} (credits/debits/pending)`);
    }
  }
  for (const id of sums.keys()) if (!stored.has(id)) v.add("balance", `${id}: journal rows but no account`);
}

/** Exactly one stream message per outbox row. */
function checkStream(snapshot: RunSnapshot, v: Violations): void {
  const outbox = new Set(snapshot.events.map((e) => e.eventId));
  const counts = countIds(snapshot.streamMessageIds);
  for (const e of snapshot.events) {
    if (!e.published) v.add("outbox-unpublished", `${e.type} ${e.eventId}: never marked published`);
    if (!counts.has(e.eventId)) v.add("stream-missing", `${e.type} ${e.eventId}: in the outbox, not in the stream`);
  }
  for (const [id, n] of counts) {
    if (n > 1) v.add("stream-duplicate", `${id}: ${n} messages in the stream`);
    if (!outbox.has(id)) v.add("stream-unknown", `${id}: in the stream, not in the outbox`);
  }
}

function countIds(ids: Iterable<string>): Map<string, number> {
  const counts = new Map<string, number>();
  for (const id of ids) counts.set(id, (counts.get(id) ?? 0) + 1);
  return counts;
}

/** Every event the endpoint subscribes to, delivered at least once; nothing else. */
function checkEndpoint(snapshot: RunSnapshot, endpoint: EndpointDeliveries, v: Violations): DeliveryFigures {
  const expected = snapshot.events.filter((e) => endpoint.typePrefix === null || e.type.startsWith(endpoint.typePrefix));
  const ids = new Set(expected.map((e) => e.eventId));
  let lost = 0;
  for (const e of expected) {
    if (!endpoint.deliveries.has(e.eventId)) {
      lost++;
      v.add("webhook-lost", `${endpoint.name}: ${e.type} ${e.eventId} never delivered`);
    }
  }
  let duplicates = 0;
  for (const [id, n] of endpoint.deliveries) {
    duplicates += n - 1;
    if (!ids.has(id)) v.add("webhook-unexpected", `${endpoint.name}: ${id} delivered, but it is no event of this endpoint`);
  }
  if (endpoint.rejected > 0) v.add("webhook-rejected", `${endpoint.name}: ${endpoint.rejected} request(s) failed signature verification`);
  return { name: endpoint.name, expected: expected.length, delivered: endpoint.deliveries.size, lost, duplicates };
}

/** Every usage transfer stored once by the engine; nothing else. */
function checkEngine(snapshot: RunSnapshot, engine: EngineRecords, v: Violations): DeliveryFigures {
  const expected = snapshot.transfers.filter((t) => USAGE_KINDS.has(t.kind));
  const ids = new Set(expected.map((t) => t.transferId));
  let lost = 0;
  for (const t of expected) {
    if (!engine.stored.has(t.transferId)) {
      lost++;
      v.add("billing-lost", `${engine.name}: ${t.kind} ${t.transferId} never stored`);
    }
  }
  for (const [key, n] of engine.stored) {
    if (n > 1) v.add("billing-stored-twice", `${engine.name}: ${key} stored ${n} times`);
    if (!ids.has(key)) v.add("billing-unexpected", `${engine.name}: ${key} stored, but it is no usage transfer`);
  }
  let duplicates = 0;
  for (const [key, n] of engine.seen) if (ids.has(key)) duplicates += n - 1;
  return { name: engine.name, expected: expected.length, delivered: engine.stored.size, lost, duplicates };
}
