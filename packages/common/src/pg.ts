/**
 * The PostgreSQL pool every process uses, with every pg option that matters set explicitly:
 * pg's own defaults wait forever for a connection and let a statement run forever.
 *
 * @module
 */
import pg from "pg";
import type { Logger } from "pino";

import type { DatabaseConfig as Config } from "./config.js";

/** The part of {@link Config} a pool needs, so workers can pass a narrower object. */
export type PoolConfig = Pick<
  Config,
  "databaseUrl" | "pgPoolMax" | "pgConnectTimeoutMs" | "pgStatementTimeoutMs"
>;

/** Options that differ between processes rather than between deployments. */
export interface PoolOptions {
  /** Shown in `pg_stat_activity.application_name`; defaults to {@link DEFAULT_APPLICATION_NAME}. */
  readonly applicationName?: string;
}

/** The application name used when the caller gives none. */
export const DEFAULT_APPLICATION_NAME = "holdfast";

// An idle connection is closed after this long, so a quiet process gives connections back to a
// shared server instead of holding pgPoolMax of them all night.
const IDLE_TIMEOUT_MS = 30_000;
// Connections are recycled after this long so that a failover or a DNS change is picked up
// even by a process that is never idle.
const CONNECTION_LIFETIME_SECONDS = 30 * 60;
// A transaction left open across a crashed await would otherwise hold its row locks until the
// connection dies; no Holdfast transaction waits on anything but its own statements.
const IDLE_IN_TRANSACTION_TIMEOUT_MS = 10_000;
// The client-side bound sits a little above the server-side statement timeout, so the server's
// cancellation (a clear SQLSTATE 57014) normally wins and this only catches a dead connection.
const QUERY_TIMEOUT_SLACK_MS = 1000;
const KEEPALIVE_INITIAL_DELAY_MS = 10_000;

// pg-types declares its type ids as an enum that lacks the array types.
type TypeId = Parameters<typeof pg.types.getTypeParser>[0];
const OID_INT8 = 20;
const OID_INT8_ARRAY = 1016;

/**
 * Creates a pool in which `bigint` (int8) columns arrive as JS `bigint` and `numeric` stays a
 * string, so money never passes through a float. The parsers are set on this pool only, never
 * globally, so other pg users in the process keep pg's defaults. Errors on idle connections
 * (a server restart, a network cut) are logged rather than crashing the process; the pool
 * replaces the connection on next use.
 */
export function createPool(config: PoolConfig, logger: Logger, options: PoolOptions = {}): pg.Pool {
  const pool = new pg.Pool({
    connectionString: config.databaseUrl,
    max: config.pgPoolMax,
    connectionTimeoutMillis: config.pgConnectTimeoutMs,
    idleTimeoutMillis: IDLE_TIMEOUT_MS,
    maxLifetimeSeconds: CONNECTION_LIFETIME_SECONDS,
    statement_timeout: config.pgStatementTimeoutMs,
    query_timeout: config.pgStatementTimeoutMs + QUERY_TIMEOUT_SLACK_MS,
    idle_in_transaction_session_timeout: IDLE_IN_TRANSACTION_TIMEOUT_MS,
    application_name: options.applicationName ?? DEFAULT_APPLICATION_NAME,
    keepAlive: true,
    keepAliveInitialDelayMillis: KEEPALIVE_INITIAL_DELAY_MS,
    allowExitOnIdle: false,
    types: { getTypeParser },
  });
  pool.on("error", (err) => {
    logger.warn({ err }, "idle PostgreSQL connection failed; the pool will replace it");
  });
  return pool;
}

/**
 * Runs `work` in a transaction on one connection of the pool: commits when it resolves, rolls
 * back when it throws, and always gives the connection back. `begin` may carry `set local`
 * statements, which then cost no round trip of their own.
 */
