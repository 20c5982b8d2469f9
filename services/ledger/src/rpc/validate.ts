import { timestampDate, type Timestamp } from "@bufbuild/protobuf/wkt";
import { InvalidFieldError } from "@holdfast/common/errors";
import { isUuid, PAGE_SIZE_DEFAULT, PAGE_SIZE_MAX, WALLET_ID_PATTERN } from "@holdfast/common/patterns";

/**
 * Request validation. Every check names the field at fault, so a caller can fix a request
 * from the error alone. The limits are the ones documented in proto/holdfast/v1/ledger.proto.
 */

const ASSET_PATTERN = /^[A-Z][A-Z0-9_]{0,31}$/;
const IDEMPOTENCY_KEY_PATTERN = /^[\x20-\x7e]{1,255}$/;
const METADATA_KEY_PATTERN = /^[A-Za-z0-9_.:-]{1,64}$/;
const CATEGORY_PATTERN = /^[a-z0-9_-]{1,64}$/;

const METADATA_ENTRIES_MAX = 32;
const METADATA_VALUE_LENGTH_MAX = 512;
const METADATA_BYTES_MAX = 8 * 1024;
const TTL_SECONDS_MAX = 7 * 24 * 3600;
const INT64_MAX = 2n ** 63n - 1n;
const CATEGORIES_MAX = 16;
const PRIORITY_MAX = 1000;
/** The range of google.protobuf.Timestamp: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z. */
const TIMESTAMP_SECONDS_MIN = -62_135_596_800n;
const TIMESTAMP_SECONDS_MAX = 253_402_300_799n;
const TIMESTAMP_NANOS_MAX = 999_999_999;

