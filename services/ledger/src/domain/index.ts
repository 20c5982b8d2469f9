/**
 * The ledger core without RPC, as the service, the benchmarks and the tests use it: the
 * `Ledger` factory and the domain values it takes and returns.
 *
 * @module
 */
export { createLedger, type Ledger, type LedgerOptions } from "./ledger.js";
export type * from "./types.js";
export type * from "./batches.js";
