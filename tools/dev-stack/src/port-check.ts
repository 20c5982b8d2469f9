/**
 * Whether the ledger's port is free, asked before anything starts: a port held by another
 * process (often another `npm start`) would otherwise answer the readiness probe for the ledger
 * that is about to fail with EADDRINUSE, and the stack would claim to run.
 *
 * @module
 */
import { createServer } from "node:net";

/**
 * Binds `host:port` the way the ledger will and lets it go at once; resolves to null when that
 * worked, or to the one line `npm start` prints when it did not. Binding, rather than
 * connecting, also finds a port held by a process that listens without answering, or on the
 * wildcard address.
 */
export function checkPortFree(port: number, host: string): Promise<string | null> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once("error", (err: NodeJS.ErrnoException) => {
      resolve(portProblemMessage(err.code ?? err.message, port, host));
    });
    // exclusive: a cluster worker's shared handle must not make a held port look free.
    server.listen({ port, host, exclusive: true }, () => {
      server.close(() => resolve(null));
    });
  });
}

function portProblemMessage(code: string, port: number, host: string): string {
  switch (code) {
    case "EADDRINUSE":
      return `port ${port} is in use; set HOLDFAST_PORT (another npm start or ledger may run on ${host}:${port})`;
    case "EACCES":
      return `port ${port} on ${host} is not allowed for this user; set HOLDFAST_PORT`;
    default:
      return `cannot listen on ${host}:${port} (${code}); set HOLDFAST_HOST or HOLDFAST_PORT`;
  }
}
