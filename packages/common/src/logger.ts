/**
 * The process logger. Each process builds exactly one in its `main.ts` and hands children
 * (`logger.child({ rpc })`) to the code it calls, so every line carries the process name and
 * one place decides the level and what is redacted.
 *
 * @module
 */
import { pino } from "pino";
import type { DestinationStream, Logger } from "pino";

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
 * Creates the process's pino logger, writing JSON lines to stdout. Call it once per process;
 * tests that need quiet output pass level `silent`, and tests that read what a process would log
 * pass their own `destination`.
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
  return destination === undefined ? pino(options) : pino(options, destination);
}
