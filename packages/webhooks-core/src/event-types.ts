/**
 * The event types a webhook endpoint can subscribe to, and how its filters match them.
 *
 * A filter is an exact type (`holdfast.hold.captured`) or a kind wildcard (`holdfast.hold.*`);
 * an endpoint without filters takes every type. Filters are checked against the known types
 * when an endpoint is saved, so a typo is refused at once instead of silently matching nothing.
 *
 * @module
 */

/** Ledger event types, as the outbox relay publishes them (services/ledger/src/relay/event-codec.ts). */
export const LEDGER_EVENT_TYPES = [
  "holdfast.deposit.completed",
  "holdfast.spend.completed",
  "holdfast.refund.completed",
  "holdfast.transfer.sent",
  "holdfast.transfer.received",
  "holdfast.hold.created",
  "holdfast.hold.captured",
  "holdfast.hold.released",
  "holdfast.hold.expired",
  "holdfast.hold.extended",
  "holdfast.wallet.updated",
  "holdfast.grant.created",
  "holdfast.grant.expired",
  "holdfast.grant.voided",
  "holdfast.balance.low",
  "holdfast.balance.recovered",
  "holdfast.usage.recorded",
  "holdfast.statement.closed",
] as const;

/** Sent to the tenant's other endpoints when the worker disables an endpoint. */
export const ENDPOINT_DISABLED_TYPE = "holdfast.webhook.endpoint_disabled";
/** Sent by SendTestEvent to one endpoint, whatever its filters. */
export const TEST_EVENT_TYPE = "holdfast.webhook.test";

/** Every type a filter may name. */
export const KNOWN_EVENT_TYPES: readonly string[] = [...LEDGER_EVENT_TYPES, ENDPOINT_DISABLED_TYPE, TEST_EVENT_TYPE];

/** Most filters on one endpoint. */
export const EVENT_TYPE_FILTERS_MAX = 32;

const KNOWN_KINDS = new Set(KNOWN_EVENT_TYPES.map((type) => type.slice(0, type.lastIndexOf("."))));

/** Why a filter list is refused, or null when it is fine. Duplicates are refused too. */
export function checkEventTypeFilters(filters: readonly string[]): string | null {
  if (filters.length > EVENT_TYPE_FILTERS_MAX) {
    return `must have at most ${EVENT_TYPE_FILTERS_MAX} entries`;
  }
  if (new Set(filters).size !== filters.length) {
    return "must not repeat an entry";
  }
  for (const filter of filters) {
    const isWildcard = filter.endsWith(".*") && KNOWN_KINDS.has(filter.slice(0, -2));
    if (!isWildcard && !KNOWN_EVENT_TYPES.includes(filter)) {
      return `"${filter.slice(0, 64)}" is neither a known event type nor a wildcard such as holdfast.hold.*`;
    }
  }
  return null;
}

/** Whether an endpoint with these filters takes events of `type`. */
export function matchesEventType(filters: readonly string[], type: string): boolean {
  if (filters.length === 0) {
    return true;
  }
  return filters.some((filter) => filter === type || (filter.endsWith(".*") && type.startsWith(filter.slice(0, -1))));
}

/**
 * The same match in SQL, for statements that fan an event out to endpoints: `$filters` is the
 * endpoint's text[] and `$type` the event type. Kept next to {@link matchesEventType} so the two
 * cannot drift apart unnoticed.
 */
export function sqlMatchesEventType(filters: string, type: string): string {
  return `(cardinality(${filters}) = 0 or exists (select 1 from unnest(${filters}) f
            where f = ${type} or (right(f, 2) = '.*' and starts_with(${type}, left(f, -1)))))`;
}
