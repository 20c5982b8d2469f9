/**
 * The transport limits of {@link createServer}: what one connection, one remote address and
 * one stream may hold, so that a caller without a key cannot pin the server's memory, sockets
 * or call budget (docs/security.md, "Transport limits").
 *
 * Every limit has a named default and inclusive bounds. The bounds are not tuning advice: they
 * catch typos (an extra zero, seconds given as milliseconds) that would otherwise turn a limit
 * into no limit at all, and {@link resolveServerLimits} refuses a value outside them.
 *
 * @module
 */

const KIB = 1024;
const MIB = 1024 * KIB;
const MINUTE_MS = 60_000;

/** Most concurrent HTTP/2 streams one connection may open; more are refused (REFUSED_STREAM). */
export const HTTP2_STREAMS_PER_CONNECTION_MAX_DEFAULT = 100;
/**
 * How long a client may take to send a whole request body, from its first byte of headers;
 * a slower HTTP/2 stream is reset (CANCEL) and a slower HTTP/1.1 request is answered 408.
 */
export const BODY_READ_TIMEOUT_MS_DEFAULT = 30_000;
/**
 * Most request-body bytes the calls in progress on one connection may have received; a call
 * whose body would pass it is refused with RESOURCE_EXHAUSTED (reason OVERLOADED).
 */
export const CONNECTION_BODY_BYTES_MAX_DEFAULT = 8 * MIB;
/** Most open connections from one remote address; more are closed as soon as they arrive. */
export const CONNECTIONS_PER_ADDRESS_MAX_DEFAULT = 256;
/** Most open grpc.health.v1.Health Watch streams in the whole server. */
export const HEALTH_WATCHERS_MAX_DEFAULT = 256;
/** Most open grpc.health.v1.Health Watch streams on one connection. */
export const HEALTH_WATCHERS_PER_CONNECTION_MAX_DEFAULT = 8;
/**
 * The longest a server stream (Health.Watch, WatchWallet) stays open; then the server ends it
 * cleanly (status OK) and the client reconnects. Each stream gets 90-100% of it at random, so
 * that streams opened together do not all reconnect together.
 */
export const STREAM_LIFETIME_MS_MAX_DEFAULT = 30 * MINUTE_MS;

/** The transport limits a server runs with; every one is optional in {@link ServerLimitOptions}. */
export interface ServerLimits {
  readonly http2StreamsPerConnectionMax: number;
  readonly bodyReadTimeoutMs: number;
  readonly connectionBodyBytesMax: number;
  readonly connectionsPerAddressMax: number;
  readonly healthWatchersMax: number;
  readonly healthWatchersPerConnectionMax: number;
  readonly streamLifetimeMsMax: number;
}

/** The limits as given to createServer: any left out takes its default. */
export type ServerLimitOptions = Partial<ServerLimits>;

/** Inclusive bounds and default of one limit. */
interface LimitSpec {
  readonly fallback: number;
  readonly min: number;
  readonly max: number;
}

/** Bounds and defaults of every limit, exported so configuration code can reuse them. */
export const SERVER_LIMIT_SPECS: { readonly [K in keyof ServerLimits]: LimitSpec } = {
  http2StreamsPerConnectionMax: { fallback: HTTP2_STREAMS_PER_CONNECTION_MAX_DEFAULT, min: 1, max: 1000 },
  bodyReadTimeoutMs: { fallback: BODY_READ_TIMEOUT_MS_DEFAULT, min: 100, max: 10 * MINUTE_MS },
  connectionBodyBytesMax: { fallback: CONNECTION_BODY_BYTES_MAX_DEFAULT, min: 64 * KIB, max: 1024 * MIB },
  connectionsPerAddressMax: { fallback: CONNECTIONS_PER_ADDRESS_MAX_DEFAULT, min: 1, max: 10_000 },
  healthWatchersMax: { fallback: HEALTH_WATCHERS_MAX_DEFAULT, min: 0, max: 100_000 },
  healthWatchersPerConnectionMax: { fallback: HEALTH_WATCHERS_PER_CONNECTION_MAX_DEFAULT, min: 0, max: 1000 },
  streamLifetimeMsMax: { fallback: STREAM_LIFETIME_MS_MAX_DEFAULT, min: 1000, max: 24 * 60 * MINUTE_MS },
};

/**
 * The limits with defaults filled in. Throws a RangeError naming the first option that is not
 * an integer within its bounds, or a body cap smaller than one request (`readMaxBytes`), which
 * would refuse every large but valid message.
 */
export function resolveServerLimits(options: ServerLimitOptions, readMaxBytes: number): ServerLimits {
  const resolved = {} as { -readonly [K in keyof ServerLimits]: number };
  for (const name of Object.keys(SERVER_LIMIT_SPECS) as (keyof ServerLimits)[]) {
    const spec = SERVER_LIMIT_SPECS[name];
    const value = options[name] ?? spec.fallback;
    if (!Number.isSafeInteger(value) || value < spec.min || value > spec.max) {
      throw new RangeError(`server option ${name} must be an integer from ${spec.min} to ${spec.max}, got ${value}`);
    }
    resolved[name] = value;
  }
  if (resolved.connectionBodyBytesMax < readMaxBytes) {
    throw new RangeError(
      `server option connectionBodyBytesMax (${resolved.connectionBodyBytesMax}) must be at least readMaxBytes (${readMaxBytes})`,
    );
  }
  return resolved;
}
