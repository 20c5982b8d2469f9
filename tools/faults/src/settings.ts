/**
 * What a fault battery run does: how long each scenario sends load, how hard, over how many
 * wallets, and which faults it injects. Two presets: {@link FULL_SETTINGS} for `npm run faults`
 * and {@link CI_SETTINGS} for the run inside the test suite, which must finish in about a
 * minute and a half on a loaded two-core machine.
 *
 * @module
 */

/** A component the battery kills (or, for PostgreSQL, stops in immediate mode) and restarts. */
export type FaultTarget =
  | "ledger"
  | "postgres"
  | "nats"
  | "nats-node"
  | "webhooks"
  | "billing-stream"
  | "hold-expiry";

/** Every target of the single-server scenario, in the order one round injects them. */
export const SINGLE_SERVER_FAULTS: readonly FaultTarget[] = ["ledger", "postgres", "nats", "webhooks", "billing-stream", "hold-expiry"];

/** The two scenarios: one nats-server, or a three-node cluster with the stream at three replicas. */
export type ScenarioName = "single" | "cluster";

/** One scenario: the load and the faults injected while it runs. */
export interface ScenarioSettings {
  readonly name: ScenarioName;
  /** How long the clients send commands at least; they go on until the last fault has recovered. */
  readonly loadMs: number;
  /** Concurrent clients; each sends one command at a time. */
  readonly clients: number;
  /** Commands per second of all clients together (each client is paced to its share). */
  readonly ratePerSecond: number;
  /** Wallets the commands are spread over; every client uses all of them. */
  readonly wallets: number;
  /** The faults, injected one after another, evenly spread over the load. */
  readonly faults: readonly FaultTarget[];
  /** How long a killed component stays down before it is started again. */
  readonly downMs: number;
}

/** A whole battery run. */
export interface BatterySettings {
  readonly scenarios: readonly ScenarioSettings[];
  /** Seeds the command mix, so two runs send the same sequence of commands per client. */
  readonly seed: number;
  /** Longest wait, after the load, for every event, webhook and usage record to arrive. */
  readonly quiesceTimeoutMs: number;
}

/** Bounds that keep a hand-written setting from turning into an endless run. */
export const LOAD_MS_MAX = 30 * 60_000;
export const CLIENTS_COUNT_MAX = 256;
export const RATE_PER_SECOND_MAX = 10_000;
export const WALLETS_COUNT_MAX = 10_000;
export const FAULTS_COUNT_MAX = 200;
export const DOWN_MS_MAX = 60_000;
export const QUIESCE_TIMEOUT_MS_MAX = 10 * 60_000;

/** Repeats the single-server round `rounds` times. */
export function singleServerFaults(rounds: number): FaultTarget[] {
  return Array.from({ length: rounds }, () => SINGLE_SERVER_FAULTS).flat();
}

/** `npm run faults`: three rounds of every fault, then two node kills on the cluster. */
export const FULL_SETTINGS: BatterySettings = {
  seed: 11,
  quiesceTimeoutMs: 180_000,
  scenarios: [
    { name: "single", loadMs: 90_000, clients: 16, ratePerSecond: 250, wallets: 48, faults: singleServerFaults(3), downMs: 1500 },
    { name: "cluster", loadMs: 45_000, clients: 16, ratePerSecond: 200, wallets: 48, faults: ["nats-node", "nats-node"], downMs: 5000 },
  ],
};

/** The test suite's run: one round of every fault, one node kill on the cluster. */
export const CI_SETTINGS: BatterySettings = {
  seed: 11,
  quiesceTimeoutMs: 90_000,
  scenarios: [
    { name: "single", loadMs: 14_000, clients: 8, ratePerSecond: 80, wallets: 12, faults: singleServerFaults(1), downMs: 800 },
    { name: "cluster", loadMs: 6000, clients: 8, ratePerSecond: 80, wallets: 12, faults: ["nats-node"], downMs: 2000 },
  ],
};

/** Throws naming the first setting outside its bounds. */
export function validateSettings(settings: BatterySettings): void {
  const within = (what: string, value: number, min: number, max: number) => {
    if (!Number.isFinite(value) || value < min || value > max) throw new Error(`${what} must be ${min}-${max}, not ${value}`);
  };
  within("quiesceTimeoutMs", settings.quiesceTimeoutMs, 1000, QUIESCE_TIMEOUT_MS_MAX);
  for (const s of settings.scenarios) {
    within(`${s.name}.loadMs`, s.loadMs, 1000, LOAD_MS_MAX);
    within(`${s.name}.clients`, s.clients, 1, CLIENTS_COUNT_MAX);
    within(`${s.name}.ratePerSecond`, s.ratePerSecond, 1, RATE_PER_SECOND_MAX);
    within(`${s.name}.wallets`, s.wallets, 2, WALLETS_COUNT_MAX);
    within(`${s.name}.faults`, s.faults.length, 0, FAULTS_COUNT_MAX);
    within(`${s.name}.downMs`, s.downMs, 0, DOWN_MS_MAX);
    // "nats" kills the one server of the single scenario, "nats-node" one node of the cluster.
    const misplaced = s.faults.find((f) => (f === "nats" && s.name === "cluster") || (f === "nats-node" && s.name === "single"));
    if (misplaced !== undefined) throw new Error(`fault ${misplaced} does not belong to the ${s.name} scenario`);
  }
}
