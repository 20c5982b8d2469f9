/**
 * The fault battery: for each scenario, a fresh database on the run's private PostgreSQL, a
 * private NATS (one server, or a three-node cluster with the stream at three replicas), the
 * ledger and the three workers as processes, two webhook receivers and three billing-engine
 * stand-ins; clients send commands while the faults are injected; then the battery waits until
 * everything has arrived, stops the processes, reads back every store and checks it
 * (checker.ts), and proves the checker can fail (negative-control.ts).
 *
 * @module
 */
import { execFile } from "node:child_process";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { promisify } from "node:util";

import pino from "pino";
import type pg from "pg";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { readNatsConfig } from "@holdfast/common/config";
import { createPool } from "@holdfast/common/pg";
import { migrate } from "@holdfast/db/migrate";
import { WebhookService } from "@holdfast/gen/holdfast/v1/webhooks_pb";
import { createApiKey, createTenant } from "@holdfast/ledger/auth/api-keys";
import { createFakeEngine, sinkConfigs, SINK_ENV, type EngineType, type FakeEngine } from "@holdfast/testing/billing-engines";
import { startWebhookReceiver, type WebhookReceiver } from "@holdfast/testing/webhook-receiver";

import { checkRun, type CheckResult, type RunSnapshot } from "./checker.js";
import { readDatabase, readStreamEventIds } from "./collect.js";
import { runFaultSchedule, type FaultWindow } from "./faults.js";
import { createLedgerCaller, createRandom, OPENING_FUNDS, planDeposit, runClient, runCommand, walletIds, type CommandRecord } from "./load.js";
import { runNegativeControl, type NegativeControlResult } from "./negative-control.js";
import { validateSettings, type BatterySettings, type ScenarioSettings } from "./settings.js";
import {
  answersOk,
  createHoldfastProcesses,
  startClusterNats,
  startPrivatePostgres,
  startSingleNats,
  type HoldfastProcesses,
  type NatsTopology,
  type PrivatePostgres,
} from "./stack.js";
import type { UnexpectedExit } from "./processes.js";

/** The engines the billing-stream worker feeds: one that answers a repeat 400 (Stripe), two that accept it. */
const ENGINE_TYPES: readonly EngineType[] = ["stripe", "openmeter", "http"];
const ALL_ENGINE_TYPES: readonly EngineType[] = ["stripe", "openmeter", "lago", "metronome", "http"];
/** The webhook endpoints: every event, and hold events only (a filtered endpoint). */
const ENDPOINTS = [
  { name: "all-events", eventTypes: [] as string[], typePrefix: null },
  { name: "hold-events", eventTypes: ["holdfast.hold.*"], typePrefix: "holdfast.hold." },
] as const;
const POOL_MAX = 4;
const POOL_CONNECT_TIMEOUT_MS = 5000;
/** The snapshot reads and the invariant check scan whole tables: minutes, not the service's 5 s. */
const POOL_STATEMENT_TIMEOUT_MS = 300_000;
const QUIESCE_POLL_MS = 250;
const SETUP_CALL_TIMEOUT_MS = 30_000;
const LOG_LEVEL = "warn";
/** Load goes on this long after the last fault has recovered. */
const LOAD_AFTER_FAULTS_MS = 2000;
/** However slow the faults' recovery, the load stops this long after its planned end. */
const LOAD_OVERRUN_MS_MAX = 10 * 60_000;

/** What happened in one scenario. */
export interface ScenarioReport {
  readonly settings: ScenarioSettings;
  readonly faults: readonly FaultWindow[];
  readonly result: CheckResult;
  readonly negativeControl: NegativeControlResult;
  /** False when the wait for every event, webhook and usage record timed out (the checker says what is missing). */
  readonly quiesced: boolean;
  readonly loadMsActual: number;
  readonly quiesceMs: number;
  /** The run's snapshot, for callers that want to doctor it further. */
  readonly snapshot: RunSnapshot;
}

/** The machine the figures come from. */
export interface MachineFacts {
  readonly cores: number;
  /** The one-minute load average when the run began: other work on the machine slows everything. */
  readonly loadAverage: number;
  readonly cpuModel: string;
  readonly memoryGb: number;
  readonly node: string;
  readonly natsServer: string;
  readonly postgres: string;
}

