/**
 * Who may call what: for every RPC, the role a key needs and what a wallet-scoped key may do
 * with it, in one table ({@link METHOD_RULES}) that the auth interceptor (auth.ts) applies to
 * every call before its handler runs. The README's "Who may call what" prints the same table.
 *
 * A wallet-scoped key is what a browser or an agent holds. It may spend, reserve, capture,
 * release, extend holds, refund and read within its own wallet, and read the tenant's rate
 * cards; it may never create money (Deposit), move money between wallets (Transfer), create
 * wallets, or call anything administrative. Requests it may make name its wallet in known
 * fields, which the interceptor compares with the key's wallet; holds and transfers of other
 * wallets look NOT_FOUND, which the ledger's queries and SQL decide (they get the key's scope
 * with every call).
 *
 * @module
 */
import { PermissionDeniedError } from "@holdfast/common/errors";
import type { Principal, Role } from "../auth/api-keys.js";

/** What a wallet-scoped key may do with one RPC. */
export type ScopedAccess =
  /** Never. `field`, when set, is the request field the refusal names. */
  | { readonly kind: "refused"; readonly why: string; readonly field?: string }
  /** Only when each of these request fields (proto names) names the key's own wallet. */
  | { readonly kind: "own-wallet"; readonly fields: readonly string[] }
  /** Only on holds and transfers of its own wallet; any other looks NOT_FOUND. */
  | { readonly kind: "own-records" }
  /** Tenant-wide data that belongs to no wallet, read only: rate cards and quotes. */
  | { readonly kind: "tenant-read" };

/** The role an RPC needs, and what a wallet-scoped key may do with it. */
export interface MethodRule {
  readonly role: Role;
  readonly scoped: ScopedAccess;
}

const LEDGER = "holdfast.v1.LedgerService";
const ADMIN = "holdfast.v1.AdminService";
const WEBHOOKS = "holdfast.v1.WebhookService";
const RATE_CARDS = "holdfast.v1.RateCardService";

const OWN_WALLET: ScopedAccess = { kind: "own-wallet", fields: ["wallet_id"] };
const OWN_RECORDS: ScopedAccess = { kind: "own-records" };
const TENANT_READ: ScopedAccess = { kind: "tenant-read" };
const ADMINISTRATION: ScopedAccess = { kind: "refused", why: "administration is not about one wallet" };

/**
 * Every RPC that needs a key, by `<service>/<method>`. An RPC missing here falls back to
 * {@link SERVICE_DEFAULTS}: a wallet-scoped key is refused, so a new RPC is closed to scoped
 * keys until it is listed.
 */
