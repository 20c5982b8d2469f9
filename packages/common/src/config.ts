/**
 * The settings more than one Holdfast process reads, each read here once so that a variable
 * means the same in every process. Everything else a process reads is declared in its own
 * config module: services/ledger/src/config.ts, workers/hold-expiry/src/config.ts,
 * workers/webhooks/src/config.ts and, for the billing-stream worker,
 * packages/billing-core/src/config.ts. README.md ("Configuration") lists every variable with
 * the processes that read it.
 *
 * | variable | default | meaning |
 * |---|---|---|
 * | `DATABASE_URL` | `postgres://postgres@127.0.0.1:5432/holdfast` | PostgreSQL connection URL (`postgres://` or `postgresql://`). |
 * | `HOLDFAST_PG_POOL_MAX` | `20` | Most PostgreSQL connections one process opens. |
 * | `HOLDFAST_PG_CONNECT_TIMEOUT_MS` | `5000` | How long to wait for a PostgreSQL connection. |
 * | `HOLDFAST_PG_STATEMENT_TIMEOUT_MS` | `5000` | Server-side limit on one SQL statement. |
 * | `NATS_URL` | `nats://127.0.0.1:4222` | NATS server URL (`nats://`, `tls://`, `ws://` or `wss://`). |
 * | `HOLDFAST_NATS_TLS_CA_FILE` | unset | PEM CA certificates that sign the NATS server's certificate. When any `HOLDFAST_NATS_TLS_*` is set, the connection must be TLS (a server that does not offer it is refused); otherwise TLS is used only when the server requires it, verified against the system's CAs. |
 * | `HOLDFAST_NATS_TLS_CERT_FILE` | unset | PEM client certificate shown to NATS (for a server that verifies clients); needs `HOLDFAST_NATS_TLS_KEY_FILE`. |
 * | `HOLDFAST_NATS_TLS_KEY_FILE` | unset | PEM private key of `HOLDFAST_NATS_TLS_CERT_FILE`; set both or neither. |
 * | `HOLDFAST_NAMESPACE` | `holdfast` | The deployment's namespace on NATS: it prefixes the event subjects (`<namespace>.events.>`), the stream's default name and every durable consumer's name, so deployments sharing a NATS server never share events (docs/events.md, "Namespaces"). 1-32 of `a-z`, `0-9`, `_`, `-`, starting with a letter or digit. |
 * | `HOLDFAST_STREAM_NAME` | `<NAMESPACE>_EVENTS` (`HOLDFAST_EVENTS`) | JetStream stream of the ledger's events (created or updated at start by every process that uses it). |
 * | `HOLDFAST_STREAM_MAX_AGE_HOURS` | `168` (7 days) | How long the stream keeps events. |
 * | `HOLDFAST_STREAM_DUPLICATE_WINDOW_SECONDS` | `600` | How long the stream drops a re-published event id. |
 * | `HOLDFAST_STREAM_REPLICAS` | `1` | Stream replicas (3 on a NATS cluster). |
 * | `HOLDFAST_HOST` | `127.0.0.1` (the container image: `0.0.0.0`) | Address a process's server binds (the ledger's API, the billing-stream worker's metrics). |
 * | `LOG_LEVEL` | `info` | One of `fatal`, `error`, `warn`, `info`, `debug`, `trace`, `silent`. |
 *
 * @module
 */
import {
  LOG_LEVEL_DEFAULT,
  readHost,
  readInteger,
  readLogLevel,
  readName,
  readPath,
  readUrl,
  type Env,
  type IntegerSpec,
  type LogLevel,
} from "./env.js";

/** The database of a process (or a tool) whose environment names none. */
export const DATABASE_URL_DEFAULT = "postgres://postgres@127.0.0.1:5432/holdfast";
/** The NATS server of a process (or a tool) whose environment names none. */
export const NATS_URL_DEFAULT = "nats://127.0.0.1:4222";
/** The event stream of a process (or a tool) whose environment names none. */
export const STREAM_NAME_DEFAULT = "HOLDFAST_EVENTS";
/** The deployment namespace on NATS when HOLDFAST_NAMESPACE is unset; its stream is STREAM_NAME_DEFAULT. */
export const NAMESPACE_DEFAULT = "holdfast";

