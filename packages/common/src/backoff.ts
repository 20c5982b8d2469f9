/**
 * Exponential backoff, the one formula every retry loop in Holdfast uses: the relay, the
 * expiry worker, the webhook intake and sender, the billing stream and retention.
 */

/** Doublings after which the delay stops growing, so `2 ** attempt` can never overflow. */
const DOUBLINGS_MAX = 30;

export interface BackoffBounds {
  /** The delay after the first failure. */
  readonly delayMsMin: number;
  /** The delay never exceeds this. */
  readonly delayMsMax: number;
}

/**
 * The delay before retry number `attempt` (0 for the first retry): `delayMsMin` doubled per
 * attempt, capped at `delayMsMax`. Callers that want jitter apply it to the result.
 */
export function backoffDelayMs(attempt: number, bounds: BackoffBounds): number {
  const doublings = Math.min(Math.max(0, Math.floor(attempt)), DOUBLINGS_MAX);
  return Math.min(bounds.delayMsMax, bounds.delayMsMin * 2 ** doublings);
}
