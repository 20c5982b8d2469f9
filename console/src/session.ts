/**
 * Signing in: the API key the user typed, kept in sessionStorage only (gone when the tab
 * closes, never sent anywhere but the ledger's own origin), and the role the console shows
 * pages and actions for.
 *
 * No RPC answers a key's own role, so the console asks two cheap questions. An admin read
 * (ListApiKeys, one row) answers for admin keys and is PERMISSION_DENIED for the others.
 * Then a Release with an empty hold id: the role is checked before the request's fields
 * (README, "When several reasons apply"), so a writer key gets INVALID_ARGUMENT naming
 * `hold_id` and a reader key PERMISSION_DENIED, and neither changes anything or records an
 * idempotency key (a request refused for its fields never reaches the ledger's core). The
 * role only decides what is shown: the ledger checks every call again, whatever is shown.
 *
 * @module
 */
import { Holdfast, InvalidFieldError, PermissionDeniedError } from "@holdfast/client";

/** The key's role, as the console derives it. */
export type ConsoleRole = "admin" | "writer" | "reader";

/** A signed-in key: its client and what it may do. */
export interface Session {
  readonly apiKey: string;
  readonly role: ConsoleRole;
  readonly hf: Holdfast;
}

const STORAGE_KEY = "holdfast.console.apiKey";
/** One retry after a dropped connection; a console user sees a failure soon rather than late. */
const SIGN_IN_ATTEMPTS_MAX = 2;
const CALL_TIMEOUT_MS = 10_000;

/** A client of the ledger that served this page, with the key. */
export function clientFor(apiKey: string): Holdfast {
  return new Holdfast({
    baseUrl: window.location.origin,
    apiKey,
    protocol: "connect-json",
    timeoutMs: CALL_TIMEOUT_MS,
    retry: { attemptsMax: SIGN_IN_ATTEMPTS_MAX },
  });
}

/** Checks the key against the ledger and finds its role; throws the ledger's refusal. */
export async function signIn(apiKey: string): Promise<Session> {
  const hf = clientFor(apiKey.trim());
  try {
    const role = await roleOf(hf);
    sessionStorage.setItem(STORAGE_KEY, apiKey.trim());
    return { apiKey: apiKey.trim(), role, hf };
  } catch (error) {
    hf.close();
    throw error;
  }
}

/** The session kept in this tab, if any; its key is checked again, as at sign-in. */
export async function resume(): Promise<Session | null> {
  const apiKey = sessionStorage.getItem(STORAGE_KEY);
  if (apiKey === null) return null;
  try {
    return await signIn(apiKey);
  } catch {
    sessionStorage.removeItem(STORAGE_KEY);
    return null;
  }
}

/** Forgets the key. */
export function signOut(session: Session | null): void {
  sessionStorage.removeItem(STORAGE_KEY);
  session?.hf.close();
}

async function roleOf(hf: Holdfast): Promise<ConsoleRole> {
  try {
    await hf.admin.listApiKeys({ pageSize: 1 });
    return "admin";
  } catch (error) {
    if (!(error instanceof PermissionDeniedError)) throw error;
  }
  try {
    await hf.ledger.release({ holdId: "" });
  } catch (error) {
    if (error instanceof PermissionDeniedError) return "reader";
    if (error instanceof InvalidFieldError) return "writer";
    throw error;
  }
  throw new Error("the ledger accepted a Release without a hold id; the console cannot tell this key's role");
}

/** Whether the role may run wallet commands (capture, release, refund). */
export function canWrite(role: ConsoleRole): boolean {
  return role === "writer" || role === "admin";
}