export async function inTransaction<T>(pool: pg.Pool, work: (client: pg.PoolClient) => Promise<T>, begin = "begin"): Promise<T> {
  const client = await pool.connect();
  // A checked-out client has no listener of the pool's: when its connection ends (PostgreSQL
  // restarted, a network cut) pg emits `error` on the client, and an unheard `error` ends the
  // process. Hear it here, and hand it to release() so that the pool destroys the connection
  // instead of lending it out again. The pending query rejects on its own.
  let broken: Error | undefined;
  const onError = (err: Error) => {
    broken = err;
  };
  client.on("error", onError);
  try {
    await client.query(begin);
    const result = await work(client);
    await client.query("commit");
    return result;
  } catch (err) {
    if (broken === undefined) await client.query("rollback").catch(() => undefined);
    throw err;
  } finally {
    client.off("error", onError);
    client.release(broken);
  }
}

/** pg's type parser lookup with int8 and int8[] mapped to `bigint`. */
const getTypeParser = ((oid: number, format?: "text" | "binary") => {
  if (format === "binary") {
    return pg.types.getTypeParser(oid, format);
  }
  if (oid === OID_INT8) {
    return (value: string) => BigInt(value);
  }
  if (oid === OID_INT8_ARRAY) {
    // pg's own int8[] parser already splits the array literal and yields strings or nulls.
    const parseArray = pg.types.getTypeParser(OID_INT8_ARRAY as TypeId, "text") as (
      value: string,
    ) => (string | null)[];
    return (value: string) => parseArray(value).map((item) => (item === null ? null : BigInt(item)));
  }
  return pg.types.getTypeParser(oid, "text");
}) as typeof pg.types.getTypeParser;

// Node's socket errors that mean the database could not be reached at all.
const UNREACHABLE_ERRNO_CODES = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "ETIMEDOUT",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "ENOTFOUND",
  "EAI_AGAIN",
  "EPIPE",
]);
// SQLSTATEs outside class 08 that still mean "the server is going away or not there yet":
// admin_shutdown, crash_shutdown, cannot_connect_now, too_many_connections.
const UNAVAILABLE_SQLSTATES = new Set(["57P01", "57P02", "57P03", "53300"]);
const CONNECTION_EXCEPTION_CLASS = "08";
// pg reports a lost or timed-out connection as a plain Error with one of these messages.
const CONNECTION_FAILURE_MESSAGES = [
  /timeout exceeded when trying to connect/i,
  /connection terminated/i,
  /connection timeout/i,
  /client has encountered a connection error/i,
];
// AggregateError (Node's happy-eyeballs connect) and `cause` chains are followed this deep.
const ERROR_NESTING_MAX = 4;

/**
 * The `code` of an error thrown by pg: a SQLSTATE such as `23505` for a server error, or a
 * Node errno such as `ECONNREFUSED` for a socket error; undefined for anything else. The one
 * way Holdfast reads it, so that no caller has to guess at the error's shape.
 */
export function pgErrorCode(err: unknown): string | undefined {
  if (typeof err !== "object" || err === null || !("code" in err)) {
    return undefined;
  }
  return typeof err.code === "string" ? err.code : undefined;
}

/**
 * Tells connection-level failures (refused, reset, timed out, server shutting down, SQLSTATE
 * class 08) from every other error, so callers can answer UNAVAILABLE, which clients retry,
 * instead of INTERNAL, which they should not.
 */
export function isUnavailableError(err: unknown): boolean {
  return isUnavailableAt(err, 0);
}

function isUnavailableAt(err: unknown, depth: number): boolean {
  if (depth > ERROR_NESTING_MAX || typeof err !== "object" || err === null) {
    return false;
  }
  const { message, errors, cause } = err as { message?: unknown; errors?: unknown; cause?: unknown };
  const code = pgErrorCode(err);
  if (code !== undefined && matchesCode(code)) {
    return true;
  }
  if (typeof message === "string" && CONNECTION_FAILURE_MESSAGES.some((re) => re.test(message))) {
    return true;
  }
  const nested = Array.isArray(errors) ? errors : [];
  return [...nested, cause].some((inner) => isUnavailableAt(inner, depth + 1));
}

function matchesCode(code: string): boolean {
  const isSqlState = /^[0-9A-Z]{5}$/.test(code);
  return (
    UNREACHABLE_ERRNO_CODES.has(code) ||
    UNAVAILABLE_SQLSTATES.has(code) ||
    (isSqlState && code.startsWith(CONNECTION_EXCEPTION_CLASS))
  );
}
