import { connect, type NatsConnection } from "@nats-io/transport-node";
import { jetstreamManager, StorageType, type JetStreamManager } from "@nats-io/jetstream";
import { nanos } from "@nats-io/transport-node";
import type { Logger } from "pino";
import type { StreamConfig } from "./config.js";

/** How long one connection attempt may take before it counts as failed. */
const CONNECT_TIMEOUT_MS = 3000;
/** Pause between reconnection attempts of an established connection. */
const RECONNECT_WAIT_MS = 1000;
const HOUR_MS = 3_600_000;

/**
 * Connects to NATS with explicit options: reconnect forever (a NATS outage must never need a
 * restart of a Holdfast process), and log every status change. Rejects when the first
 * connection fails, so callers decide how to retry it.
 */
export async function connectNats(url: string, name: string, logger: Logger): Promise<NatsConnection> {
  const nc = await connect({
    servers: url.split(","),
    name,
    timeout: CONNECT_TIMEOUT_MS,
    reconnect: true,
    maxReconnectAttempts: -1,
    reconnectTimeWait: RECONNECT_WAIT_MS,
  });
  void (async () => {
    for await (const status of nc.status()) {
      logger.info({ nats: status.type }, "nats connection status");
    }
  })();
  return nc;
}

/** The root of every event subject: holdfast.events.<tenant>.<wallet>.<kind>.<action>. */
export const EVENT_SUBJECT_ROOT = "holdfast.events";
/** Every event subject: what the stream captures, and what a consumer of all events filters on. */
export const EVENT_SUBJECTS_ALL = `${EVENT_SUBJECT_ROOT}.>`;

export interface StreamSettings {
  /** The JetStream stream, e.g. HOLDFAST_EVENTS. */
  name: string;
  /** Subjects it captures, e.g. holdfast.events.> */
  subjects: string[];
  /** How long events are kept. */
  maxAgeMs: number;
  /** How long the server remembers message ids to drop re-published duplicates. */
  duplicateWindowMs: number;
  replicas: number;
}

/** The stream settings as every process reads them from its environment; each adds the subjects it needs. */
export function streamSettingsOf(config: StreamConfig): Omit<StreamSettings, "subjects"> {
  return {
    name: config.streamName,
    maxAgeMs: config.streamMaxAgeHours * HOUR_MS,
    duplicateWindowMs: config.streamDuplicateWindowSeconds * 1000,
    replicas: config.streamReplicas,
  };
}

/**
 * Creates the stream, or brings its settings up to date, so that every process can call this
 * at start without coordination. File storage: events must survive a server restart.
 */
export async function ensureStream(nc: NatsConnection, settings: StreamSettings): Promise<JetStreamManager> {
  const jsm = await jetstreamManager(nc);
  const config = {
    subjects: settings.subjects,
    storage: StorageType.File,
    max_age: nanos(settings.maxAgeMs),
    duplicate_window: nanos(settings.duplicateWindowMs),
    num_replicas: settings.replicas,
  };
  try {
    await jsm.streams.info(settings.name);
    await jsm.streams.update(settings.name, config);
  } catch (err) {
    if (!isStreamNotFound(err)) {
      throw err;
    }
    await jsm.streams.add({ name: settings.name, ...config });
  }
  return jsm;
}

function isStreamNotFound(err: unknown): boolean {
  return err instanceof Error && (err.name === "StreamNotFoundError" || /stream not found/i.test(err.message));
}
