import { invalidArgument } from "@holdfast/common/errors";

/**
 * Request validation. Every check names the field at fault, so a caller can fix a request
 * from the error alone. The limits are the ones documented in proto/holdfast/v1/ledger.proto.
 */

export const wallet_id_pattern = /^[A-Za-z0-9_:-]{1,128}$/;
export const asset_pattern = /^[A-Z][A-Z0-9_]{0,31}$/;
const idempotency_key_pattern = /^[\x20-\x7e]{1,255}$/;
const metadata_key_pattern = /^[A-Za-z0-9_.:-]{1,64}$/;
const uuid_pattern = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

export const metadata_entries_max = 32;
export const metadata_value_length_max = 512;
export const metadata_bytes_max = 8 * 1024;
export const ttl_seconds_max = 7 * 24 * 3600;
export const page_size_default = 50;
export const page_size_max = 500;
const int64_max = 2n ** 63n - 1n;

export function walletId(value: string, field = "wallet_id"): string {
  if (value === "") {
    throw invalidArgument(field, "is required");
  }
  if (!wallet_id_pattern.test(value)) {
    throw invalidArgument(field, "must be 1-128 characters of A-Z, a-z, 0-9, _, : or -");
  }
  return value;
}

/** A hold id the caller may leave empty (Reserve generates one). */
export function optionalHoldId(value: string): string {
  return value === "" ? "" : walletId(value, "hold_id");
}

export function holdId(value: string): string {
  return walletId(value, "hold_id");
}

export function asset(value: string, field = "asset"): string {
  if (value === "") {
    throw invalidArgument(field, "is required");
  }
  if (!asset_pattern.test(value)) {
    throw invalidArgument(field, "must be 1-32 characters of A-Z, 0-9 or _, starting with a letter");
  }
  return value;
}

export function amount(value: bigint, field = "amount"): bigint {
  if (value <= 0n) {
    throw invalidArgument(field, "must be a positive number of minor units");
  }
  if (value > int64_max) {
    throw invalidArgument(field, "must fit in int64");
  }
  return value;
}

export function optionalAmount(value: bigint | undefined, field = "amount"): bigint | null {
  return value === undefined ? null : amount(value, field);
}

export function idempotencyKey(value: string): string {
  if (value === "") {
    throw invalidArgument("idempotency_key", "is required");
  }
  if (!idempotency_key_pattern.test(value)) {
    throw invalidArgument("idempotency_key", "must be 1-255 printable ASCII characters");
  }
  return value;
}

export function transferId(value: string, field = "transfer_id"): string {
  if (value === "") {
    throw invalidArgument(field, "is required");
  }
  if (!uuid_pattern.test(value)) {
    throw invalidArgument(field, "must be a transfer id (a lowercase UUID)");
  }
  return value;
}

/** ttl_seconds: 1 to 7 days; 0 takes `fallback` when the field is optional. */
export function ttlSeconds(value: number, fallback: number | null): number {
  if (value === 0 && fallback !== null) {
    return fallback;
  }
  if (value < 1 || value > ttl_seconds_max) {
    throw invalidArgument("ttl_seconds", `must be between 1 and ${ttl_seconds_max}`);
  }
  return value;
}

export function pageSize(value: number): number {
  if (value === 0) {
    return page_size_default;
  }
  if (value > page_size_max) {
    throw invalidArgument("page_size", `must be at most ${page_size_max}`);
  }
  return value;
}

/** Free text such as a key's name: 1 to `max` characters, no control characters. */
export function label(value: string, field: string, max: number): string {
  if (value.length < 1 || value.length > max) {
    throw invalidArgument(field, `must be 1-${max} characters`);
  }
  if (/[\u0000-\u001f\u007f]/.test(value)) {
    throw invalidArgument(field, "must not contain control characters");
  }
  return value;
}

export function metadata(value: Record<string, string>, field = "metadata"): Record<string, string> {
  const entries = Object.entries(value);
  if (entries.length > metadata_entries_max) {
    throw invalidArgument(field, `must have at most ${metadata_entries_max} entries`);
  }
  let bytes = 0;
  for (const [key, entry] of entries) {
    if (!metadata_key_pattern.test(key)) {
      throw invalidArgument(`${field}.${key.slice(0, 64)}`, "keys must be 1-64 characters of A-Z, a-z, 0-9, _, ., : or -");
    }
    if (entry.length > metadata_value_length_max) {
      throw invalidArgument(`${field}.${key}`, `must be at most ${metadata_value_length_max} characters`);
    }
    if (entry.includes("\u0000")) {
      throw invalidArgument(`${field}.${key}`, "must not contain NUL characters");
    }
    bytes += Buffer.byteLength(key) + Buffer.byteLength(entry);
  }
  if (bytes > metadata_bytes_max) {
    throw invalidArgument(field, `must be at most ${metadata_bytes_max} bytes in all`);
  }
  return value;
}
