/**
 * What to do after an attempt: pure functions of the attempt's result, the number of attempts
 * made and the retry schedule, so the policy can be read (and tested) in one place.
 *
 * @module
 */

/** What one HTTP attempt came to. */
export interface AttemptResult {
  /** The response status; null when no response came (timeout, refused, blocked address). */
  readonly status: number | null;
  /** The receiver's Retry-After, in ms; null when absent or unreadable. */
  readonly retryAfterMs: number | null;
  /** Why the attempt failed; null for a 2xx. */
  readonly error: string | null;
  readonly latencyMs: number;
}

export type Verdict =
  | { readonly kind: "succeeded" }
  /** Try again after `delayMs`. `gone`: the receiver answered 410, so disable the endpoint. */
  | { readonly kind: "retry"; readonly delayMs: number; readonly gone: boolean }
  /** The last attempt of the schedule failed: dead letter. */
  | { readonly kind: "failed"; readonly gone: boolean };

/** Each delay is spread by up to this fraction either way, so retries of a burst do not align. */
export const RETRY_JITTER_RATIO = 0.2;
/** The longest Retry-After honoured; longer requests are cut to it. */
export const RETRY_AFTER_MS_MAX = 24 * 3600 * 1000;

const IMF_FIXDATE_PATTERN = /^[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} GMT$/;

/** Whether an HTTP status counts as delivered: any 2xx, nothing else (3xx are not followed). */
export const isSuccess = (status: number | null): boolean => status !== null && status >= 200 && status <= 299;

/**
 * The verdict on attempt number `attempts` (1 for the first). `scheduleMs[i]` is the delay
 * before attempt i + 2, so a schedule of n delays allows n + 1 attempts. A Retry-After longer
 * than the scheduled delay wins, up to {@link RETRY_AFTER_MS_MAX}.
 */
export function verdictOf(result: AttemptResult, attempts: number, scheduleMs: readonly number[], random: () => number = Math.random): Verdict {
  if (isSuccess(result.status)) {
    return { kind: "succeeded" };
  }
  const gone = result.status === 410;
  const scheduled = scheduleMs[attempts - 1];
  if (scheduled === undefined) {
    return { kind: "failed", gone };
  }
  const jittered = Math.max(1, Math.round(scheduled * (1 - RETRY_JITTER_RATIO + 2 * RETRY_JITTER_RATIO * random())));
  return { kind: "retry", delayMs: Math.max(jittered, result.retryAfterMs ?? 0), gone };
}

/**
 * Reads a Retry-After header: delay-seconds or an HTTP-date. Returns ms from `now`, capped at
 * {@link RETRY_AFTER_MS_MAX}; null when absent or malformed.
 */
export function parseRetryAfter(value: string | undefined, now: Date): number | null {
  if (value === undefined || value.trim() === "") {
    return null;
  }
  const text = value.trim();
  if (/^\d{1,10}$/.test(text)) {
    return Math.min(Number(text) * 1000, RETRY_AFTER_MS_MAX);
  }
  // Only the IMF-fixdate form senders must use (RFC 9110): Date.parse alone would read "1.5" as
  // a date in 2001.
  const at = IMF_FIXDATE_PATTERN.test(text) ? Date.parse(text) : Number.NaN;
  if (Number.isNaN(at)) {
    return null;
  }
  return Math.min(Math.max(0, at - now.getTime()), RETRY_AFTER_MS_MAX);
}