const DATABASE_PROTOCOLS = ["postgres:", "postgresql:"];
const NATS_PROTOCOLS = ["nats:", "tls:", "ws:", "wss:"];
const STREAM_NAME_PATTERN = /^[A-Za-z0-9_-]{1,64}$/;
// One subject token and part of a stream or consumer name: no dots, wildcards or spaces. Lower
// case only, so that two namespaces never map to one upper-case stream name.
const NAMESPACE_PATTERN = /^[a-z0-9][a-z0-9_-]{0,31}$/;

// The upper bounds are not tuning advice: they only catch typos (an extra zero, seconds given
// as milliseconds) that would otherwise turn a limit into no limit at all.
const PG_POOL_MAX: IntegerSpec = { fallback: 20, min: 1, max: 1000 };
const PG_CONNECT_TIMEOUT_MS: IntegerSpec = { fallback: 5000, min: 100, max: 120_000 };
const PG_STATEMENT_TIMEOUT_MS: IntegerSpec = { fallback: 5000, min: 100, max: 10 * 60_000 };
const STREAM_MAX_AGE_HOURS: IntegerSpec = { fallback: 7 * 24, min: 1, max: 24 * 3660 };
const STREAM_DUPLICATE_WINDOW_SECONDS: IntegerSpec = { fallback: 600, min: 10, max: 24 * 3600 };
const STREAM_REPLICAS: IntegerSpec = { fallback: 1, min: 1, max: 5 };

/** Where a process's PostgreSQL is and how its pool behaves; what createPool takes. */
export interface DatabaseConfig {
  readonly databaseUrl: string;
  readonly pgPoolMax: number;
  readonly pgConnectTimeoutMs: number;
  readonly pgStatementTimeoutMs: number;
}

/** The JetStream stream of the ledger's events, as every process that creates or reads it sees it. */
export interface StreamConfig {
  /** HOLDFAST_NAMESPACE: prefixes the subjects and the stream and consumer names. */
  readonly namespace: string;
  readonly streamName: string;
  readonly streamMaxAgeHours: number;
  readonly streamDuplicateWindowSeconds: number;
  readonly streamReplicas: number;
}

/**
 * TLS to NATS (HOLDFAST_NATS_TLS_*): paths of PEM files, each null when unset. The files are
 * read at each connection (connectNats), so a renewed certificate is used by the next one.
 */
export interface NatsTlsConfig {
  /** CA certificates that sign the server's certificate; null trusts the system's CAs. */
  readonly caFile: string | null;
  /** The client certificate, for a server that verifies clients; null shows none. */
  readonly certFile: string | null;
  /** The client certificate's private key; set exactly when certFile is. */
  readonly keyFile: string | null;
}

/** Where NATS is, and the event stream on it. */
export interface NatsConfig extends StreamConfig {
  readonly natsUrl: string;
  /** TLS to NATS; null when no HOLDFAST_NATS_TLS_* variable is set. */
  readonly natsTls: NatsTlsConfig | null;
}

export interface LogConfig {
  readonly logLevel: LogLevel;
}

export interface HostConfig {
  /** The address the process's server binds. */
  readonly host: string;
}

/**
 * What every process that works with the event stream reads (the ledger, the webhook worker,
 * the billing-stream worker): its database, NATS and the stream, and its log level.
 */
export interface StreamProcessConfig extends DatabaseConfig, NatsConfig, LogConfig {}

/** The {@link StreamProcessConfig} variables. Throws naming the first bad variable. */
export function readStreamProcessConfig(env: Env): StreamProcessConfig {
  return { ...readDatabaseConfig(env), ...readNatsConfig(env), ...readLogConfig(env) };
}

/**
 * A connection URL fit to print: its password replaced by `***`, so that a banner or an error
 * line never shows a secret; `(not a URL)` for text that does not parse.
 */
export function withoutPassword(url: string): string {
  if (!URL.canParse(url)) return "(not a URL)";
  const parsed = new URL(url);
  if (parsed.password !== "") parsed.password = "***";
  return parsed.toString();
}

