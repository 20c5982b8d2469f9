/**
 * A NATS cluster on loopback for tests and the fault battery: several nats-server processes
 * (from PATH) with JetStream, joined by routes on loopback ports, the way production runs NATS
 * (three servers, streams at three replicas). Each node has its own client, route and
 * monitoring ports and its own store folder, so one node can be killed and started again while
 * the others keep serving; nothing touches a server the caller did not start.
 *
 * @module
 */
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";

import { restartablePort } from "@holdfast/common/net";

/** Three nodes: the smallest cluster that keeps a quorum when one is lost. */
const NODES_COUNT_DEFAULT = 3;
const NODES_COUNT_MAX = 9;
/** How long a node may take to answer its health check after a start. */
const START_TIMEOUT_MS_DEFAULT = 30_000;
const READY_POLL_MS = 100;
/** How long one health probe may take. */
const HEALTH_PROBE_TIMEOUT_MS = 1000;
const HOST = "127.0.0.1";
const CLUSTER_NAME = "holdfast-test";

/** What {@link startNatsCluster} takes; everything is optional. */
export interface NatsClusterOptions {
  /** Nodes in the cluster (1-9); 3 by default. */
  readonly size?: number;
  /** How long each node may take to become healthy. */
  readonly startTimeoutMs?: number;
}

/** One node of the cluster. */
export interface NatsClusterNode {
  /** The server's name in the cluster (`n1`, `n2`, ...), as JetStream reports peers and leaders. */
  readonly name: string;
  /** Client URL, `nats://127.0.0.1:<port>`. */
  readonly url: string;
  readonly port: number;
  readonly routePort: number;
  readonly monitorPort: number;
  /** True while the node's process runs. */
  running(): boolean;
  /** Starts the node (again) on the same ports and store, and resolves once it is healthy. */
  start(): Promise<void>;
  /** Stops the node: SIGTERM by default; SIGKILL to have it die without a word to anyone. */
  stop(signal?: NodeJS.Signals): Promise<void>;
}

/** A running cluster; `close` stops every node and removes their stores. */
export interface NatsCluster {
  readonly nodes: readonly NatsClusterNode[];
  /** Every node's client URL, for clients that take a server list. */
  readonly urls: readonly string[];
  /** The node called `name`, e.g. the stream leader JetStream names. */
  node(name: string): NatsClusterNode | undefined;
  close(): Promise<void>;
}

/** Ports of one node, chosen before any node starts so that every node can route to all others. */
interface NodePorts {
  readonly name: string;
  readonly port: number;
  readonly routePort: number;
  readonly monitorPort: number;
}

/**
 * Starts `size` nats-server processes with JetStream, each routing to all the others, and
 * resolves once every node answers its `/healthz` (JetStream included), so a stream at full
 * replication can be created right away.
 */
export async function startNatsCluster(options: NatsClusterOptions = {}): Promise<NatsCluster> {
  const size = options.size ?? NODES_COUNT_DEFAULT;
  if (!Number.isInteger(size) || size < 1 || size > NODES_COUNT_MAX) {
    throw new Error(`a NATS cluster has 1-${NODES_COUNT_MAX} nodes, not ${size}`);
  }
  const startTimeoutMs = options.startTimeoutMs ?? START_TIMEOUT_MS_DEFAULT;
  const ports: NodePorts[] = [];
  for (let i = 1; i <= size; i++) {
    ports.push({ name: `n${i}`, port: await restartablePort(HOST), routePort: await restartablePort(HOST), monitorPort: await restartablePort(HOST) });
  }
  const storeRoot = await mkdtemp(join(tmpdir(), "holdfast-nats-cluster-"));
  const nodes = ports.map((p) => createNode(p, ports, join(storeRoot, p.name), startTimeoutMs));
  const close = async (): Promise<void> => {
    await Promise.all(nodes.map((n) => n.stop()));
    await rm(storeRoot, { recursive: true, force: true });
  };
  try {
    // Together: a node's JetStream waits for a quorum of peers before it reports healthy.
    await Promise.all(nodes.map((n) => n.start()));
  } catch (err) {
    await close();
    throw err;
  }
  return { nodes, urls: nodes.map((n) => n.url), node: (name) => nodes.find((n) => n.name === name), close };
}

function createNode(own: NodePorts, all: readonly NodePorts[], storeDir: string, startTimeoutMs: number): NatsClusterNode {
  const routes = all.filter((p) => p.name !== own.name).map((p) => `nats://${HOST}:${p.routePort}`).join(",");
  const args = [
    "-js", "-a", HOST, "-p", String(own.port), "-m", String(own.monitorPort), "-sd", storeDir,
    "--server_name", own.name, "--cluster_name", CLUSTER_NAME,
    "--cluster", `nats://${HOST}:${own.routePort}`, "--routes", routes,
  ];
  let child: ChildProcess | null = null;
  const isRunning = (c: ChildProcess | null): c is ChildProcess => c !== null && c.exitCode === null && c.signalCode === null;
  return {
    ...own,
    url: `nats://${HOST}:${own.port}`,
    running: () => isRunning(child),
    async start() {
      if (isRunning(child)) return;
      const started = spawn("nats-server", args, { stdio: "ignore" });
      child = started;
      await waitHealthy(own, started, startTimeoutMs);
    },
    async stop(signal: NodeJS.Signals = "SIGTERM") {
      const running = child;
      child = null;
      if (!isRunning(running)) return;
      await new Promise<void>((resolve) => {
        running.once("exit", () => resolve());
        running.kill(signal);
      });
    },
  };
}

/** Polls the node's `/healthz` until it answers 200; fails when the process exits or time runs out. */
async function waitHealthy(node: NodePorts, child: ChildProcess, timeoutMs: number): Promise<void> {
  const deadlineMs = Date.now() + timeoutMs;
  const url = `http://${HOST}:${node.monitorPort}/healthz`;
  while (Date.now() < deadlineMs) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`nats-server ${node.name} exited while starting (port ${node.port})`);
    }
    const healthy = await fetch(url, { signal: AbortSignal.timeout(HEALTH_PROBE_TIMEOUT_MS) }).then((r) => r.ok, () => false);
    if (healthy) return;
    await sleep(READY_POLL_MS);
  }
  throw new Error(`nats-server ${node.name} was not healthy within ${timeoutMs} ms (port ${node.port})`);
}
