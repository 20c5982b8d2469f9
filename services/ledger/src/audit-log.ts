/**
 * The audit log of admin actions (migration 0011): who (which API key) did what to which
 * object of a tenant. Append-only in the database: a trigger refuses UPDATE, DELETE and
 * TRUNCATE, and the runtime role is granted INSERT and SELECT only.
 *
 * @module
 */
import type pg from "pg";
import { decodePageToken, encodePageToken } from "@holdfast/common/page-token";
import { isUuid, PAGE_SIZE_DEFAULT, PAGE_SIZE_MAX } from "@holdfast/common/patterns";

/** What an admin action can be, as `<object>.<verb>`. */
export type AuditAction =
  | "api_key.created"
  | "api_key.revoked"
  | "wallet.updated"
  | "webhook_endpoint.created"
  | "webhook_endpoint.updated"
  | "webhook_endpoint.deleted"
  | "webhook_endpoint.secret_rotated"
  | "balance_alert.created"
  | "balance_alert.updated"
  | "balance_alert.deleted"
  /** Written by the SQL of CloseStatement (migration 0014), with the statement, not through recordAudit. */
  | "statement.closed";

/** One admin action to record. `details` holds the request's relevant fields, never a secret. */
export interface AuditRecordInput {
  tenantId: string;
  /** The acting API key; null for the command line, which acts with database credentials. */
  keyId: string | null;
  action: AuditAction;
  /** What the action was done to: a key id, a wallet id, an endpoint id. */
  target: string;
  details?: Record<string, unknown>;
}

/** One entry of the log as read back. */
export interface AuditEntry {
  auditId: string;
  occurredAt: Date;
  keyId: string | null;
  action: string;
  target: string;
  details: Record<string, unknown>;
}

interface AuditRow {
  audit_id: string;
  occurred_at: Date;
  key_id: string | null;
  action: string;
  target: string;
  details: Record<string, unknown>;
}

type Queryable = Pick<pg.Pool, "query"> | Pick<pg.PoolClient, "query">;

/**
 * Appends an entry. Called after the action succeeded, so a refused action leaves no entry;
 * the entry's id is a UUIDv7 made by the database, so entries sort by time.
 */
export async function recordAudit(db: Queryable, input: AuditRecordInput): Promise<void> {
  await db.query({
    name: "ledger_audit_record",
    text: "insert into audit_log (tenant_id, key_id, action, target, details) values ($1, $2, $3, $4, $5)",
    values: [input.tenantId, input.keyId, input.action, input.target, input.details ?? {}],
  });
}

/**
 * A page of the tenant's audit log, newest first, paged by audit id. `pageSize` 0 means
 * PAGE_SIZE_DEFAULT; the caller has checked it is at most PAGE_SIZE_MAX.
 */
export async function listAuditLog(
  db: Queryable,
  tenantId: string,
  options: { pageSize: number; pageToken: string },
): Promise<{ entries: AuditEntry[]; nextPageToken: string }> {
  const pageSize = Math.min(options.pageSize === 0 ? PAGE_SIZE_DEFAULT : options.pageSize, PAGE_SIZE_MAX);
  const [before] = decodePageToken(options.pageToken, [isUuid]) ?? [null];
  const { rows } = await db.query<AuditRow>({
    name: "ledger_audit_list",
    text: `select audit_id, occurred_at, key_id, action, target, details from audit_log
            where tenant_id = $1 and ($2::uuid is null or audit_id < $2::uuid)
            order by audit_id desc limit $3`,
    values: [tenantId, before, pageSize + 1],
  });
  const page = rows.slice(0, pageSize);
  const last = page[page.length - 1];
  const nextPageToken = rows.length > pageSize && last !== undefined ? encodePageToken([last.audit_id]) : "";
  return {
    entries: page.map((r) => ({
      auditId: r.audit_id,
      occurredAt: r.occurred_at,
      keyId: r.key_id,
      action: r.action,
      target: r.target,
      details: r.details,
    })),
    nextPageToken,
  };
}