/** DATABASE_URL and the pool's HOLDFAST_PG_* bounds. Throws naming the first bad variable. */
export function readDatabaseConfig(env: Env): DatabaseConfig {
  return {
    databaseUrl: readUrl(env, "DATABASE_URL", DATABASE_URL_DEFAULT, DATABASE_PROTOCOLS),
    pgPoolMax: readInteger(env, "HOLDFAST_PG_POOL_MAX", PG_POOL_MAX),
    pgConnectTimeoutMs: readInteger(env, "HOLDFAST_PG_CONNECT_TIMEOUT_MS", PG_CONNECT_TIMEOUT_MS),
    pgStatementTimeoutMs: readInteger(env, "HOLDFAST_PG_STATEMENT_TIMEOUT_MS", PG_STATEMENT_TIMEOUT_MS),
  };
}

/** NATS_URL, HOLDFAST_NAMESPACE and the HOLDFAST_STREAM_* settings. Throws naming the first bad variable. */
export function readNatsConfig(env: Env): NatsConfig {
  const namespace = readName(env, "HOLDFAST_NAMESPACE", NAMESPACE_DEFAULT, NAMESPACE_PATTERN, "1-32 characters of a-z, 0-9, _ or -, starting with a letter or digit");
  return {
    natsUrl: readUrl(env, "NATS_URL", NATS_URL_DEFAULT, NATS_PROTOCOLS),
    natsTls: readNatsTlsConfig(env),
    namespace,
    streamName: readName(env, "HOLDFAST_STREAM_NAME", streamNameOf(namespace), STREAM_NAME_PATTERN, "1-64 characters of A-Z, a-z, 0-9, _ or -"),
    streamMaxAgeHours: readInteger(env, "HOLDFAST_STREAM_MAX_AGE_HOURS", STREAM_MAX_AGE_HOURS),
    streamDuplicateWindowSeconds: readInteger(env, "HOLDFAST_STREAM_DUPLICATE_WINDOW_SECONDS", STREAM_DUPLICATE_WINDOW_SECONDS),
    streamReplicas: readInteger(env, "HOLDFAST_STREAM_REPLICAS", STREAM_REPLICAS),
  };
}

/**
 * HOLDFAST_NATS_TLS_CA_FILE, _CERT_FILE and _KEY_FILE; null when none is set. A CA alone is
 * enough (the server is verified, the client shows no certificate); a certificate without its
 * key, or a key without its certificate, is refused naming the missing variable.
 */
export function readNatsTlsConfig(env: Env): NatsTlsConfig | null {
  const caFile = readPath(env, "HOLDFAST_NATS_TLS_CA_FILE");
  const certFile = readPath(env, "HOLDFAST_NATS_TLS_CERT_FILE");
  const keyFile = readPath(env, "HOLDFAST_NATS_TLS_KEY_FILE");
  if ((certFile === null) !== (keyFile === null)) {
    const missing = certFile === null ? "HOLDFAST_NATS_TLS_CERT_FILE" : "HOLDFAST_NATS_TLS_KEY_FILE";
    throw new Error(`${missing} must be set too: a NATS client certificate needs both HOLDFAST_NATS_TLS_CERT_FILE and HOLDFAST_NATS_TLS_KEY_FILE`);
  }
  if (caFile === null && certFile === null) {
    return null;
  }
  return { caFile, certFile, keyFile };
}

/** The stream of a namespace when HOLDFAST_STREAM_NAME is unset: `holdfast` has `HOLDFAST_EVENTS`. */
export function streamNameOf(namespace: string): string {
  return `${namespace.toUpperCase()}_EVENTS`;
}

/** LOG_LEVEL; a tool whose output is not a log passes a quieter `fallback`. */
export function readLogConfig(env: Env, fallback: LogLevel = LOG_LEVEL_DEFAULT): LogConfig {
  return { logLevel: readLogLevel(env, "LOG_LEVEL", fallback) };
}

/** HOLDFAST_HOST. */
export function readHostConfig(env: Env): HostConfig {
  return { host: readHost(env, "HOLDFAST_HOST") };
}
