import { randomBytes } from "node:crypto";

/**
 * Signing secrets in the Standard Webhooks format: `whsec_` and the base64 of 32 random bytes
 * (the spec asks for 24 to 64). The secret is the HMAC key itself, so it is stored as is (see
 * docs/webhooks.md, "Secrets") and shown to the caller only when issued.
 */
export const secret_prefix = "whsec_";
const secret_bytes = 32;

export function newSigningSecret(): string {
  return `${secret_prefix}${randomBytes(secret_bytes).toString("base64")}`;
}
