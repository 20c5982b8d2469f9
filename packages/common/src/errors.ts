/**
 * Holdfast's one error model. Code below the RPC layer (the ledger core, the key store, the
 * webhook store, the watch feed) throws the plain errors defined here and returns refusals as
 * values; it never builds a transport error. The RPC layer turns whatever a handler threw into
 * a ConnectError carrying a `holdfast.v1.ErrorDetail` in exactly one place, {@link toConnectError},
 * so every service answers a case with the same code, reason, field and metadata
 * (docs/architecture.md, "The public contract"). Clients branch on `reason` and never parse
 * messages.
 *
 * @module
 */
import { Code, ConnectError } from "@connectrpc/connect";
import type { Logger } from "pino";

import { ErrorDetailSchema } from "@holdfast/gen/holdfast/v1/errors_pb";
import { isUnavailableError } from "./pg.js";

/**
 * Every `reason` of the public contract and the code it travels with, as the table in
 * proto/holdfast/v1/errors.proto lists them. A reason missing here cannot be thrown.
 */
const REASON_CODES = {
  INSUFFICIENT_FUNDS: Code.FailedPrecondition,
  WALLET_FROZEN: Code.FailedPrecondition,
  WALLET_CLOSED: Code.FailedPrecondition,
  HOLD_EXPIRED: Code.FailedPrecondition,
  HOLD_NOT_PENDING: Code.FailedPrecondition,
  REFUND_EXCEEDS_REMAINING: Code.FailedPrecondition,
  NOT_REFUNDABLE: Code.FailedPrecondition,
  WEBHOOK_ENDPOINT_DISABLED: Code.FailedPrecondition,
  MODEL_NOT_PRICED: Code.FailedPrecondition,
  GRANT_NOT_ACTIVE: Code.FailedPrecondition,
  WALLET_NOT_FOUND: Code.NotFound,
  HOLD_NOT_FOUND: Code.NotFound,
  TRANSFER_NOT_FOUND: Code.NotFound,
  API_KEY_NOT_FOUND: Code.NotFound,
  SERVICE_NOT_FOUND: Code.NotFound,
  WEBHOOK_ENDPOINT_NOT_FOUND: Code.NotFound,
  WEBHOOK_DELIVERY_NOT_FOUND: Code.NotFound,
  RATE_CARD_NOT_FOUND: Code.NotFound,
  GRANT_NOT_FOUND: Code.NotFound,
  BALANCE_ALERT_NOT_FOUND: Code.NotFound,
  IDEMPOTENCY_KEY_REUSED: Code.AlreadyExists,
  HOLD_ALREADY_EXISTS: Code.AlreadyExists,
  WALLET_ALREADY_EXISTS: Code.AlreadyExists,
  GRANT_ALREADY_EXISTS: Code.AlreadyExists,
  INVALID_FIELD: Code.InvalidArgument,
  UNAUTHENTICATED: Code.Unauthenticated,
  PERMISSION_DENIED: Code.PermissionDenied,
  OVERLOADED: Code.ResourceExhausted,
  WEBHOOK_ENDPOINT_LIMIT: Code.ResourceExhausted,
  BALANCE_ALERT_LIMIT: Code.ResourceExhausted,
  UNAVAILABLE: Code.Unavailable,
  DRAINING: Code.Unavailable,
  INTERNAL: Code.Internal,
} as const satisfies Record<string, Code>;

/** A reason of the public contract (the `reason` of `holdfast.v1.ErrorDetail`). */
export type ErrorReason = keyof typeof REASON_CODES;

/** The reasons that answer NOT_FOUND. */
export type NotFoundReason = {
  [R in ErrorReason]: (typeof REASON_CODES)[R] extends Code.NotFound ? R : never;
}[ErrorReason];

/** Optional parts of an ErrorDetail. */
export interface ErrorExtra {
  /** The request field at fault, in proto name form (`amount`, `metadata.model`). */
  readonly field?: string;
  /** Facts that help the caller act, e.g. `{ available: "120" }`. */
  readonly metadata?: Readonly<Record<string, string>>;
  /** Error details sent after the ErrorDetail, e.g. a refused batch's BatchFailure. */
  readonly details?: ErrorDetails;
}

/** Further error details, as ConnectError takes them. */
type ErrorDetails = NonNullable<ConstructorParameters<typeof ConnectError>[3]>;

/**
 * An error with a reason of the public contract. `message` is shown to the caller as is: it
 * must be safe to show (no SQL, no stack, nothing from another tenant). The subclasses below
 * name the common cases; use this class directly only for a reason none of them covers.
 */
export class HoldfastError extends Error {
  override readonly name: string = "HoldfastError";
  /** The request field at fault; empty when the error is not about one field. */
  readonly field: string;
  readonly metadata: Readonly<Record<string, string>>;
  readonly details: ErrorDetails;

  constructor(
    readonly reason: ErrorReason,
    message: string,
    extra: ErrorExtra = {},
  ) {
    super(message);
    this.field = extra.field ?? "";
    this.metadata = { ...extra.metadata };
    this.details = extra.details ?? [];
  }
}

/** Malformed input: INVALID_ARGUMENT, reason INVALID_FIELD, message `"<field>: <why>"`. */
export class InvalidFieldError extends HoldfastError {
  override readonly name: string = "InvalidFieldError";

