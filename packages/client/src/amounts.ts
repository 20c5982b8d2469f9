/**
 * Amounts on their way to the wire. Money is int64 minor units, `bigint` in TypeScript; a
 * caller may also write a safe integer `number` (500) or a decimal string ("500", as the JSON of
 * the API spells int64), never a fraction. Whether the amount is positive, or fits the wallet,
 * is the server's to say, with the same INVALID_FIELD it gives every client; here only what
 * cannot even be encoded is refused, naming the field.
 *
 * @module
 */
import { Code } from "@connectrpc/connect";
import { InvalidFieldError } from "./errors.js";

/** An amount of minor units as callers may write it. */
export type Amount = bigint | number | string;

const INT64_MIN = -(2n ** 63n);
const INT64_MAX = 2n ** 63n - 1n;

/** The int64 of `value`, or an InvalidFieldError naming `field`. */
export function toInt64(value: Amount, field: string): bigint {
  let result: bigint;
  if (typeof value === "bigint") {
    result = value;
  } else if (typeof value === "number") {
    if (!Number.isSafeInteger(value)) throw invalidField(field, "must be an integer number of minor units (a bigint beyond 2^53)");
    result = BigInt(value);
  } else if (typeof value === "string" && /^-?[0-9]{1,20}$/.test(value)) {
    result = BigInt(value);
  } else {
    throw invalidField(field, "must be an integer number of minor units");
  }
  if (result < INT64_MIN || result > INT64_MAX) throw invalidField(field, "must fit an int64");
  return result;
}

/** The int64 of an optional amount: undefined stays undefined (the server's default applies). */
export function toOptionalInt64(value: Amount | undefined, field: string): bigint | undefined {
  return value === undefined ? undefined : toInt64(value, field);
}

/** The error the client raises before sending: a request field it cannot put on the wire. */
function invalidField(field: string, why: string): InvalidFieldError {
  return new InvalidFieldError({ code: Code.InvalidArgument, reason: "INVALID_FIELD", message: `${field}: ${why}`, field, metadata: {} });
}
