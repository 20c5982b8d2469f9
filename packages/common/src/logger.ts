/**
 * The process logger. Each process builds exactly one in its `main.ts` and hands children
 * (`logger.child({ rpc })`) to the code it calls, so every line carries the process name and
 * one place decides the level, the format and what is redacted.
 *
 * Lines are JSON, one per line, for log shippers, except in development on a terminal, where
 * people read them: then they are printed by pino-pretty ({@link prefersPrettyLogs}).
 *
 * @module
 */
import { pino } from "pino";
import type { DestinationStream, Level, Logger } from "pino";
import PinoPretty from "pino-pretty";

import type { LogLevel } from "./env.js";

/**
 * Field paths whose values are replaced before a line is written. API keys travel in the
 * `authorization` header and webhook signing secrets in `secret`, so a request or an error
 * object logged whole still cannot leak them.
 */
export const REDACTED_PATHS: readonly string[] = [
  "authorization",
  "*.authorization",
  "*.headers.authorization",
  "secret",
  "*.secret",
  "apiKey",
  "*.apiKey",
  "password",
  "*.password",
];

/** What a redacted value reads as in the log. */
export const REDACTED_CENSOR = "[redacted]";

/**
 * How long a repeating failure stays one episode for {@link logRepeated}: within it, repeats
 * are counted, and one line per window says how many there were.
 */
export const REPEAT_WINDOW_MS_DEFAULT = 60_000;
/** Most distinct messages {@link logRepeated} tracks per logger; more are logged as they come. */
const REPEAT_MESSAGES_PER_LOGGER_MAX = 64;

/**
 * True when lines should be written for people rather than machines: stdout is a terminal and
 * NODE_ENV is not `production` (the container image sets it). Pipes, files, containers and log
 * shippers always get JSON.
 */
export function prefersPrettyLogs(env: NodeJS.ProcessEnv = process.env, isTty = process.stdout.isTTY === true): boolean {
  return isTty && env["NODE_ENV"] !== "production";
}

/**
 * Creates the process's pino logger, writing JSON lines to stdout, or readable lines when
 * {@link prefersPrettyLogs} says so. Call it once per process; tests that need quiet output
 * pass level `silent`, and tests that read what a process would log pass their own
 * `destination` (always JSON).
 */
export function createLogger(name: string, level: LogLevel, destination?: DestinationStream): Logger {
  const options = {
    name,
    level,
    redact: { paths: [...REDACTED_PATHS], censor: REDACTED_CENSOR, remove: false },
    // ISO timestamps are readable by people and by every log shipper, at a small cost per line.
    timestamp: pino.stdTimeFunctions.isoTime,
    base: { pid: process.pid },
    serializers: { err: pino.stdSerializers.err },
  };
  if (destination !== undefined) {
    return pino(options, destination);
  }
  if (prefersPrettyLogs()) {
    // In this process, synchronously: a development process should print what it logged
    // before it exits, and needs no worker thread for that.
    return pino(options, PinoPretty({ colorize: true, sync: true, translateTime: "SYS:HH:MM:ss.l", ignore: "pid,hostname" }));
  }
  return pino(options);
}

/** One failure being counted by {@link logRepeated}. */
interface RepeatEpisode {
  /** The error's class and code, or message: a different error starts a new episode. */
  readonly signature: string;
  readonly firstAtMs: number;
  lastAtMs: number;
  lastLoggedAtMs: number;
  /** Failures since the last line written. */
  unlogged: number;
  total: number;
}

const episodesByLogger = new WeakMap<Logger, Map<string, RepeatEpisode>>();

/**
 * Logs a failure that repeats while something stays down (NATS, PostgreSQL), without writing
 * the same stack trace every few seconds. The first failure is logged whole, with `fields`
 * (its `err` included, stack and all). Further failures with the same message and the same
 * error only count; once per `windowMs`, one line says how many there were (`repeated`, and
 * `failures` in all) with the error's message but no stack. A failure after a quiet window, or
 * a different error, starts over with a full line.
 *
 * Stateless for the caller, so a retry loop changes only its log call: the count is kept per
 * logger and message.
 */
export function logRepeated(
  logger: Logger,
  level: Extract<Level, "warn" | "error">,
  fields: Readonly<Record<string, unknown>>,
  message: string,
  options: { readonly windowMs?: number; readonly nowMs?: number } = {},
): void {
  const windowMs = options.windowMs ?? REPEAT_WINDOW_MS_DEFAULT;
  const nowMs = options.nowMs ?? Date.now();
  const episodes = episodesOf(logger);
  const signature = errorSignature(fields["err"]);
  const episode = episodes.get(message);
  if (episode === undefined || episode.signature !== signature || nowMs - episode.lastAtMs > windowMs) {
    if (episodes.size >= REPEAT_MESSAGES_PER_LOGGER_MAX && episode === undefined) {
      logger[level](fields, message);
      return;
    }
    episodes.set(message, { signature, firstAtMs: nowMs, lastAtMs: nowMs, lastLoggedAtMs: nowMs, unlogged: 0, total: 1 });
    logger[level](fields, message);
    return;
  }
  episode.total++;
  episode.unlogged++;
  episode.lastAtMs = nowMs;
  if (nowMs - episode.lastLoggedAtMs < windowMs) {
    return;
  }
  const { err, ...rest } = fields;
  const since = new Date(episode.firstAtMs).toISOString();
  logger[level]({ ...rest, error: errorMessage(err), repeated: episode.unlogged, failures: episode.total, since }, `${message} (still failing)`);
  episode.unlogged = 0;
  episode.lastLoggedAtMs = nowMs;
}

function episodesOf(logger: Logger): Map<string, RepeatEpisode> {
  let episodes = episodesByLogger.get(logger);
  if (episodes === undefined) {
    episodes = new Map();
    episodesByLogger.set(logger, episodes);
  }
  return episodes;
}

/**
 * What makes two failures "the same": the error's class and code when it has one (PostgreSQL's
 * 57P03 reads "starting up", then "not yet accepting connections"), else its message.
 */
function errorSignature(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  const code = (err as { code?: unknown }).code;
  return typeof code === "string" || typeof code === "number" ? `${err.name}|${code}` : `${err.name}|${err.message}`;
}

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