  constructor(field: string, why: string) {
    super("INVALID_FIELD", `${field}: ${why}`, { field });
  }
}

/**
 * A page token this server did not issue (forged, truncated, or naming an impossible cursor):
 * an invalid `page_token` field like any other.
 */
export class InvalidPageTokenError extends InvalidFieldError {
  override readonly name: string = "InvalidPageTokenError";

  constructor() {
    super("page_token", "is not one this server issued");
  }
}

/** Something the caller named does not exist, or is not theirs to see: NOT_FOUND. */
export class NotFoundError extends HoldfastError {
  override readonly name: string = "NotFoundError";

  constructor(reason: NotFoundReason, message: string) {
    super(reason, message);
  }
}

/** Too much work queued or in flight; the caller should retry with backoff: RESOURCE_EXHAUSTED. */
export class OverloadedError extends HoldfastError {
  override readonly name: string = "OverloadedError";

  constructor(message: string) {
    super("OVERLOADED", message);
  }
}

/** A dependency (the database) cannot be reached; the caller should retry: UNAVAILABLE. */
export class UnavailableError extends HoldfastError {
  override readonly name: string = "UnavailableError";

  constructor(message: string) {
    super("UNAVAILABLE", message);
  }
}

/** The call carries no valid credentials: UNAUTHENTICATED. */
export class UnauthenticatedError extends HoldfastError {
  override readonly name: string = "UnauthenticatedError";

  constructor(message: string) {
    super("UNAUTHENTICATED", message);
  }
}

/** The caller's key may not do this (role, or wallet scope when `field` is given): PERMISSION_DENIED. */
export class PermissionDeniedError extends HoldfastError {
  override readonly name: string = "PermissionDeniedError";

  constructor(message: string, field?: string) {
    super("PERMISSION_DENIED", message, field === undefined ? {} : { field });
  }
}

/**
 * A refusal as the ledger returns it: a value (recorded for idempotent replays), never an
 * exception below the RPC layer. `AMOUNT_OVERFLOW` is the one refusal reason that is not a
 * wire reason of its own: it travels as INVALID_FIELD naming the field.
 */
export interface Refusal {
  readonly reason: ErrorReason | "AMOUNT_OVERFLOW";
  readonly message: string;
  readonly metadata: Readonly<Record<string, string>>;
}

/** A refusal thrown by the RPC layer to answer the call with it. */
export class RefusedError extends HoldfastError {
  override readonly name: string = "RefusedError";

  readonly refusal: Refusal;

  constructor(refusal: Refusal) {
    super(...wireFormOf(refusal));
    this.refusal = refusal;
  }
}

/**
 * The reason, message and extra a refusal travels with. An INVALID_FIELD refusal (a check only
 * the ledger can make at command time, e.g. a grant's expires_at in the past) names its field
 * in `metadata.field` and travels like an {@link InvalidFieldError}; its message already reads
 * `"<field>: <why>"`.
 */
function wireFormOf(refusal: Refusal): [ErrorReason, string, ErrorExtra] {
  if (refusal.reason === "AMOUNT_OVERFLOW") {
    const field = refusal.metadata["field"] ?? "amount";
    return ["INVALID_FIELD", `${field}: ${refusal.message}`, { field }];
  }
  if (refusal.reason === "INVALID_FIELD") {
    return ["INVALID_FIELD", refusal.message, { field: refusal.metadata["field"] ?? "" }];
  }
  return [refusal.reason, refusal.message, { metadata: refusal.metadata }];
}

/**
 * Builds a ConnectError with an ErrorDetail attached, for the transport layer's own answers
 * (admission, draining, health). Everything else throws a {@link HoldfastError} and lets
 * {@link toConnectError} build the answer.
 */
export function ledgerError(code: Code, reason: string, message: string, extra: ErrorExtra = {}): ConnectError {
  const detail = {
    desc: ErrorDetailSchema,
    value: { reason, message, field: extra.field ?? "", metadata: { ...extra.metadata } },
  };
  return new ConnectError(message, code, undefined, [detail, ...(extra.details ?? [])]);
}

/**
 * The one mapping from anything a handler threw to an error that is safe to send. Holdfast
 * errors (refusals included) get their contract code and ErrorDetail; ConnectErrors pass
 * through; database connection failures become UNAVAILABLE (which clients retry); everything
 * else becomes a generic INTERNAL error, and the real error goes only to the log.
 */
export function toConnectError(err: unknown, logger: Logger): ConnectError {
  if (err instanceof HoldfastError) {
    return ledgerError(REASON_CODES[err.reason], err.reason, err.message, { field: err.field, metadata: err.metadata, details: err.details });
  }
  if (err instanceof ConnectError) {
    return err;
  }
  // An await on an aborted signal (deadline, drain) throws an AbortError whose cause is the
  // signal's reason; when that reason is already an answer it is the one to send.
  const cause = (err as { name?: unknown; cause?: unknown } | null)?.cause;
  if ((err as { name?: unknown } | null)?.name === "AbortError" && (cause instanceof ConnectError || cause instanceof HoldfastError)) {
    return toConnectError(cause, logger);
  }
  if (isUnavailableError(err)) {
    logger.warn({ err }, "database unavailable");
    return toConnectError(new UnavailableError("database unavailable"), logger);
  }
  logger.error({ err }, "internal error");
  return ledgerError(Code.Internal, "INTERNAL", "internal error");
}