export const METHOD_RULES: Readonly<Record<string, MethodRule>> = {
  [`${LEDGER}/Deposit`]: { role: "writer", scoped: { kind: "refused", why: "a deposit creates money", field: "wallet_id" } },
  [`${LEDGER}/Spend`]: { role: "writer", scoped: OWN_WALLET },
  [`${LEDGER}/Reserve`]: { role: "writer", scoped: OWN_WALLET },
  [`${LEDGER}/Capture`]: { role: "writer", scoped: OWN_RECORDS },
  [`${LEDGER}/Release`]: { role: "writer", scoped: OWN_RECORDS },
  [`${LEDGER}/ExtendHold`]: { role: "writer", scoped: OWN_RECORDS },
  [`${LEDGER}/Refund`]: { role: "writer", scoped: OWN_RECORDS },
  [`${LEDGER}/Transfer`]: { role: "writer", scoped: { kind: "refused", why: "a transfer moves money between wallets", field: "from_wallet_id" } },
  [`${LEDGER}/CreateWallet`]: { role: "writer", scoped: { kind: "refused", why: "wallets are created by the tenant's own keys", field: "wallet_id" } },
  [`${LEDGER}/GetWallet`]: { role: "reader", scoped: OWN_WALLET },
  [`${LEDGER}/ListTransfers`]: { role: "reader", scoped: OWN_WALLET },
  [`${LEDGER}/GetHold`]: { role: "reader", scoped: OWN_RECORDS },
  [`${LEDGER}/ListHolds`]: { role: "reader", scoped: OWN_WALLET },
  [`${LEDGER}/WatchWallet`]: { role: "reader", scoped: OWN_WALLET },
  [`${LEDGER}/CreateGrant`]: { role: "writer", scoped: { kind: "refused", why: "a grant creates money", field: "wallet_id" } },
  [`${LEDGER}/VoidGrant`]: { role: "writer", scoped: { kind: "refused", why: "voiding a grant is the tenant's decision" } },
  // Read by id, a grant would need its own scope check; ListGrants on the key's wallet shows them all.
  [`${LEDGER}/GetGrant`]: { role: "reader", scoped: { kind: "refused", why: "list the wallet's grants with ListGrants" } },
  [`${LEDGER}/ListGrants`]: { role: "reader", scoped: OWN_WALLET },
  [`${LEDGER}/ReserveUsage`]: { role: "writer", scoped: OWN_WALLET },
  [`${LEDGER}/CaptureUsage`]: { role: "writer", scoped: OWN_RECORDS },
  [`${LEDGER}/SpendUsage`]: { role: "writer", scoped: OWN_WALLET },
  // Each command of a batch must be one the key may make alone: the handler applies its single RPC's rule (rpc/batches.ts).
  [`${LEDGER}/ExecuteBatch`]: { role: "writer", scoped: OWN_RECORDS },
  [`${LEDGER}/GetStatement`]: { role: "reader", scoped: OWN_WALLET },
  [`${ADMIN}/UpdateWallet`]: { role: "admin", scoped: ADMINISTRATION },
  [`${ADMIN}/CreateApiKey`]: { role: "admin", scoped: ADMINISTRATION },
  [`${ADMIN}/ListApiKeys`]: { role: "admin", scoped: ADMINISTRATION },
  [`${ADMIN}/RevokeApiKey`]: { role: "admin", scoped: ADMINISTRATION },
  [`${ADMIN}/ListAuditLog`]: { role: "admin", scoped: ADMINISTRATION },
  [`${ADMIN}/PutBalanceAlert`]: { role: "admin", scoped: ADMINISTRATION },
  [`${ADMIN}/ListBalanceAlerts`]: { role: "admin", scoped: ADMINISTRATION },
  [`${ADMIN}/DeleteBalanceAlert`]: { role: "admin", scoped: ADMINISTRATION },
  [`${ADMIN}/CloseStatement`]: { role: "admin", scoped: ADMINISTRATION },
  [`${ADMIN}/ListStatements`]: { role: "admin", scoped: ADMINISTRATION },
  [`${WEBHOOKS}/CreateEndpoint`]: { role: "admin", scoped: ADMINISTRATION },
  [`${WEBHOOKS}/ListEndpoints`]: { role: "admin", scoped: ADMINISTRATION },
  [`${WEBHOOKS}/UpdateEndpoint`]: { role: "admin", scoped: ADMINISTRATION },
  [`${WEBHOOKS}/DeleteEndpoint`]: { role: "admin", scoped: ADMINISTRATION },
  [`${WEBHOOKS}/RotateEndpointSecret`]: { role: "admin", scoped: ADMINISTRATION },
  [`${WEBHOOKS}/ListDeliveries`]: { role: "admin", scoped: ADMINISTRATION },
  [`${WEBHOOKS}/RetryDelivery`]: { role: "admin", scoped: ADMINISTRATION },
  [`${WEBHOOKS}/SendTestEvent`]: { role: "admin", scoped: ADMINISTRATION },
  [`${RATE_CARDS}/PutRateCard`]: { role: "admin", scoped: ADMINISTRATION },
  [`${RATE_CARDS}/GetRateCard`]: { role: "reader", scoped: TENANT_READ },
  [`${RATE_CARDS}/ListRateCards`]: { role: "reader", scoped: TENANT_READ },
  [`${RATE_CARDS}/QuoteUsage`]: { role: "reader", scoped: TENANT_READ },
};

const UNLISTED: ScopedAccess = { kind: "refused", why: "it is not open to wallet-scoped keys" };

/** The rule of an RPC missing from {@link METHOD_RULES}: ledger commands need a writer, anything else an admin. */
const SERVICE_DEFAULTS: Readonly<Record<string, MethodRule>> = {
  [LEDGER]: { role: "writer", scoped: UNLISTED },
};
const DEFAULT_RULE: MethodRule = { role: "admin", scoped: UNLISTED };

const ROLE_RANK: Record<Role, number> = { reader: 1, writer: 2, admin: 3 };

/** The rule of one RPC. */
export function ruleOf(serviceName: string, methodName: string): MethodRule {
  return METHOD_RULES[`${serviceName}/${methodName}`] ?? SERVICE_DEFAULTS[serviceName] ?? DEFAULT_RULE;
}

/**
 * Refuses a call its key may not make, from what is known before the request is read: the
 * role, and RPCs a wallet-scoped key may never call. Returns the rule for the request check.
 */
export function authorizeCall(principal: Principal, serviceName: string, methodName: string): MethodRule {
  const rule = ruleOf(serviceName, methodName);
  if (ROLE_RANK[principal.role] < ROLE_RANK[rule.role]) {
    throw new PermissionDeniedError(`${methodName} needs the ${rule.role} role`);
  }
  if (principal.walletId !== null && rule.scoped.kind === "refused") {
    throw new PermissionDeniedError(`${methodName}: a key limited to one wallet may not call it: ${rule.scoped.why}`, rule.scoped.field);
  }
  return rule;
}

/**
 * Refuses a request of a wallet-scoped key that names another wallet in one of the fields its
 * rule lists. Anything but the key's wallet is refused, a malformed wallet id included.
 */
export function authorizeRequest(principal: Principal, rule: MethodRule, message: object): void {
  if (principal.walletId === null || rule.scoped.kind !== "own-wallet") {
    return;
  }
  for (const field of rule.scoped.fields) {
    if ((message as Record<string, unknown>)[localName(field)] !== principal.walletId) {
      throw new PermissionDeniedError(`${field}: this API key is limited to another wallet`, field);
    }
  }
}

/** The property protobuf-es gives a proto field: `from_wallet_id` → `fromWalletId`. */
function localName(protoName: string): string {
  return protoName.replace(/_([a-z0-9])/g, (_, c: string) => c.toUpperCase());
}
