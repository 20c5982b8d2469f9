/**
 * Finding the nats-server binary, and saying how to install it when it is missing, in one
 * place for `npm start`, the tests' preflight check and the benchmarks.
 *
 * @module
 */
import { constants as fsConstants } from "node:fs";
import fs from "node:fs/promises";
import path from "node:path";

/** The command every launcher runs. */
export const NATS_SERVER_COMMAND = "nats-server";

/**
 * How to get nats-server, indented for a terminal: the Debian/Ubuntu package, or the release
 * binary elsewhere.
 */
export const NATS_SERVER_INSTALL_HELP = [
  "  Debian/Ubuntu:  apt-get install nats-server",
  "  macOS:          brew install nats-server",
  "  elsewhere:      download nats-server from https://github.com/nats-io/nats-server/releases",
  "                  and put the nats-server binary on PATH",
].join("\n");

/**
 * The absolute path of the first executable `command` in `searchPath` (a PATH-style list),
 * or undefined when there is none.
 */
export async function findOnPath(command: string, searchPath = process.env["PATH"] ?? ""): Promise<string | undefined> {
  for (const dir of searchPath.split(path.delimiter)) {
    if (dir === "") continue;
    const candidate = path.join(dir, command);
    if (await fs.access(candidate, fsConstants.X_OK).then(() => true, () => false)) return candidate;
  }
  return undefined;
}

/** Where nats-server is on `searchPath` (PATH by default), or undefined. */
export function findNatsServer(searchPath?: string): Promise<string | undefined> {
  return findOnPath(NATS_SERVER_COMMAND, searchPath);
}
