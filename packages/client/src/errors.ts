/**
 * Typed errors. Every error Holdfast answers carries one `holdfast.v1.ErrorDetail` whose `reason`
 * names the case (docs/architecture.md, "The public contract"); the client turns it into an
 * instance of the class for that reason, all subclasses of {@link HoldfastError}, so callers
 * branch with `instanceof` (or on `reason`) and never parse messages. An error that carries no
 * detail (the connection failed, the caller cancelled) gets a reason derived from its code
 * (`UNAVAILABLE`, `DEADLINE_EXCEEDED`, `CANCELED`, ...), and the class of that reason when it
 * has one.
 *
 * @module
 */
import { Code, ConnectError } from "@connectrpc/connect";
import { ErrorDetailSchema } from "#gen/holdfast/v1/errors_pb";

/** What an error carries besides its reason, as the ErrorDetail spells it. */
interface ErrorParts {
  readonly code: Code;
  readonly reason: string;
  readonly message: string;
  readonly field: string;
  readonly metadata: Readonly<Record<string, string>>;
  readonly cause?: unknown;
}

/**
 * Any error of a Holdfast call. `code` is the Connect/gRPC code, `reason` the ErrorDetail's
 * reason, `field` the request field at fault (for INVALID_FIELD and a wallet outside a key's
 * scope; empty otherwise), `metadata` the facts the server added (`available`,
 * `retry_after_ms`, ...). `cause` is the underlying ConnectError.
 */
export class HoldfastError extends Error {
  override readonly name: string = "HoldfastError";
  readonly code: Code;
  readonly reason: string;
  readonly field: string;
  readonly metadata: Readonly<Record<string, string>>;

  constructor(parts: ErrorParts) {
    super(parts.message, parts.cause === undefined ? undefined : { cause: parts.cause });
    this.code = parts.code;
    this.reason = parts.reason;
    this.field = parts.field;
    this.metadata = parts.metadata;
  }

  /**
   * The typed error for anything a call threw: a HoldfastError as it is, a ConnectError by the
   * reason of its ErrorDetail (or of its code when it has none), anything else as a
   * ConnectError would read it (INTERNAL for an unknown value, CANCELED for an abort).
   */
  static from(error: unknown): HoldfastError {
    if (error instanceof HoldfastError) return error;
    const connectError = ConnectError.from(error);
    const [detail] = connectError.findDetails(ErrorDetailSchema);
    const reason = detail?.reason || reasonOfCode(connectError.code);
    const parts: ErrorParts = {
      code: connectError.code,
      reason,
      message: detail?.message || connectError.rawMessage,
      field: detail?.field ?? "",
      metadata: { ...detail?.metadata },
      cause: connectError,
    };
    const Class = ERROR_CLASSES[reason];
    return Class === undefined ? new HoldfastError(parts) : new Class(parts);
  }
}

/** `Code.DeadlineExceeded` reads `DEADLINE_EXCEEDED`: the gRPC spelling of the code. */
function reasonOfCode(code: Code): string {
  return (Code[code] ?? "Unknown").replace(/([a-z])([A-Z])/g, "$1_$2").toUpperCase();
}

/** A minor-unit amount the server sent as a decimal string, when it is one. */
function bigintOf(value: string | undefined): bigint | undefined {
  return value !== undefined && /^-?[0-9]{1,19}$/.test(value) ? BigInt(value) : undefined;
}

// FAILED_PRECONDITION: the request was valid, the state of the ledger refused it. A refusal is
// recorded under the command's idempotency key: retrying with the same key answers the same
// refusal, so retry with a new key once something changed.

/**
 * INSUFFICIENT_FUNDS: the wallet cannot pay. `available` is what it could pay in the request's
 * categories (all when none were given), `categories` the categories the request named.
 */