export interface BatteryReport {
  readonly ok: boolean;
  readonly settings: BatterySettings;
  readonly machine: MachineFacts;
  readonly scenarios: readonly ScenarioReport[];
  readonly durationMs: number;
  /** Where the processes' logs are (kept when the run failed or when asked to). */
  readonly logDir: string;
}

export interface BatteryOptions {
  /** Progress lines for a person (the CLI prints them; the test stays quiet). */
  readonly onProgress?: (line: string) => void;
  /** Keep the logs even when the run passes. */
  readonly keepLogs?: boolean;
}

/** Runs every scenario of `settings` on one private PostgreSQL; never touches the machine's own servers. */
export async function runBattery(settings: BatterySettings, options: BatteryOptions = {}): Promise<BatteryReport> {
  validateSettings(settings);
  const progress = options.onProgress ?? (() => undefined);
  const startedMs = Date.now();
  const logDir = await mkdtemp(path.join(os.tmpdir(), "holdfast-faults-"));
  progress(`logs in ${logDir}`);
  const postgres = await startPrivatePostgres();
  const scenarios: ScenarioReport[] = [];
  let machine: MachineFacts;
  try {
    progress(`private PostgreSQL at ${postgres.adminUrl}`);
    machine = await machineFacts(postgres.adminUrl);
    for (const scenario of settings.scenarios) {
      scenarios.push(await runScenario(scenario, settings, postgres, logDir, progress));
    }
  } finally {
    await postgres.stop();
  }
  const ok = scenarios.every((s) => s.result.ok && s.negativeControl.ok && s.quiesced);
  if (ok && options.keepLogs !== true) await rm(logDir, { recursive: true, force: true });
  return { ok, settings, machine, scenarios, durationMs: Date.now() - startedMs, logDir };
}

/** Everything a scenario starts, so that one `finally` can stop it all. */
interface ScenarioParts {
  nats?: NatsTopology;
  processes?: HoldfastProcesses;
  receivers: WebhookReceiver[];
  engines: FakeEngine[];
  pool?: pg.Pool;
}

async function runScenario(
  scenario: ScenarioSettings,
  settings: BatterySettings,
  postgres: PrivatePostgres,
  logDir: string,
  progress: (line: string) => void,
): Promise<ScenarioReport> {
  progress(`scenario ${scenario.name}: ${scenario.loadMs / 1000} s of load at ${scenario.ratePerSecond}/s, faults: ${scenario.faults.join(", ") || "none"}`);
  const parts: ScenarioParts = { receivers: [], engines: [] };
  const crashes: UnexpectedExit[] = [];
  try {
    const setup = await setUpScenario(scenario, postgres, logDir, parts, crashes);
    const commands: CommandRecord[] = [];
    await openWallets(setup, scenario, commands);
    const { faults, loadMsActual } = await loadUnderFaults(setup, scenario, settings.seed, postgres, commands);
    for (const f of faults) progress(`  ${f.target} (${f.subject}): down and back in ${f.endMs - f.startMs} ms${f.error ? `, FAILED: ${f.error}` : ""}`);
    const quiesceStartMs = Date.now();
    // Settled with every process running, then again once the expiry worker has stopped: a
    // hold falling due between the first check and the stop is expired by the worker, and its
    // event must be delivered before the rest stop, or the run would count it as lost.
    let quiesced = await quiesce(setup, parts, settings.quiesceTimeoutMs, { holdsDue: true });
    await setup.processes.workers["hold-expiry"].stop();
    quiesced = quiesced && (await quiesce(setup, parts, settings.quiesceTimeoutMs, { holdsDue: false }));
    const quiesceMs = Date.now() - quiesceStartMs;
    progress(`  load done in ${loadMsActual} ms, ${commands.length} commands; ${quiesced ? "settled" : "NOT settled"} after ${quiesceMs} ms`);
    // Stopped before reading back, so that nothing changes under the snapshot.
    for (const p of [...Object.values(setup.processes.workers), setup.processes.ledger]) await p.stop();
    const snapshot = await takeSnapshot(setup, parts, commands, faults, crashes);
    const result = checkRun(snapshot);
    const negativeControl = runNegativeControl(snapshot);
    progress(`  checker: ${result.ok ? "ok" : "FAILED"}; negative control: ${negativeControl.ok ? "ok" : "FAILED"}`);
    return { settings: scenario, faults, result, negativeControl, quiesced, loadMsActual, quiesceMs, snapshot };
  } finally {
    await tearDown(parts);
  }
}

