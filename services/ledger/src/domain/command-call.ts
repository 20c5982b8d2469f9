import type { Json } from "./types.js";

/**
 * What one command sends to `ledger_command`: its name, the request its idempotency
 * fingerprint covers, and the arguments the SQL gets (the request plus what the service
 * generates, such as a hold id the caller left empty). A command builds it once, in one place,
 * for both the single RPC (commands.ts, usage.ts) and ExecuteBatch (batches.ts), so a command
 * means the same in a batch and alone.
 */
export interface CommandCall {
  command: string;
  request: Json;
  args: Json;
}

/** A command's input without its idempotency key: in a batch, the batch's key covers it. */
export type Unkeyed<T> = Omit<T, "idempotencyKey">;

/**
 * The `categories` argument of Spend, Reserve and their usage forms, only when some are given:
 * a request without them keeps the arguments, and so the idempotency fingerprint, it had before
 * grants.
 */
export function categoriesArg(categories: readonly string[] | undefined): { categories?: readonly string[] } {
  return categories !== undefined && categories.length > 0 ? { categories } : {};
}
