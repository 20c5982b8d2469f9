import { Code, createContextKey, type HandlerContext, type Interceptor } from "@connectrpc/connect";
import { ledgerError } from "@holdfast/common/errors";
import type { Principal } from "../auth/api-keys.js";
import type { Caller } from "../domain/types.js";

/**
 * Authentication and authorization for every RPC: `authorization: Bearer <api key>`, a role
 * check per method, and the principal handed to handlers through the context values.
 */

export type Role = Principal["role"];

/** The principal of the current call; null only before the auth interceptor ran. */
export const principal_key = createContextKey<Principal | null>(null, { description: "holdfast principal" });

/** Services callable without a key: health probes must work without credentials. */
const public_services = new Set(["grpc.health.v1.Health"]);

/** LedgerService methods that only read. Every other ledger method needs the writer role. */
const reader_methods = new Set(["GetWallet", "ListTransfers", "GetHold", "ListHolds", "WatchWallet"]);

const role_rank: Record<Role, number> = { reader: 1, writer: 2, admin: 3 };

/** The role a method needs. Anything outside LedgerService is administration. */
export function requiredRole(serviceName: string, methodName: string): Role {
  if (serviceName !== "holdfast.v1.LedgerService") {
    return "admin";
  }
  return reader_methods.has(methodName) ? "reader" : "writer";
}

export interface KeyVerifier {
  verify(bearer: string): Promise<Principal | null>;
}

export function createAuthInterceptor(verifier: KeyVerifier): Interceptor {
  return (next) => async (req) => {
    if (public_services.has(req.service.typeName)) {
      return next(req);
    }
    const header = req.header.get("authorization") ?? "";
    const match = /^Bearer\s+(\S+)$/i.exec(header);
    if (!match) {
      throw ledgerError(Code.Unauthenticated, "UNAUTHENTICATED", "missing header authorization: Bearer <api key>");
    }
    const principal = await verifier.verify(match[1]!);
    if (!principal) {
      throw ledgerError(Code.Unauthenticated, "UNAUTHENTICATED", "unknown or revoked API key");
    }
    const needed = requiredRole(req.service.typeName, req.method.name);
    if (role_rank[principal.role] < role_rank[needed]) {
      throw ledgerError(Code.PermissionDenied, "PERMISSION_DENIED", `${req.method.name} needs the ${needed} role`);
    }
    req.contextValues.set(principal_key, principal);
    return next(req);
  };
}

/** The caller of a handler: its tenant and wallet scope. */
export function callerOf(ctx: HandlerContext): Caller {
  const principal = ctx.values.get(principal_key);
  if (principal === null) {
    // Every non-public route runs behind the auth interceptor; reaching here is a wiring bug.
    throw new Error("callerOf: no principal in context; is the auth interceptor installed?");
  }
  return { tenantId: principal.tenantId, scopeWalletId: principal.walletId };
}

/** Refuses a wallet outside the key's single-wallet scope. */
export function checkScope(caller: Caller, walletId: string, field: string): void {
  if (caller.scopeWalletId !== null && caller.scopeWalletId !== walletId) {
    throw ledgerError(Code.PermissionDenied, "PERMISSION_DENIED", `${field}: this API key is limited to another wallet`, {
      field,
    });
  }
}
