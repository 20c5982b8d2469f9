/**
 * The one page-token format of every list RPC: the base64url form of a JSON array of strings,
 * the cursor of the last item shown (an id, or a time and an id). Tokens are opaque to callers;
 * only the list that issued one reads it back, and it checks every part before the part can
 * reach SQL, so a forged token is refused as an invalid `page_token` rather than answered with
 * a database error.
 *
 * @module
 */
import { InvalidPageTokenError } from "./errors.js";

/**
 * The longest token read. Real tokens are a few hundred characters at most (a 128-character
 * id and a timestamp); anything longer is not one of ours and is refused before decoding.
 */
const PAGE_TOKEN_LENGTH_MAX = 1024;
const PAGE_TOKEN_PATTERN = /^[A-Za-z0-9_-]+$/;

/** Checks one part of a decoded cursor, e.g. `isUuid`. */
export type CursorPartCheck = (part: string) => boolean;

/** The token for the page after the item whose cursor is `cursor`. */
export function encodePageToken(cursor: readonly string[]): string {
  return Buffer.from(JSON.stringify(cursor), "utf8").toString("base64url");
}

/**
 * The cursor a token carries, one part per check, or null for the empty token (the first
 * page). Throws {@link InvalidPageTokenError} when the token is not one `encodePageToken` made
 * with parts that pass `checks`.
 */
export function decodePageToken(token: string, checks: readonly CursorPartCheck[]): string[] | null {
  if (token === "") {
    return null;
  }
  if (token.length > PAGE_TOKEN_LENGTH_MAX || !PAGE_TOKEN_PATTERN.test(token)) {
    throw new InvalidPageTokenError();
  }
  let parts: unknown;
  try {
    parts = JSON.parse(Buffer.from(token, "base64url").toString("utf8"));
  } catch {
    throw new InvalidPageTokenError();
  }
  const valid =
    Array.isArray(parts) &&
    parts.length === checks.length &&
    parts.every((part, i) => typeof part === "string" && checks[i]!(part));
  if (!valid) {
    throw new InvalidPageTokenError();
  }
  return parts as string[];
}