/**
 * The clients and the fault schedule together. The load lasts `loadMs`, and in any case until a
 * while after the last fault has recovered, so that every fault (even one slow to recover from)
 * happens under load; never longer than {@link LOAD_OVERRUN_MS_MAX} past its planned end.
 */
async function loadUnderFaults(
  setup: ScenarioSetup,
  scenario: ScenarioSettings,
  seed: number,
  postgres: PrivatePostgres,
  commands: CommandRecord[],
): Promise<{ faults: FaultWindow[]; loadMsActual: number }> {
  const loadStartMs = Date.now();
  const plannedEndMs = loadStartMs + scenario.loadMs;
  const ctx = { postgres, nats: setup.nats, processes: setup.processes, ledgerReady: setup.ledgerReady, streamName: setup.streamName, downMs: scenario.downMs };
  let faultsDoneMs = Number.POSITIVE_INFINITY;
  const done = () => Date.now() >= Math.min(Math.max(plannedEndMs, faultsDoneMs + LOAD_AFTER_FAULTS_MS), plannedEndMs + LOAD_OVERRUN_MS_MAX);
  const [faults] = await Promise.all([
    runFaultSchedule(scenario.faults, ctx, loadStartMs, scenario.loadMs).finally(() => {
      faultsDoneMs = Date.now();
    }),
    runLoad(setup, scenario, seed, done, commands),
  ]);
  return { faults, loadMsActual: Date.now() - loadStartMs };
}

/** The servers, processes, receivers and engines of a scenario, started, and its tenant and keys. */
interface ScenarioSetup {
  readonly pool: pg.Pool;
  readonly tenantId: string;
  readonly writerKey: string;
  readonly adminKey: string;
  readonly nats: NatsTopology;
  readonly streamName: string;
  readonly processes: HoldfastProcesses;
  readonly ledgerReady: () => Promise<boolean>;
  readonly receivers: readonly WebhookReceiver[];
  readonly engines: readonly FakeEngine[];
}

async function setUpScenario(
  scenario: ScenarioSettings,
  postgres: PrivatePostgres,
  logDir: string,
  parts: ScenarioParts,
  crashes: UnexpectedExit[],
): Promise<ScenarioSetup> {
  const databaseUrl = await postgres.createDatabase(`faults_${scenario.name}`);
  const quiet = pino({ level: "silent" });
  const pool = createPool({ databaseUrl, pgPoolMax: POOL_MAX, pgConnectTimeoutMs: POOL_CONNECT_TIMEOUT_MS, pgStatementTimeoutMs: POOL_STATEMENT_TIMEOUT_MS }, quiet, { applicationName: "holdfast-faults" });
  parts.pool = pool;
  await migrate(pool);
  const { tenantId } = await createTenant(pool, "faults");
  const writerKey = (await createApiKey(pool, { tenantId, name: "faults writer", role: "writer" })).secret;
  const adminKey = (await createApiKey(pool, { tenantId, name: "faults admin", role: "admin" })).secret;
  const nats = await (scenario.name === "cluster" ? startClusterNats() : startSingleNats());
  parts.nats = nats;
  for (const type of ENGINE_TYPES) {
    const engine = createFakeEngine(type);
    await engine.start();
    parts.engines.push(engine);
  }
  const billingConfigPath = path.join(logDir, `billing-${scenario.name}.json`);
  // sinkConfigs describes all five engines; the ones the run does not start are left out.
  const fakes = Object.fromEntries(ALL_ENGINE_TYPES.map((t) => [t, parts.engines.find((e) => e.type === t) ?? createFakeEngine(t)]));
  const allSinks = sinkConfigs(fakes as Record<EngineType, FakeEngine>);
  await writeFile(billingConfigPath, JSON.stringify({ ...allSinks, sinks: allSinks.sinks.filter((s) => ENGINE_TYPES.includes(s.type as EngineType)) }));
  const sinkSecrets = Object.fromEntries(Object.entries(SINK_ENV).filter(([name]) => ENGINE_TYPES.some((t) => name === `TEST_${t.toUpperCase()}_KEY`)));
  const processes = await createHoldfastProcesses(
    { databaseUrl, nats, billingConfigPath, sinkSecrets, logDir: await scenarioLogDir(logDir, scenario.name), logLevel: LOG_LEVEL },
    (exit) => crashes.push(exit),
  );
  parts.processes = processes;
  for (const p of processes.all) await p.start();
  for (const _ of ENDPOINTS) parts.receivers.push(await startWebhookReceiver());
  const ledgerReady = () => answersOk(`${processes.ledgerUrl}/readyz`);
  const setup = { pool, tenantId, writerKey, adminKey, nats, streamName: readNatsConfig({}).streamName, processes, ledgerReady, receivers: parts.receivers, engines: parts.engines };
  await createEndpoints(setup);
  return setup;
}

