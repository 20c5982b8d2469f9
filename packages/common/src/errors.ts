/**
 * The only way errors leave a Holdfast process: a ConnectError carrying a
 * `holdfast.v1.ErrorDetail` whose `reason` names the case (docs/architecture.md, "The public contract"), so clients
 * branch on `reason` and never parse messages.
 *
 * @module
 */
import { Code, ConnectError } from "@connectrpc/connect";
import type { Logger } from "pino";

import { ErrorDetailSchema } from "@holdfast/gen/holdfast/v1/errors_pb";
import { isUnavailableError } from "./pg.js";

/** Optional parts of an ErrorDetail. */
export interface ErrorExtra {
  /** The request field at fault, in proto name form (`amount`, `metadata.model`). */
  readonly field?: string;
  /** Facts that help the caller act, e.g. `{ available: "120" }`. */
  readonly metadata?: Readonly<Record<string, string>>;
}

/**
 * Builds a ConnectError with an ErrorDetail attached. `message` is shown to the caller as is:
 * it must be safe to show (no SQL, no stack, nothing from another tenant).
 */
export function ledgerError(code: Code, reason: string, message: string, extra: ErrorExtra = {}): ConnectError {
  const detail = {
    desc: ErrorDetailSchema,
    value: { reason, message, field: extra.field ?? "", metadata: { ...extra.metadata } },
  };
  return new ConnectError(message, code, undefined, [detail]);
}

/** An INVALID_ARGUMENT error for one malformed field: reason `INVALID_FIELD`, message `"<field>: <why>"`. */
export function invalidArgument(field: string, why: string): ConnectError {
  return ledgerError(Code.InvalidArgument, "INVALID_FIELD", `${field}: ${why}`, { field });
}

/**
 * Turns anything a handler threw into an error that is safe to send. ConnectErrors pass
 * through; database connection failures become UNAVAILABLE (which clients retry); everything
 * else becomes a generic INTERNAL error, and the real error goes only to the log.
 */
export function toConnectError(err: unknown, logger: Logger): ConnectError {
  if (err instanceof ConnectError) {
    return err;
  }
  // An await on an aborted signal (deadline, drain) throws an AbortError whose cause is the
  // signal's reason; when that reason is already a ConnectError it is the answer to send.
  const cause = (err as { name?: unknown; cause?: unknown } | null)?.cause;
  if ((err as { name?: unknown } | null)?.name === "AbortError" && cause instanceof ConnectError) {
    return cause;
  }
  if (isUnavailableError(err)) {
    logger.warn({ err }, "database unavailable");
    return ledgerError(Code.Unavailable, "UNAVAILABLE", "database unavailable");
  }
  logger.error({ err }, "internal error");
  return ledgerError(Code.Internal, "INTERNAL", "internal error");
}
