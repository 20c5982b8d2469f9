/**
 * How the console writes amounts, times and errors. Amounts stay bigint minor units from the
 * API to the screen (docs/architecture.md, "Domain model": never a float for money); the
 * ledger knows no decimals per asset, so the console shows minor units with digit grouping.
 *
 * @module
 */
import { Code, HoldfastError } from "@holdfast/client";

/** The shape of google.protobuf.Timestamp in the generated code. */
export interface TimestampLike {
  readonly seconds: bigint;
  readonly nanos: number;
}

/** `1234567n` as `1,234,567`, `-5n` as `-5`. */
export function formatAmount(value: bigint): string {
  const negative = value < 0n;
  const digits = (negative ? -value : value).toString();
  const grouped = digits.replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  return negative ? `-${grouped}` : grouped;
}

const NANO_PER_UNIT = 1_000_000_000n;

/**
 * Billionths of a minor unit as minor units, exactly: `200_000_000_000n` as `200`,
 * `1_250_000_000n` as `1.25`.
 */
export function formatNano(nano: bigint): string {
  const negative = nano < 0n;
  const plain = negative ? -nano : nano;
  const fraction = (plain % NANO_PER_UNIT).toString().padStart(9, "0").replace(/0+$/, "");
  const whole = formatAmount(plain / NANO_PER_UNIT);
  return `${negative ? "-" : ""}${whole}${fraction === "" ? "" : `.${fraction}`}`;
}

/** A whole number of minor units typed by a person, or null when it is not one. */
export function parseAmount(text: string): bigint | null {
  const plain = text.trim().replaceAll(",", "").replaceAll("_", "");
  return /^[0-9]{1,19}$/.test(plain) ? BigInt(plain) : null;
}

/** Milliseconds since the epoch of a timestamp (time, not money: a number is exact enough). */
export function timestampMs(ts: TimestampLike | undefined): number | undefined {
  return ts === undefined ? undefined : Number(ts.seconds) * 1000 + Math.floor(ts.nanos / 1e6);
}

/** `2026-01-01 12:00:00Z`, in UTC so that every reader of a screenshot sees the same time. */
export function formatTime(ts: TimestampLike | undefined): string {
  const ms = timestampMs(ts);
  return ms === undefined ? "—" : new Date(ms).toISOString().replace("T", " ").slice(0, 19) + "Z";
}

/** What is left until `untilMs`: `29d 23h`, `1h 02m`, `4m 05s`, `9s`, or `expired`. */
export function formatCountdown(untilMs: number, nowMs: number): string {
  const seconds = Math.floor((untilMs - nowMs) / 1000);
  if (seconds <= 0) return "expired";
  const d = Math.floor(seconds / 86_400);
  if (d >= 2) return `${d}d ${String(Math.floor((seconds % 86_400) / 3600)).padStart(2, "0")}h`;
  const h = Math.floor(seconds / 3600);
  const m = Math.floor((seconds % 3600) / 60);
  const s = seconds % 60;
  if (h > 0) return `${h}h ${String(m).padStart(2, "0")}m`;
  if (m > 0) return `${m}m ${String(s).padStart(2, "0")}s`;
  return `${s}s`;
}

/** An enum value's name without its prefix: `HOLD_STATUS_PENDING` → `pending`. */
export function enumLabel(names: Record<number, string>, value: number, prefix: string): string {
  const name = names[value] ?? String(value);
  return name.replace(prefix, "").toLowerCase().replaceAll("_", " ");
}

/** A long id cut for a narrow column; the full id stays in the title. */
export function shortId(id: string): string {
  return id.length > 14 ? `${id.slice(0, 8)}…${id.slice(-4)}` : id;
}

/** What went wrong and what to do about it, in words a console user can act on. */
export interface Problem {
  readonly message: string;
  readonly hint: string;
  readonly reason: string;
}

/** Turns any failure into a {@link Problem}; the ledger's messages are safe to show. */
export function describeError(error: unknown): Problem {
  if (!(error instanceof HoldfastError)) {
    return { message: String(error instanceof Error ? error.message : error), hint: "Reload the page and try again.", reason: "UNKNOWN" };
  }
  return { message: error.message, hint: hintOf(error), reason: error.reason };
}

function hintOf(error: HoldfastError): string {
  switch (error.code) {
    case Code.Unauthenticated:
      return "The key was not accepted: it is unknown, revoked or expired. Check it, or sign in with another key.";
    case Code.PermissionDenied:
      return "This key's role or wallet scope does not allow it. Use a key with a higher role.";
    case Code.Unavailable:
    case Code.DeadlineExceeded:
      return "The ledger could not be reached or is shutting down. Check that it runs, then retry.";
    case Code.ResourceExhausted:
      return "Too many calls right now. Wait a moment, then retry.";
    case Code.InvalidArgument:
      return error.field ? `Check the field ${error.field}.` : "Check what you entered.";
    case Code.NotFound:
      return "Check the id: nothing with it exists in this tenant.";
    case Code.FailedPrecondition:
      return "The ledger refused it in the current state; reload to see the latest state.";
    default:
      return "Retry; if it keeps failing, the ledger's log says why.";
  }
}