async function scenarioLogDir(logDir: string, name: string): Promise<string> {
  const dir = path.join(logDir, name);
  await mkdir(dir, { recursive: true });
  return dir;
}

/** Registers the endpoints over the API, as a customer would, and hands each receiver its secret. */
async function createEndpoints(setup: ScenarioSetup): Promise<void> {
  const webhooks = createClient(WebhookService, createGrpcTransport({ baseUrl: setup.processes.ledgerUrl }));
  const headers = { authorization: `Bearer ${setup.adminKey}` };
  for (const [i, endpoint] of ENDPOINTS.entries()) {
    const receiver = setup.receivers[i]!;
    const created = await webhooks.createEndpoint(
      { url: receiver.url, eventTypes: [...endpoint.eventTypes], description: `fault battery: ${endpoint.name}` },
      { headers, timeoutMs: SETUP_CALL_TIMEOUT_MS },
    );
    receiver.secrets = [created.secret];
  }
}

/** Creates the wallets (with the Stripe customer the billing sink maps them to) and funds them. */
async function openWallets(setup: ScenarioSetup, scenario: ScenarioSettings, commands: CommandRecord[]): Promise<void> {
  const caller = createLedgerCaller(setup.processes.ledgerUrl, setup.writerKey);
  for (const walletId of walletIds(scenario.wallets)) {
    await caller.client.createWallet({ walletId, metadata: { stripe_customer_id: `cus_${walletId}` } }, { headers: caller.headers, timeoutMs: SETUP_CALL_TIMEOUT_MS });
    const record = await runCommand(caller, planDeposit(walletId, OPENING_FUNDS));
    if (record.outcome !== "applied") throw new Error(`could not fund ${walletId}: ${record.outcome} ${record.detail}`);
    commands.push(record);
  }
}

/** The clients, each with its own connection and its own seeded command mix. */
async function runLoad(setup: ScenarioSetup, scenario: ScenarioSettings, seed: number, done: () => boolean, commands: CommandRecord[]): Promise<void> {
  const wallets = walletIds(scenario.wallets);
  const intervalMs = (1000 * scenario.clients) / scenario.ratePerSecond;
  await Promise.all(
    Array.from({ length: scenario.clients }, (_, i) =>
      runClient({
        caller: createLedgerCaller(setup.processes.ledgerUrl, setup.writerKey),
        wallets,
        random: createRandom(seed * 1000 + i),
        intervalMs,
        done,
        sink: commands,
      }),
    ),
  );
}

/**
 * Waits until nothing is left in flight: no hold past its expiry, no unpublished event, every
 * event at each endpoint it subscribes to and every usage record at each engine. Bounded: on
 * timeout the checker reports what is missing.
 */
/**
 * Waits until everything the ledger wrote has reached every endpoint and engine. With
 * `holdsDue`, also until no pending hold is due within 2 s (the expiry worker is running and
 * will expire the short-lived ones of the load; the long ones are due in minutes); without,
 * once that worker has stopped, holds falling due are left alone.
 */
