/**
 * The identifier shapes and list bounds of the public contract, in one place so that the RPC
 * validation, the SQL callers and the admin tools agree (docs/architecture.md, "The public
 * contract").
 */

/** A wallet id as callers name it: `user_123`, `org:42`, 1 to 128 characters. */
export const WALLET_ID_PATTERN = /^[A-Za-z0-9_:-]{1,128}$/;

/** A UUID in its canonical text form (any version), lower or upper case. */
export const UUID_PATTERN = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** True when `text` is a UUID in canonical form; checked before it reaches a `uuid` column. */
export function isUuid(text: string): boolean {
  return UUID_PATTERN.test(text);
}

/** Items in a list page when the caller asks for none (page_size 0). */
export const PAGE_SIZE_DEFAULT = 50;
/** The most items a list page holds, whatever the caller asks for. */
export const PAGE_SIZE_MAX = 500;
