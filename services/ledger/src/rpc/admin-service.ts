import type { ServiceImpl } from "@connectrpc/connect";
import type { JsonObject, MessageInitShape } from "@bufbuild/protobuf";
import { timestampDate, timestampFromDate, type Timestamp } from "@bufbuild/protobuf/wkt";
import type pg from "pg";
import { InvalidFieldError, NotFoundError } from "@holdfast/common/errors";
import type { Clock } from "@holdfast/common/ids";
import { inTransaction } from "@holdfast/common/pg";
import { AdminService, Role, type ApiKeySchema, type RateLimit } from "@holdfast/gen/holdfast/v1/admin_pb";
import * as keys from "../auth/api-keys.js";
import { listAuditLog, recordAudit } from "../audit-log.js";
import type { Ledger } from "../domain/ledger.js";
import { alertAdminHandlers } from "./alerts.js";
import { callerOf } from "./auth.js";
import { fromWalletStatus, toWallet, unwrap } from "./convert.js";
import { statementAdminHandlers } from "./statements.js";
import * as v from "./validate.js";

const WIRE_ROLES: Record<keys.Role, Role> = { reader: Role.READER, writer: Role.WRITER, admin: Role.ADMIN };

function fromRole(role: Role): keys.Role {
  const found = Object.entries(WIRE_ROLES).find(([, value]) => value === role);
  if (!found) {
    throw new InvalidFieldError("role", "must be ROLE_READER, ROLE_WRITER or ROLE_ADMIN");
  }
  return found[0] as keys.Role;
}

function toApiKey(k: keys.ApiKeyRecord): MessageInitShape<typeof ApiKeySchema> {
  return {
    keyId: k.keyId,
    name: k.name,
    role: WIRE_ROLES[k.role],
    walletId: k.walletId ?? "",
    createdAt: timestampFromDate(k.createdAt),
    revokedAt: k.revokedAt ? timestampFromDate(k.revokedAt) : undefined,
    expiresAt: k.expiresAt ? timestampFromDate(k.expiresAt) : undefined,
    lastUsedAt: k.lastUsedAt ? timestampFromDate(k.lastUsedAt) : undefined,
    rateLimit: k.rateLimit ? { requestsPerSecond: k.rateLimit.perSecond, burst: k.rateLimit.burst } : undefined,
  };
}

/** CreateApiKey's expiry: a valid timestamp, or none. The key store checks that it lies ahead. */
function expiresAt(value: Timestamp | undefined): Date | undefined {
  if (value === undefined) return undefined;
  const date = timestampDate(value);
  if (Number.isNaN(date.getTime()) || value.nanos < 0 || value.nanos > 999_999_999) {
    throw new InvalidFieldError("expires_at", "must be a valid timestamp");
  }
  return date;
}

/** CreateApiKey's own rate: a burst of 0 means one second's worth. The key store checks the bounds. */
function rateLimit(value: RateLimit | undefined): keys.RateLimit | undefined {
  if (value === undefined) return undefined;
  return { perSecond: value.requestsPerSecond, burst: value.burst === 0 ? value.requestsPerSecond : value.burst };
}

/**
 * AdminService handlers: wallet administration and API keys of the caller's tenant. The key
 * store's errors (invalid fields, page tokens) are answered by the routes' error interceptor.
 */