async function quiesce(setup: ScenarioSetup, parts: ScenarioParts, timeoutMs: number, { holdsDue }: { holdsDue: boolean }): Promise<boolean> {
  const deadlineMs = Date.now() + timeoutMs;
  while (Date.now() < deadlineMs) {
    const { rows } = await setup.pool.query<{ due: number; unpublished: number; events: number; hold_events: number; usage: number }>(
      `select (select count(*)::int from holds where tenant_id = $1 and status = 'pending' and expires_at <= now() + interval '2 seconds') as due,
              (select count(*)::int from events where tenant_id = $1 and published_at is null) as unpublished,
              (select count(*)::int from events where tenant_id = $1) as events,
              (select count(*)::int from events where tenant_id = $1 and starts_with(type, 'holdfast.hold.')) as hold_events,
              (select count(*)::int from transfers where tenant_id = $1 and kind in ('spend', 'capture', 'refund')) as usage`,
      [setup.tenantId],
    ).catch(() => ({ rows: [] }));
    const state = rows[0];
    if (
      state !== undefined && (!holdsDue || state.due === 0) && state.unpublished === 0 &&
      parts.receivers[0]!.deliveries.size >= state.events && parts.receivers[1]!.deliveries.size >= state.hold_events &&
      parts.engines.every((e) => e.stored.size >= state.usage)
    ) {
      return true;
    }
    await sleep(QUIESCE_POLL_MS);
  }
  return false;
}

async function takeSnapshot(
  setup: ScenarioSetup,
  parts: ScenarioParts,
  commands: CommandRecord[],
  faults: readonly FaultWindow[],
  crashes: readonly UnexpectedExit[],
): Promise<RunSnapshot> {
  const database = await readDatabase(setup.pool, setup.tenantId);
  const streamMessageIds = await readStreamEventIds(setup.nats.urls, setup.streamName);
  return {
    ...database,
    commands,
    streamMessageIds,
    endpoints: ENDPOINTS.map((e, i) => ({ name: e.name, typePrefix: e.typePrefix, deliveries: new Map(parts.receivers[i]!.deliveries), rejected: parts.receivers[i]!.rejected })),
    engines: parts.engines.map((e) => ({ name: e.type, stored: new Map(e.storedCount), seen: new Map(e.seen) })),
    processProblems: [
      ...crashes.map((c) => `${c.name} exited by itself (code ${c.code}, signal ${c.signal}); restarted like a supervisor would`),
      ...faults.filter((f) => f.error !== null).map((f) => `fault ${f.target} failed: ${f.error}`),
    ],
    faults,
  };
}

async function tearDown(parts: ScenarioParts): Promise<void> {
  for (const p of parts.processes?.all ?? []) await p.kill("SIGKILL").catch(() => undefined);
  for (const r of parts.receivers) await r.stop().catch(() => undefined);
  for (const e of parts.engines) await e.stop().catch(() => undefined);
  await parts.nats?.close().catch(() => undefined);
  await parts.pool?.end().catch(() => undefined);
}

async function machineFacts(adminUrl: string): Promise<MachineFacts> {
  const exec = promisify(execFile);
  const natsServer = await exec("nats-server", ["--version"]).then((r) => r.stdout.trim(), () => "unknown");
  const pool = createPool({ databaseUrl: adminUrl, pgPoolMax: 1, pgConnectTimeoutMs: POOL_CONNECT_TIMEOUT_MS, pgStatementTimeoutMs: POOL_CONNECT_TIMEOUT_MS }, pino({ level: "silent" }));
  const postgresVersion = await pool
    .query<{ version: string }>("select current_setting('server_version') as version")
    .then((r) => `PostgreSQL ${r.rows[0]?.version ?? "?"}`, () => "unknown");
  await pool.end();
  const cpus = os.cpus();
  return {
    cores: cpus.length,
    loadAverage: Math.round(os.loadavg()[0]! * 10) / 10,
    cpuModel: cpus[0]?.model.trim() ?? "unknown",
    memoryGb: Math.round(os.totalmem() / 2 ** 30),
    node: process.version,
    natsServer,
    postgres: postgresVersion,
  };
}
