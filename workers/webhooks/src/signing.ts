/**
 * Standard Webhooks signatures, made with the reference library (`standardwebhooks`) so they
 * verify with every receiver library of the spec.
 *
 * @module
 */
import { Webhook } from "standardwebhooks";

/**
 * The headers of one attempt. `webhook-id` is the event id, the same on every attempt, so a
 * receiver can drop duplicates; `webhook-timestamp` is the attempt's time (receivers refuse
 * signatures more than five minutes off). During a rotation's overlap `secrets` holds the new
 * and the old secret and the header carries one `v1,` signature per secret, separated by a
 * space: a receiver that knows either one accepts the message.
 */
export function signatureHeaders(webhookId: string, body: string, secrets: readonly string[], at: Date): Record<string, string> {
  if (secrets.length === 0) {
    throw new Error("signatureHeaders: no secret to sign with");
  }
  const signatures = secrets.map((secret) => new Webhook(secret).sign(webhookId, at, body));
  return {
    "webhook-id": webhookId,
    "webhook-timestamp": String(Math.floor(at.getTime() / 1000)),
    "webhook-signature": signatures.join(" "),
  };
}
