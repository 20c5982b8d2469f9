import { readFile } from "node:fs/promises";
import { connect, type NatsConnection, type TlsOptions } from "@nats-io/transport-node";
import {
  JetStreamApiError,
  jetstreamManager,
  StorageType,
  type ConsumerInfo,
  type JetStreamManager,
  type StreamInfo,
} from "@nats-io/jetstream";
import { nanos } from "@nats-io/transport-node";
import type { Logger } from "pino";
import { NAMESPACE_DEFAULT, type NatsTlsConfig, type StreamConfig } from "./config.js";

/** How long one connection attempt may take before it counts as failed. */
const CONNECT_TIMEOUT_MS = 3000;
/** Pause between reconnection attempts of an established connection. */
const RECONNECT_WAIT_MS = 1000;
const HOUR_MS = 3_600_000;
/** JetStream's "subjects overlap with an existing stream" (JSStreamSubjectOverlapErr). */
const SUBJECT_OVERLAP_API_CODE = 10065;
/** How a stream's or a consumer's description names the deployment that owns it. */
const OWNER_PATTERN = /\(deployment ([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\)/;

/** The variable that names each file of a {@link NatsTlsConfig}, so an error says which to fix. */
const NATS_TLS_VARIABLES: Readonly<Record<keyof NatsTlsConfig, string>> = {
  caFile: "HOLDFAST_NATS_TLS_CA_FILE",
  certFile: "HOLDFAST_NATS_TLS_CERT_FILE",
  keyFile: "HOLDFAST_NATS_TLS_KEY_FILE",
};

/**
 * Connects to NATS with explicit options: reconnect forever (a NATS outage must never need a
 * restart of a Holdfast process), log every status change, and no async stack traces on
 * requests (see the option below). With `tls` (HOLDFAST_NATS_TLS_*)
 * the connection must be TLS, verified against its CA and showing its client certificate if
 * one is given. Rejects when the first connection fails, so callers decide how to retry it.
 */
export async function connectNats(url: string, name: string, logger: Logger, tls: NatsTlsConfig | null = null): Promise<NatsConnection> {
  const nc = await connect({
    servers: url.split(","),
    name,
    timeout: CONNECT_TIMEOUT_MS,
    reconnect: true,
    maxReconnectAttempts: -1,
    reconnectTimeWait: RECONNECT_WAIT_MS,
    // Without it the client builds two errors with stack traces (a RequestError and a
    // TimeoutError) for every request it sends, in case it times out: 6.9% of the ledger's CPU
    // on a hot wallet, for every JetStream publish of the outbox relay (docs/performance.md,
    // "The request path"). A timeout still fails with its own error and message; its stack
    // only lacks the caller's frames.
    noAsyncTraces: true,
    ...(tls === null ? {} : { tls: await natsTlsOptions(tls) }),
  });
  void (async () => {
    for await (const status of nc.status()) {
      logger.info({ nats: status.type }, "nats connection status");
    }
  })();
  return nc;
}

/**
 * The NATS client's `tls` option for a {@link NatsTlsConfig}: the PEM text of each file given.
 * The files are read here rather than by the client, so that a missing or unreadable one fails
 * naming its variable, before any connection is tried. Any `tls` option makes the client
 * refuse a server that does not offer TLS.
 */
export async function natsTlsOptions(tls: NatsTlsConfig): Promise<TlsOptions> {
  const read = async (field: keyof NatsTlsConfig): Promise<string | undefined> => {
    const file = tls[field];
    if (file === null) return undefined;
    try {
      return await readFile(file, "utf8");
    } catch (err) {
      const reason = err instanceof Error ? err.message : String(err);
      throw new Error(`${NATS_TLS_VARIABLES[field]} names a file that cannot be read (${reason})`);
    }
  };
  const [ca, cert, key] = await Promise.all([read("caFile"), read("certFile"), read("keyFile")]);
  return { ...(ca === undefined ? {} : { ca }), ...(cert === undefined ? {} : { cert }), ...(key === undefined ? {} : { key }) };
}

/**
 * The root of a namespace's event subjects: `<namespace>.events`, so an event's subject is
 * `<namespace>.events.<tenant>.<wallet>.<kind>.<action>` (`holdfast.events...` by default).
 */
export function eventSubjectRoot(namespace: string = NAMESPACE_DEFAULT): string {
  return `${namespace}.events`;
}

/**
 * Where the ledger publishes a tenant's journal chain head (services/ledger chain-checkpoints):
 * `<namespace>.chain.<tenant>`, outside the events stream, so webhook endpoints and stream
 * consumers never see it unless they subscribe to it.
 */
export function chainHeadSubject(namespace: string, tenantId: string): string {
  return `${namespace}.chain.${tenantId}`;
}

/** Every event subject of a namespace: what its stream captures and what a consumer of all events filters on. */
export function eventSubjectsAll(namespace: string = NAMESPACE_DEFAULT): string {
  return `${eventSubjectRoot(namespace)}.>`;
}

/**
 * A durable consumer's name in a namespace: `<namespace>-<role>`, e.g. `holdfast-webhooks` or
 * `staging-billing-stripe`. Every durable consumer is named by this, so two deployments with
 * different namespaces never share one.
 */
export function consumerNameOf(namespace: string, role: string): string {
  return `${namespace}-${role}`;
}

export interface StreamSettings {
  /** HOLDFAST_NAMESPACE: the stream captures `<namespace>.events.>`; `holdfast` when absent. */
  namespace?: string;
  /** The JetStream stream, e.g. HOLDFAST_EVENTS. */
  name: string;
  /** How long events are kept. */
  maxAgeMs: number;
  /** How long the server remembers message ids to drop re-published duplicates. */
  duplicateWindowMs: number;
  replicas: number;
}

/** The stream settings as every process reads them from its environment. */
export function streamSettingsOf(config: StreamConfig): StreamSettings {
  return {
    namespace: config.namespace,
    name: config.streamName,
    maxAgeMs: config.streamMaxAgeHours * HOUR_MS,
    duplicateWindowMs: config.streamDuplicateWindowSeconds * 1000,
    replicas: config.streamReplicas,
  };
}

/**
 * Thrown when a stream or a consumer on NATS belongs to another Holdfast deployment (another
 * database). Not retried: joining it would take that deployment's events, so the process
 * refuses to run and says how to fix it.
 */
export class DeploymentConflictError extends Error {
  override readonly name = "DeploymentConflictError";
}

/** The deployment named in a stream's or consumer's description, or null when none is. */
export function ownerOf(description: string | undefined): string | null {
  return OWNER_PATTERN.exec(description ?? "")?.[1] ?? null;
}

/** A description that records `deploymentId` as the owner, after `text`. */
export function ownedDescription(text: string, deploymentId: string): string {
  return `${text} (deployment ${deploymentId})`;
}

/** What to do when the stream or a consumer belongs to someone else: the message of the error. */
function conflictMessage(what: string, namespace: string, owner: string, deploymentId: string): string {
  return (
    `${what} belongs to another Holdfast deployment (${owner}), not to this one (${deploymentId}, ` +
    `the id in this database's deployment table). Two deployments on one NATS server must not share ` +
    `a namespace, or one takes the other's events. Set HOLDFAST_NAMESPACE to a name of this ` +
    `deployment's own (it is "${namespace}" now; e.g. HOLDFAST_NAMESPACE=staging) on every process of ` +
    `this deployment. If the other deployment is gone for good (its database was dropped), delete ` +
    `its stream instead (nats stream rm). See docs/events.md, "Namespaces".`
  );
}

/**
 * Creates the stream, or brings its settings up to date, so that every process can call this
 * at start without coordination. File storage: events must survive a server restart.
 *
 * The stream's description records the deployment that owns it (`deploymentId`, from the
 * database). A stream owned by another deployment is refused with a
 * {@link DeploymentConflictError}; one that names no owner (made before owners were recorded)
 * is claimed.
 */
export async function ensureStream(
  nc: NatsConnection,
  settings: StreamSettings,
  deploymentId: string,
  logger?: Logger,
): Promise<JetStreamManager> {
  const jsm = await jetstreamManager(nc);
  const namespace = settings.namespace ?? NAMESPACE_DEFAULT;
  const config = {
    subjects: [eventSubjectsAll(namespace)],
    description: ownedDescription(`Holdfast events of namespace ${namespace}`, deploymentId),
    storage: StorageType.File,
    max_age: nanos(settings.maxAgeMs),
    duplicate_window: nanos(settings.duplicateWindowMs),
    num_replicas: settings.replicas,
  };
  const existing = await streamInfo(jsm, settings.name);
  if (existing === null) {
    try {
      await jsm.streams.add({ name: settings.name, ...config });
      return jsm;
    } catch (err) {
      if (err instanceof JetStreamApiError && err.code === SUBJECT_OVERLAP_API_CODE) {
        throw new DeploymentConflictError(overlapMessage(settings.name, namespace));
      }
      // Another process of some deployment created it meanwhile: check whose it is below.
      const created = await streamInfo(jsm, settings.name);
      if (created === null) throw err;
      checkOwner(created.config.description, `NATS stream ${settings.name}`, namespace, deploymentId);
      return jsm;
    }
  }
  const owner = checkOwner(existing.config.description, `NATS stream ${settings.name}`, namespace, deploymentId);
  if (owner === null) {
    logger?.warn({ stream: settings.name, deploymentId }, "the event stream named no owner; this deployment claims it");
  }
  await jsm.streams.update(settings.name, config);
  return jsm;
}

/** Why a new stream's subjects overlap: another stream already captures the namespace. */
function overlapMessage(stream: string, namespace: string): string {
  return (
    `cannot create NATS stream ${stream}: another stream on this NATS server already captures ` +
    `${eventSubjectsAll(namespace)}, so another Holdfast deployment (with another HOLDFAST_STREAM_NAME) ` +
    `uses namespace "${namespace}". Set HOLDFAST_NAMESPACE to a name of this deployment's own on every ` +
    `process of it. See docs/events.md, "Namespaces".`
  );
}

/**
 * Throws a {@link DeploymentConflictError} when `description` names an owner other than
 * `deploymentId`; returns the owner it names (null for none).
 */
export function checkOwner(description: string | undefined, what: string, namespace: string, deploymentId: string): string | null {
  const owner = ownerOf(description);
  if (owner !== null && owner !== deploymentId) {
    throw new DeploymentConflictError(conflictMessage(what, namespace, owner, deploymentId));
  }
  return owner;
}

/**
 * Checks that an existing durable consumer is this deployment's (or names no owner yet); the
 * caller then updates it with {@link ownedDescription}.
 */
export function checkConsumerOwner(info: ConsumerInfo, namespace: string, deploymentId: string): void {
  checkOwner(info.config.description, `NATS consumer ${info.name} of stream ${info.stream_name}`, namespace, deploymentId);
}

async function streamInfo(jsm: JetStreamManager, name: string): Promise<StreamInfo | null> {
  try {
    return await jsm.streams.info(name);
  } catch (err) {
    if (isStreamNotFound(err)) return null;
    throw err;
  }
}

function isStreamNotFound(err: unknown): boolean {
  return err instanceof Error && (err.name === "StreamNotFoundError" || /stream not found/i.test(err.message));
}