export function walletId(value: string, field = "wallet_id"): string {
  if (value === "") {
    throw new InvalidFieldError(field, "is required");
  }
  if (!WALLET_ID_PATTERN.test(value)) {
    throw new InvalidFieldError(field, "must be 1-128 characters of A-Z, a-z, 0-9, _, : or -");
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

/** A grant id the caller may leave empty (CreateGrant generates one). */
export function optionalGrantId(value: string): string {
  return value === "" ? "" : walletId(value, "grant_id");
}

export function grantId(value: string): string {
  return walletId(value, "grant_id");
}

/** A grant's category; empty means the default (null). */
export function optionalCategory(value: string): string | null {
  return value === "" ? null : category(value, "category");
}

function category(value: string, field: string): string {
  if (!CATEGORY_PATTERN.test(value)) {
    throw new InvalidFieldError(field, "must be 1-64 characters of a-z, 0-9, _ or -");
  }
  return value;
}

/** The category filter of Spend and Reserve: at most 16 categories; empty means every grant. */
export function categories(values: readonly string[]): string[] {
  if (values.length > CATEGORIES_MAX) {
    throw new InvalidFieldError("categories", `must have at most ${CATEGORIES_MAX} entries`);
  }
  return values.map((value) => category(value, "categories"));
}

/** A grant's priority: 0-1000, lower first; unset means the default (null). */
export function optionalPriority(value: number | undefined): number | null {
  if (value === undefined) {
    return null;
  }
  if (!Number.isInteger(value) || value < 0 || value > PRIORITY_MAX) {
    throw new InvalidFieldError("priority", `must be between 0 and ${PRIORITY_MAX}`);
  }
  return value;
}

/** An optional point in time; unset is null. */
export function optionalTimestamp(value: Timestamp | undefined, field: string): Date | null {
  if (value === undefined) {
    return null;
  }
  const inRange = value.seconds >= TIMESTAMP_SECONDS_MIN && value.seconds <= TIMESTAMP_SECONDS_MAX;
  if (!inRange || value.nanos < 0 || value.nanos > TIMESTAMP_NANOS_MAX) {
    throw new InvalidFieldError(field, "must be a time between the years 1 and 9999");
  }
  return timestampDate(value);
}

/**
 * A grant's validity window: `expires_at` (exclusive) must be after `starts_at` (inclusive).
 * Checked here so that the refusal is not recorded under the idempotency key; that expires_at
 * lies in the future depends on the command's clock and is the ledger's check.
 */
export function grantWindow(startsAt: Date | null, expiresAt: Date | null): void {
  if (startsAt !== null && expiresAt !== null && expiresAt.getTime() <= startsAt.getTime()) {
    throw new InvalidFieldError("expires_at", "must be after starts_at");
  }
}

export function asset(value: string, field = "asset"): string {
  if (value === "") {
    throw new InvalidFieldError(field, "is required");
  }
  if (!ASSET_PATTERN.test(value)) {
    throw new InvalidFieldError(field, "must be 1-32 characters of A-Z, 0-9 or _, starting with a letter");
  }
  return value;
}

export function amount(value: bigint, field = "amount"): bigint {
  if (value <= 0n) {
    throw new InvalidFieldError(field, "must be a positive number of minor units");
  }
  if (value > INT64_MAX) {
    throw new InvalidFieldError(field, "must fit in int64");
  }
  return value;
}

export function optionalAmount(value: bigint | undefined, field = "amount"): bigint | null {
  return value === undefined ? null : amount(value, field);
}

export function idempotencyKey(value: string): string {
  if (value === "") {
    throw new InvalidFieldError("idempotency_key", "is required");
  }
  if (!IDEMPOTENCY_KEY_PATTERN.test(value)) {
    throw new InvalidFieldError("idempotency_key", "must be 1-255 printable ASCII characters");
  }
  return value;
}

export function transferId(value: string, field = "transfer_id"): string {
  return uuid(value, field, "a transfer id");
}

/**
 * A required id that is a UUID as the database prints it (lowercase); `what` names it in the
 * message, e.g. "a transfer id".
 */
export function uuid(value: string, field: string, what: string): string {
  if (value === "") {
    throw new InvalidFieldError(field, "is required");
  }
  if (!isUuid(value) || value !== value.toLowerCase()) {
    throw new InvalidFieldError(field, `must be ${what} (a lowercase UUID)`);
  }
  return value;
}

/** ttl_seconds: 1 to 7 days; 0 takes `fallback` when the field is optional. */
export function ttlSeconds(value: number, fallback: number | null): number {
  if (value === 0 && fallback !== null) {
    return fallback;
  }
  if (value < 1 || value > TTL_SECONDS_MAX) {
    throw new InvalidFieldError("ttl_seconds", `must be between 1 and ${TTL_SECONDS_MAX}`);
  }
  return value;
}

export function pageSize(value: number): number {
  if (value === 0) {
    return PAGE_SIZE_DEFAULT;
  }
  if (value > PAGE_SIZE_MAX) {
    throw new InvalidFieldError("page_size", `must be at most ${PAGE_SIZE_MAX}`);
  }
  return value;
}

/** Free text such as a key's name: 1 to `max` characters, no control characters. */
export function label(value: string, field: string, max: number): string {
  if (value.length < 1 || value.length > max) {
    throw new InvalidFieldError(field, `must be 1-${max} characters`);
  }
  if (/[\u0000-\u001f\u007f]/.test(value)) {
    throw new InvalidFieldError(field, "must not contain control characters");
  }
  return value;
}

export function metadata(value: Record<string, string>, field = "metadata"): Record<string, string> {
  const entries = Object.entries(value);
  if (entries.length > METADATA_ENTRIES_MAX) {
    throw new InvalidFieldError(field, `must have at most ${METADATA_ENTRIES_MAX} entries`);
  }
  let bytes = 0;
  for (const [key, entry] of entries) {
    if (!METADATA_KEY_PATTERN.test(key)) {
      throw new InvalidFieldError(`${field}.${key.slice(0, 64)}`, "keys must be 1-64 characters of A-Z, a-z, 0-9, _, ., : or -");
    }
    if (entry.length > METADATA_VALUE_LENGTH_MAX) {
      throw new InvalidFieldError(`${field}.${key}`, `must be at most ${METADATA_VALUE_LENGTH_MAX} characters`);
    }
    if (entry.includes("\u0000")) {
      throw new InvalidFieldError(`${field}.${key}`, "must not contain NUL characters");
    }
    bytes += Buffer.byteLength(key) + Buffer.byteLength(entry);
  }
  if (bytes > METADATA_BYTES_MAX) {
    throw new InvalidFieldError(field, `must be at most ${METADATA_BYTES_MAX} bytes in all`);
  }
  return value;
}
