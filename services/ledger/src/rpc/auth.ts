import { createContextKey, type HandlerContext, type Interceptor, type StreamResponse } from "@connectrpc/connect";
import { UnauthenticatedError } from "@holdfast/common/errors";
import type { Principal } from "../auth/api-keys.js";
import type { Caller } from "../domain/types.js";
import type { RateLimiter } from "./rate-limit.js";
import { authorizeCall, authorizeRequest, type MethodRule } from "./scope.js";
import { endWhenRevoked, guardKey, KEY_RECHECK_INTERVAL_MS_MIN } from "./stream-guard.js";

/**
 * Authentication and authorization for every RPC: `authorization: Bearer <api key>`, the role
 * and wallet-scope rules of scope.ts, the rate limits of rate-limit.ts, and the principal
 * handed to handlers through the context values. Server streams keep being checked while they
 * run: a revoked or expired key ends its open streams.
 */

export type Role = Principal["role"];

/** The principal of the current call; null only before the auth interceptor ran. */
export const PRINCIPAL_KEY = createContextKey<Principal | null>(null, { description: "holdfast principal" });

/** Services callable without a key: health probes must work without credentials. */
const PUBLIC_SERVICES = new Set(["grpc.health.v1.Health"]);

export interface KeyVerifier {
  verify(bearer: string): Promise<Principal | null>;
}

/** What the auth interceptor needs besides the verifier. */
export interface AuthOptions {
  /** Rate limits per key and tenant, and the tenant's stream cap; none when absent. */
  readonly limiter?: RateLimiter | undefined;
  /**
   * The key cache time (HOLDFAST_AUTH_CACHE_MS): a stream's key is checked again this often,
   * but not more often than {@link KEY_RECHECK_INTERVAL_MS_MIN}.
   */
  readonly authCacheMs?: number | undefined;
}

/**
 * The principal of an `authorization: Bearer <api key>` header, or an UnauthenticatedError.
 * The interceptor below and the server's check before a body is read (app.ts) both use it, so
 * both refuse with the same code, reason and message.
 */
export async function authenticateBearer(verifier: KeyVerifier, authorization: string | null): Promise<Principal> {
  const match = /^Bearer\s+(\S+)$/i.exec(authorization ?? "");
  if (!match) {
    throw new UnauthenticatedError("missing header authorization: Bearer <api key>");
  }
  const principal = await verifier.verify(match[1]!);
  if (!principal) {
    throw new UnauthenticatedError("unknown, revoked or expired API key");
  }
  return principal;
}

/**
 * Checks the bearer key, the method's rule (role, wallet scope) and the rate limits before any
 * handler runs. Its refusals are plain errors like every other; the routes' error interceptor,
 * which runs outside it, answers them.
 */
export function createAuthInterceptor(verifier: KeyVerifier, options: AuthOptions = {}): Interceptor {
  const recheckIntervalMs = Math.max(options.authCacheMs ?? 0, KEY_RECHECK_INTERVAL_MS_MIN);
  return (next) => async (req) => {
    if (PUBLIC_SERVICES.has(req.service.typeName)) {
      return next(req);
    }
    // The server's check before the body (app.ts) may already have stored the principal.
    const principal = req.contextValues.get(PRINCIPAL_KEY) ?? (await authenticateBearer(verifier, req.header.get("authorization")));
    const rule = authorizeCall(principal, req.service.typeName, req.method.name);
    options.limiter?.take(principal);
    req.contextValues.set(PRINCIPAL_KEY, principal);
    if (!req.stream) {
      authorizeRequest(principal, rule, req.message);
      return next(req);
    }
    const closeStream = options.limiter?.openStream(principal.tenantId);
    if (closeStream !== undefined) {
      onAbort(req.signal, closeStream);
    }
    const check = async () => (await verifier.verify(bearerOf(req.header.get("authorization")))) !== null;
    const revoked = guardKey({ check, intervalMs: recheckIntervalMs, callSignal: req.signal });
    const res = (await next({
      ...req,
      message: checkEach(req.message, principal, rule),
      signal: AbortSignal.any([req.signal, revoked]),
    })) as StreamResponse;
    return { ...res, message: endWhenRevoked(res.message, revoked) };
  };
}

/** Checks every request message of a stream against the key's wallet scope as it is read. */
async function* checkEach<T extends object>(messages: AsyncIterable<T>, principal: Principal, rule: MethodRule): AsyncGenerator<T> {
  for await (const message of messages) {
    authorizeRequest(principal, rule, message);
    yield message;
  }
}

/** The key of an `authorization: Bearer <key>` header; "" (never valid) when there is none. */
function bearerOf(authorization: string | null): string {
  return /^Bearer\s+(\S+)$/i.exec(authorization ?? "")?.[1] ?? "";
}

/** Calls the listener once the signal aborts, at once if it already has. */
function onAbort(signal: AbortSignal, listener: () => void): void {
  if (signal.aborted) {
    listener();
  } else {
    signal.addEventListener("abort", listener, { once: true });
  }
}

/** The caller of a handler: its tenant and wallet scope. */
export function callerOf(ctx: HandlerContext): Caller {
  const principal = ctx.values.get(PRINCIPAL_KEY);
  if (principal === null) {
    // Every non-public route runs behind the auth interceptor; reaching here is a wiring bug.
    throw new Error("callerOf: no principal in context; is the auth interceptor installed?");
  }
  return { tenantId: principal.tenantId, scopeWalletId: principal.walletId, keyId: principal.keyId };
}
