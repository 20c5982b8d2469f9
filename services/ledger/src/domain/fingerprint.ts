import { createHash } from "node:crypto";
import type { Caller } from "./types.js";

/**
 * The fingerprint stored with an idempotency key, so that the key reused with a different
 * request is refused (IDEMPOTENCY_KEY_REUSED) instead of replaying the first answer. It covers
 * the request as the caller sent it (not generated ids) and the key's wallet scope, so a scoped
 * key can never replay another wallet's answer.
 */
export function requestFingerprint(caller: Caller, command: string, request: unknown): Buffer {
  return createHash("sha256").update(canonicalJson([command, caller.scopeWalletId, request])).digest();
}

/** JSON with object keys sorted, so that equal requests hash equally. */
export function canonicalJson(value: unknown): string {
  return JSON.stringify(value, (_key, v: unknown) => {
    if (v !== null && typeof v === "object" && !Array.isArray(v)) {
      return Object.fromEntries(Object.entries(v as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
    }
    return v;
  });
}