export class InsufficientFundsError extends HoldfastError {
  override readonly name: string = "InsufficientFundsError";
  readonly available: bigint | undefined = bigintOf(this.metadata["available"]);
  readonly categories: readonly string[] = this.metadata["categories"]?.split(",").filter(Boolean) ?? [];
}
/** WALLET_FROZEN: a frozen wallet refuses new debits. */
export class WalletFrozenError extends HoldfastError {
  override readonly name: string = "WalletFrozenError";
}
/** WALLET_CLOSED: a closed wallet refuses everything that moves money but Release. */
export class WalletClosedError extends HoldfastError {
  override readonly name: string = "WalletClosedError";
}
/** HOLD_EXPIRED: the hold's TTL ran out before the capture; its funds went back. */
export class HoldExpiredError extends HoldfastError {
  override readonly name: string = "HoldExpiredError";
}
/** HOLD_NOT_PENDING: the hold was already captured, released or expired. */
export class HoldNotPendingError extends HoldfastError {
  override readonly name: string = "HoldNotPendingError";
}
/** REFUND_EXCEEDS_REMAINING: more than remains refundable of the transfer. */
export class RefundExceedsRemainingError extends HoldfastError {
  override readonly name: string = "RefundExceedsRemainingError";
}
/** NOT_REFUNDABLE: only spends and captures can be refunded. */
export class NotRefundableError extends HoldfastError {
  override readonly name: string = "NotRefundableError";
}
/** WEBHOOK_ENDPOINT_DISABLED: the endpoint is disabled. */
export class WebhookEndpointDisabledError extends HoldfastError {
  override readonly name: string = "WebhookEndpointDisabledError";
}
/** MODEL_NOT_PRICED: the rate card has no price for the model or one of the usage's classes. */
export class ModelNotPricedError extends HoldfastError {
  override readonly name: string = "ModelNotPricedError";
}
/** GRANT_NOT_ACTIVE: the grant already expired or was voided; `status` says which. */
export class GrantNotActiveError extends HoldfastError {
  override readonly name: string = "GrantNotActiveError";
  readonly status: string = this.metadata["status"] ?? "";
}

// NOT_FOUND: another tenant's objects, and another wallet's for a wallet-scoped key, look
// exactly like ones that do not exist.

/** WALLET_NOT_FOUND. */
export class WalletNotFoundError extends HoldfastError {
  override readonly name: string = "WalletNotFoundError";
}
/** HOLD_NOT_FOUND. */
export class HoldNotFoundError extends HoldfastError {
  override readonly name: string = "HoldNotFoundError";
}
/** TRANSFER_NOT_FOUND. */
export class TransferNotFoundError extends HoldfastError {
  override readonly name: string = "TransferNotFoundError";
}
/** API_KEY_NOT_FOUND. */
export class ApiKeyNotFoundError extends HoldfastError {
  override readonly name: string = "ApiKeyNotFoundError";
}
/** SERVICE_NOT_FOUND: the health service does not know the service asked about. */
export class ServiceNotFoundError extends HoldfastError {
  override readonly name: string = "ServiceNotFoundError";
}
/** WEBHOOK_ENDPOINT_NOT_FOUND. */
export class WebhookEndpointNotFoundError extends HoldfastError {
  override readonly name: string = "WebhookEndpointNotFoundError";
}
/** WEBHOOK_DELIVERY_NOT_FOUND. */
export class WebhookDeliveryNotFoundError extends HoldfastError {
  override readonly name: string = "WebhookDeliveryNotFoundError";
}
/** RATE_CARD_NOT_FOUND. */
export class RateCardNotFoundError extends HoldfastError {
  override readonly name: string = "RateCardNotFoundError";
}
/** GRANT_NOT_FOUND. */
export class GrantNotFoundError extends HoldfastError {
  override readonly name: string = "GrantNotFoundError";
}
/** BALANCE_ALERT_NOT_FOUND: DeleteBalanceAlert of an alert the tenant does not have. */
export class BalanceAlertNotFoundError extends HoldfastError {
  override readonly name: string = "BalanceAlertNotFoundError";
}

// ALREADY_EXISTS.

/** IDEMPOTENCY_KEY_REUSED: the key was used before with another request. */
export class IdempotencyKeyReusedError extends HoldfastError {
  override readonly name: string = "IdempotencyKeyReusedError";
}
/** HOLD_ALREADY_EXISTS: the hold id is taken (by a command with another idempotency key). */
export class HoldAlreadyExistsError extends HoldfastError {
  override readonly name: string = "HoldAlreadyExistsError";
}
/** WALLET_ALREADY_EXISTS: CreateWallet of a wallet that exists. */
export class WalletAlreadyExistsError extends HoldfastError {
  override readonly name: string = "WalletAlreadyExistsError";
}
/** GRANT_ALREADY_EXISTS: the grant id is taken. */
export class GrantAlreadyExistsError extends HoldfastError {
  override readonly name: string = "GrantAlreadyExistsError";
}

// The request itself.

