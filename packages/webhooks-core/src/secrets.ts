import { randomBytes } from "node:crypto";

/**
 * Signing secrets in the Standard Webhooks format: `whsec_` and the base64 of 32 random bytes
 * (the spec asks for 24 to 64). The secret is the HMAC key itself, so it is stored as is (see
 * docs/webhooks.md, "Secrets") and shown to the caller only when issued.
 */
export const SECRET_PREFIX = "whsec_";
const SECRET_BYTES = 32;

export function newSigningSecret(): string {
  return `${SECRET_PREFIX}${randomBytes(SECRET_BYTES).toString("base64")}`;
}
