import { createContextKey, type HandlerContext, type Interceptor } from "@connectrpc/connect";
import { PermissionDeniedError, UnauthenticatedError } from "@holdfast/common/errors";
import type { Principal } from "../auth/api-keys.js";
import type { Caller } from "../domain/types.js";

/**
 * Authentication and authorization for every RPC: `authorization: Bearer <api key>`, a role
 * check per method, and the principal handed to handlers through the context values.
 */

export type Role = Principal["role"];

/** The principal of the current call; null only before the auth interceptor ran. */
export const PRINCIPAL_KEY = createContextKey<Principal | null>(null, { description: "holdfast principal" });

/** Services callable without a key: health probes must work without credentials. */
const PUBLIC_SERVICES = new Set(["grpc.health.v1.Health"]);

/** LedgerService methods that only read. Every other ledger method needs the writer role. */
const READER_METHODS = new Set(["GetWallet", "ListTransfers", "GetHold", "ListHolds", "WatchWallet"]);

/** RateCardService methods that only read. PutRateCard, like all administration, needs the admin role. */
const RATE_CARD_READER_METHODS = new Set(["GetRateCard", "ListRateCards", "QuoteUsage"]);

const ROLE_RANK: Record<Role, number> = { reader: 1, writer: 2, admin: 3 };

/** The role a method needs. Anything outside LedgerService is administration, except rate-card reads. */
export function requiredRole(serviceName: string, methodName: string): Role {
  if (serviceName === "holdfast.v1.RateCardService") {
    return RATE_CARD_READER_METHODS.has(methodName) ? "reader" : "admin";
  }
  if (serviceName !== "holdfast.v1.LedgerService") {
    return "admin";
  }
  return READER_METHODS.has(methodName) ? "reader" : "writer";
}

export interface KeyVerifier {
  verify(bearer: string): Promise<Principal | null>;
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
    throw new UnauthenticatedError("unknown or revoked API key");
  }
  return principal;
}

/**
 * Checks the bearer key and the method's role before any handler runs. Its refusals are plain
 * errors like every other; the routes' error interceptor, which runs outside it, answers them.
 */
export function createAuthInterceptor(verifier: KeyVerifier): Interceptor {
  return (next) => async (req) => {
    if (PUBLIC_SERVICES.has(req.service.typeName)) {
      return next(req);
    }
    // The server's check before the body (app.ts) may already have stored the principal.
    const principal = req.contextValues.get(PRINCIPAL_KEY) ?? (await authenticateBearer(verifier, req.header.get("authorization")));
    const needed = requiredRole(req.service.typeName, req.method.name);
    if (ROLE_RANK[principal.role] < ROLE_RANK[needed]) {
      throw new PermissionDeniedError(`${req.method.name} needs the ${needed} role`);
    }
    req.contextValues.set(PRINCIPAL_KEY, principal);
    return next(req);
  };
}

/** The caller of a handler: its tenant and wallet scope. */
export function callerOf(ctx: HandlerContext): Caller {
  const principal = ctx.values.get(PRINCIPAL_KEY);
  if (principal === null) {
    // Every non-public route runs behind the auth interceptor; reaching here is a wiring bug.
    throw new Error("callerOf: no principal in context; is the auth interceptor installed?");
  }
  return { tenantId: principal.tenantId, scopeWalletId: principal.walletId };
}

/** Refuses a wallet outside the key's single-wallet scope. */
export function checkScope(caller: Caller, walletId: string, field: string): void {
  if (caller.scopeWalletId !== null && caller.scopeWalletId !== walletId) {
    throw new PermissionDeniedError(`${field}: this API key is limited to another wallet`, field);
  }
}
