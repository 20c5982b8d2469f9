import type { Logger } from "pino";
import { loadConfig, type Config } from "./config.js";

/**
 * The process's configuration, or a one-line error naming the bad variable and exit code 2:
 * a misconfigured process should say what is wrong, not print a stack trace.
 */
export function loadConfigOrExit(): Config {
  try {
    return loadConfig();
  } catch (err) {
    process.stderr.write(`configuration error: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(2);
  }
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