export function adminService({ ledger, pool, clock }: { ledger: Ledger; pool: pg.Pool; clock?: Clock }): ServiceImpl<typeof AdminService> {
  return {
    ...alertAdminHandlers({ pool, clock }),
    ...statementAdminHandlers({ ledger }),
    async updateWallet(req, ctx) {
      const input = {
        walletId: v.walletId(req.walletId),
        status: req.status === undefined ? null : fromWalletStatus(req.status),
        creditLimits: req.creditLimits.map((l, i) => ({
          asset: v.asset(l.asset, `credit_limits[${i}].asset`),
          creditLimit: creditLimit(l.creditLimit, `credit_limits[${i}].credit_limit`),
        })),
        metadata: v.metadata(req.metadata),
      };
      const caller = callerOf(ctx);
      const r = unwrap(await ledger.updateWallet(caller, input));
      await recordAudit(pool, {
        tenantId: caller.tenantId,
        keyId: caller.keyId ?? null,
        action: "wallet.updated",
        target: input.walletId,
        details: {
          status: input.status,
          credit_limits: input.creditLimits.map((l) => ({ asset: l.asset, credit_limit: String(l.creditLimit) })),
          metadata: input.metadata,
        },
      });
      return { wallet: toWallet(r.wallet) };
    },

    async createApiKey(req, ctx) {
      const { tenantId, keyId } = callerOf(ctx);
      const role = fromRole(req.role);
      const walletId = req.walletId === "" ? undefined : v.walletId(req.walletId);
      if (role === "admin" && walletId !== undefined) {
        throw new InvalidFieldError("wallet_id", "an admin key cannot be limited to one wallet");
      }
      const name = v.label(req.name, "name", 128);
      const input = { tenantId, name, role, walletId, expiresAt: expiresAt(req.expiresAt), rateLimit: rateLimit(req.rateLimit) };
      // The key and its audit entry commit together.
      const created = await inTransaction(pool, async (client) => {
        const made = await keys.createApiKey(client, input);
        const details = { name, role, wallet_id: walletId ?? null, expires_at: input.expiresAt?.toISOString() ?? null };
        await recordAudit(client, { tenantId, keyId: keyId ?? null, action: "api_key.created", target: made.key.keyId, details });
        return made;
      });
      return { apiKey: toApiKey(created.key), secret: created.secret };
    },

    async listApiKeys(req, ctx) {
      const { tenantId } = callerOf(ctx);
      const page = await keys.listApiKeys(pool, tenantId, { pageSize: v.pageSize(req.pageSize), pageToken: req.pageToken });
      return { apiKeys: page.keys.map(toApiKey), nextPageToken: page.nextPageToken };
    },

    async revokeApiKey(req, ctx) {
      const caller = callerOf(ctx);
      if (req.keyId === "") {
        throw new InvalidFieldError("key_id", "is required");
      }
      const revoked = await inTransaction(pool, async (client) => {
        const record = await keys.revokeApiKey(client, caller.tenantId, req.keyId);
        if (record !== null) {
          const entry = { tenantId: caller.tenantId, keyId: caller.keyId ?? null, target: record.keyId };
          await recordAudit(client, { ...entry, action: "api_key.revoked" });
        }
        return record;
      });
      if (!revoked) {
        throw new NotFoundError("API_KEY_NOT_FOUND", "API key not found");
      }
      return { apiKey: toApiKey(revoked) };
    },

    async listAuditLog(req, ctx) {
      const { tenantId } = callerOf(ctx);
      const page = await listAuditLog(pool, tenantId, { pageSize: v.pageSize(req.pageSize), pageToken: req.pageToken });
      return {
        entries: page.entries.map((e) => ({
          auditId: e.auditId,
          occurredAt: timestampFromDate(e.occurredAt),
          keyId: e.keyId ?? "",
          action: e.action,
          target: e.target,
          details: e.details as JsonObject,
        })),
        nextPageToken: page.nextPageToken,
      };
    },
  };
}

/** Far beyond any real limit, and low enough that no balance sum with it overflows int64. */
const CREDIT_LIMIT_MAX = 2n ** 62n;

function creditLimit(value: bigint, field: string): bigint {
  if (value < 0n) {
    throw new InvalidFieldError(field, "must not be negative");
  }
  if (value > CREDIT_LIMIT_MAX) {
    throw new InvalidFieldError(field, `must be at most ${CREDIT_LIMIT_MAX}`);
  }
  return value;
}
