/**
 * The hold-expiry worker's configuration: only the shared database and log settings
 * (packages/common/src/config.ts). Its loop bounds are constants in main.ts, because they are
 * not worth a knob: a pass is one short statement, and replicas share the work.
 *
 * @module
 */
import { readDatabaseConfig, readLogConfig, type DatabaseConfig, type LogConfig } from "@holdfast/common/config";
import type { Env } from "@holdfast/common/env";

/** Everything the hold-expiry worker reads from its environment. */
export interface HoldExpiryConfig extends DatabaseConfig, LogConfig {}

/** Reads and validates the worker's configuration. Throws an Error naming the first bad variable. */
export function loadHoldExpiryConfig(env: Env = process.env): HoldExpiryConfig {
  return { ...readDatabaseConfig(env), ...readLogConfig(env) };
}
