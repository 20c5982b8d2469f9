/**
 * The start and stop of a Holdfast process: its configuration or a clear exit, a periodic
 * summary line, and a graceful stop on SIGTERM or SIGINT. Every main.ts uses these, so that
 * every process fails and stops the same way.
 *
 * @module
 */
import type { Logger } from "pino";
import type { Env } from "./env.js";

/** The exit code of a process that refuses its configuration. */
export const CONFIG_ERROR_EXIT_CODE = 2;

/**
 * Writes one line naming what is wrong with the configuration and exits with
 * {@link CONFIG_ERROR_EXIT_CODE}: a misconfigured process should say what is wrong, not print a
 * stack trace. Usable as a `catch` handler for a configuration that loads asynchronously.
 */
export function exitOnConfigError(err: unknown): never {
  process.stderr.write(`configuration error: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(CONFIG_ERROR_EXIT_CODE);
}

/**
 * The process's configuration as `load` reads it from the environment, or, when `load` throws
 * (naming the bad variable), one line on stderr and exit code 2.
 */
export function loadConfigOrExit<T>(load: (env: Env) => T, env: Env = process.env): T {
  try {
    return load(env);
  } catch (err) {
    return exitOnConfigError(err);
  }
}

/**
 * Logs `summary()` under `message` every `intervalMs`, without keeping the process alive, so an
 * operator sees a worker's totals move even when nothing goes wrong.
 */
export function logPeriodically(logger: Logger, intervalMs: number, message: string, summary: () => object): void {
  setInterval(() => logger.info(summary(), message), intervalMs).unref();
}

/**
 * Stops a process gracefully on SIGTERM or SIGINT: runs `stop` once (a second signal while it
 * runs is ignored), then exits 0, or 1 if stopping failed.
 */
export function stopOnSignals(logger: Logger, stop: () => Promise<void>): void {
  let stopping = false;
  for (const signal of ["SIGTERM", "SIGINT"] as const) {
    process.on(signal, () => {
      if (stopping) {
        return;
      }
      stopping = true;
      logger.info({ signal }, "stopping");
      stop().then(
        () => process.exit(0),
        (err: unknown) => {
          logger.error({ err }, "stopping failed");
          process.exit(1);
        },
      );
    });
  }
}
