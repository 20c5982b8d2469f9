/**
 * One line about an error for the CLI's output: its message, or its code when the message is
 * empty (Node's AggregateError for a host with several addresses has none), or its class.
 *
 * @module
 */
export function describeError(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  const code = "code" in error && typeof error.code === "string" ? error.code : "";
  const message = error.message !== "" ? error.message : code !== "" ? code : error.name;
  // Postgres explains a missing database, but not how to get one.
  return code === "3D000" ? `${message} (create it first, e.g. with createdb)` : message;
}
