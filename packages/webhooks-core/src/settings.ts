/**
 * The webhook variables that the ledger's WebhookService reads, declared once so the ledger
 * and the webhook worker cannot disagree about them. The allowed networks in particular must
 * mean the same in both: the ledger checks an endpoint's URL when it is saved, the worker again
 * at every connection (see url-policy.ts).
 *
 * | variable | default | meaning |
 * |---|---|---|
 * | `HOLDFAST_WEBHOOK_ALLOWED_NETWORKS` | empty | Comma-separated networks (`127.0.0.0/8`, `::1/128`, `10.1.2.3`) where webhook endpoints may be private, loopback or link-local and may use plain http; everywhere else endpoints must be https on public addresses (see docs/webhooks.md). Read by the ledger and the webhook worker. |
 * | `HOLDFAST_WEBHOOK_SECRET_OVERLAP_SECONDS` | `86400` | How long an old webhook secret keeps signing after RotateEndpointSecret (unless the call says otherwise). Read by the ledger. |
 *
 * The worker's own variables (retry schedule, timeouts, concurrency) are in
 * workers/webhooks/src/config.ts.
 *
 * @module
 */
import { readInteger, readNetworks, type Env, type IntegerSpec } from "@holdfast/common/env";

/** The longest overlap of an old and a new signing secret after a rotation, in seconds. */
export const SECRET_OVERLAP_SECONDS_MAX = 7 * 24 * 3600;

const SECRET_OVERLAP_SECONDS: IntegerSpec = { fallback: 24 * 3600, min: 0, max: SECRET_OVERLAP_SECONDS_MAX };

/** What WebhookService reads from the environment. */
export interface EndpointSettings {
  /** Networks where endpoints may be non-public and plain http, normalised CIDRs (`127.0.0.0/8`). */
  readonly allowedNetworks: readonly string[];
  /** The overlap of a rotation whose call names none. */
  readonly secretOverlapSeconds: number;
}

/** HOLDFAST_WEBHOOK_ALLOWED_NETWORKS, as normalised CIDRs; empty when unset. */
export function readAllowedNetworks(env: Env): string[] {
  return readNetworks(env, "HOLDFAST_WEBHOOK_ALLOWED_NETWORKS");
}

/** The endpoint settings of WebhookService. Throws naming the first bad variable. */
export function readEndpointSettings(env: Env): EndpointSettings {
  return {
    allowedNetworks: readAllowedNetworks(env),
    secretOverlapSeconds: readInteger(env, "HOLDFAST_WEBHOOK_SECRET_OVERLAP_SECONDS", SECRET_OVERLAP_SECONDS),
  };
}