/** INVALID_FIELD (INVALID_ARGUMENT): `field` names the request field at fault. */
export class InvalidFieldError extends HoldfastError {
  override readonly name: string = "InvalidFieldError";
}
/** UNAUTHENTICATED: the key is missing, malformed, unknown, revoked or expired. */
export class UnauthenticatedError extends HoldfastError {
  override readonly name: string = "UnauthenticatedError";
}
/** PERMISSION_DENIED: the key's role is too low, or the wallet is outside its scope (`field`). */
export class PermissionDeniedError extends HoldfastError {
  override readonly name: string = "PermissionDeniedError";
}

// Capacity and availability.

/**
 * OVERLOADED (RESOURCE_EXHAUSTED): too much in flight, or a key's or tenant's rate limit;
 * `retryAfterMs` says when a token is back. Not retried by the client: the caller decides.
 */
export class OverloadedError extends HoldfastError {
  override readonly name: string = "OverloadedError";
  readonly retryAfterMs: number | undefined = numberOf(this.metadata["retry_after_ms"]);
}
/** WEBHOOK_ENDPOINT_LIMIT: the tenant has as many endpoints as it may. */
export class WebhookEndpointLimitError extends HoldfastError {
  override readonly name: string = "WebhookEndpointLimitError";
}
/** BALANCE_ALERT_LIMIT: the tenant has as many balance alerts as it may. */
export class BalanceAlertLimitError extends HoldfastError {
  override readonly name: string = "BalanceAlertLimitError";
}
/** UNAVAILABLE: the server (or its database) cannot be reached. Retried by the client. */
export class UnavailableError extends HoldfastError {
  override readonly name: string = "UnavailableError";
}
/** DRAINING (UNAVAILABLE): the server is shutting down. Retried by the client. */
export class DrainingError extends HoldfastError {
  override readonly name: string = "DrainingError";
}
/** INTERNAL: something unexpected; the server logged it. */
export class InternalError extends HoldfastError {
  override readonly name: string = "InternalError";
}

function numberOf(value: string | undefined): number | undefined {
  return value !== undefined && /^[0-9]{1,15}$/.test(value) ? Number(value) : undefined;
}

/** The class of each reason of the public contract (the table in errors.proto). */
const ERROR_CLASSES: Readonly<Record<string, new (parts: ErrorParts) => HoldfastError>> = {
  INSUFFICIENT_FUNDS: InsufficientFundsError,
  WALLET_FROZEN: WalletFrozenError,
  WALLET_CLOSED: WalletClosedError,
  HOLD_EXPIRED: HoldExpiredError,
  HOLD_NOT_PENDING: HoldNotPendingError,
  REFUND_EXCEEDS_REMAINING: RefundExceedsRemainingError,
  NOT_REFUNDABLE: NotRefundableError,
  WEBHOOK_ENDPOINT_DISABLED: WebhookEndpointDisabledError,
  MODEL_NOT_PRICED: ModelNotPricedError,
  GRANT_NOT_ACTIVE: GrantNotActiveError,
  WALLET_NOT_FOUND: WalletNotFoundError,
  HOLD_NOT_FOUND: HoldNotFoundError,
  TRANSFER_NOT_FOUND: TransferNotFoundError,
  API_KEY_NOT_FOUND: ApiKeyNotFoundError,
  SERVICE_NOT_FOUND: ServiceNotFoundError,
  WEBHOOK_ENDPOINT_NOT_FOUND: WebhookEndpointNotFoundError,
  WEBHOOK_DELIVERY_NOT_FOUND: WebhookDeliveryNotFoundError,
  RATE_CARD_NOT_FOUND: RateCardNotFoundError,
  GRANT_NOT_FOUND: GrantNotFoundError,
  BALANCE_ALERT_NOT_FOUND: BalanceAlertNotFoundError,
  IDEMPOTENCY_KEY_REUSED: IdempotencyKeyReusedError,
  HOLD_ALREADY_EXISTS: HoldAlreadyExistsError,
  WALLET_ALREADY_EXISTS: WalletAlreadyExistsError,
  GRANT_ALREADY_EXISTS: GrantAlreadyExistsError,
  INVALID_FIELD: InvalidFieldError,
  UNAUTHENTICATED: UnauthenticatedError,
  PERMISSION_DENIED: PermissionDeniedError,
  OVERLOADED: OverloadedError,
  WEBHOOK_ENDPOINT_LIMIT: WebhookEndpointLimitError,
  BALANCE_ALERT_LIMIT: BalanceAlertLimitError,
  UNAVAILABLE: UnavailableError,
  DRAINING: DrainingError,
  INTERNAL: InternalError,
};

/** The reasons the client knows a class for; an unknown reason still reads as a HoldfastError. */
export const ERROR_REASONS: readonly string[] = Object.keys(ERROR_CLASSES);
