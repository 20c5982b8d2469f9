/**
 * Balance alerts (docs/alerts.md): the storage behind AdminService.PutBalanceAlert,
 * ListBalanceAlerts and DeleteBalanceAlert. Input arrives checked (rpc/alerts.ts); what is
 * left here is what needs the database: the per-tenant bound, not-found, and the audit entry,
 * written in the same transaction as the change.
 *
 * Evaluating alerts is not done here: migrations/0015_alerts.sql does it inside every command's
 * transaction, in a trigger on the outbox, so it never costs a round trip.
 *
 * @module
 */
import type pg from "pg";
import { HoldfastError, NotFoundError } from "@holdfast/common/errors";
import type { Clock } from "@holdfast/common/ids";
import { decodePageToken, encodePageToken } from "@holdfast/common/page-token";
import { inTransaction } from "@holdfast/common/pg";
import { WALLET_ID_PATTERN } from "@holdfast/common/patterns";
import { recordAudit } from "../audit-log.js";
import type { Caller, Json, Metadata, Page } from "./types.js";

/**
 * The most alerts a tenant may have. Every event of a wallet reads the alerts of its wallet and
 * asset, so the number is bounded to keep that read small; a tenant-wide alert covers any
 * number of wallets.
 */
export const BALANCE_ALERTS_PER_TENANT_MAX = 100;

/** An alert id has a wallet id's shape: 1-128 characters of [A-Za-z0-9_:-]. */
export const ALERT_ID_PATTERN = WALLET_ID_PATTERN;

/** One alert (BalanceAlert in alerts.proto). */
export interface BalanceAlert {
  alertId: string;
  /** Empty for every wallet of the tenant. */
  walletId: string;
  asset: string;
  below: bigint;
  hysteresis: bigint;
  metadata: Metadata;
  createdAt: Date;
  updatedAt: Date;
}

/** A checked PutBalanceAlert request. */
export interface PutBalanceAlertInput {
  alertId: string;
  walletId: string;
  asset: string;
  below: bigint;
  hysteresis: bigint;
  metadata: Metadata;
}

/** A holdfast.balance.low or .recovered event's payload, as the outbox row holds it. */
export interface BalanceAlertEventData {
  alert: BalanceAlert;
  episode: bigint;
}

/** An alert as the SQL returns it (ledger_balance_alert_json). */
export function parseBalanceAlert(row: Json): BalanceAlert {
  return {
    alertId: String(row["alert_id"]),
    walletId: String(row["wallet_id"]),
    asset: String(row["asset"]),
    below: BigInt(String(row["below"])),
    hysteresis: BigInt(String(row["hysteresis"])),
    metadata: (row["metadata"] ?? {}) as Metadata,
    createdAt: new Date(String(row["created_at"])),
    updatedAt: new Date(String(row["updated_at"])),
  };
}

/** The payload of an alert event's outbox row (ledger_alert_emit). */
export function parseBalanceAlertEvent(data: Json): BalanceAlertEventData {
  return { alert: parseBalanceAlert(data["alert"] as Json), episode: BigInt(String(data["episode"])) };
}

/** The JSON the SQL takes: amounts as decimal strings. */
function alertArgs(input: PutBalanceAlertInput): Json {
  return {
    alert_id: input.alertId,
    wallet_id: input.walletId,
    asset: input.asset,
    below: input.below.toString(),
    hysteresis: input.hysteresis.toString(),
    metadata: input.metadata,
  };
}

/** The fields an audit entry records of an alert. */
function auditDetails(alert: BalanceAlert): Record<string, unknown> {
  return {
    wallet_id: alert.walletId,
    asset: alert.asset,
    below: alert.below.toString(),
    hysteresis: alert.hysteresis.toString(),
    metadata: alert.metadata,
  };
}

const isAlertId = (part: string) => ALERT_ID_PATTERN.test(part);

/** The balance-alert store of one ledger process. */
export function createBalanceAlerts({ pool, clock }: { pool: pg.Pool; clock: Clock }) {
  return {
    /** Creates or replaces an alert; BALANCE_ALERT_LIMIT when a new one would pass the bound. */
    async put(caller: Caller, input: PutBalanceAlertInput): Promise<{ alert: BalanceAlert; created: boolean }> {
      return inTransaction(pool, async (client) => {
        const { rows } = await client.query<{ r: Json }>({
          name: "ledger_put_balance_alert",
          text: "select ledger_put_balance_alert($1, $2, $3, $4) as r",
          values: [caller.tenantId, clock(), BALANCE_ALERTS_PER_TENANT_MAX, alertArgs(input)],
        });
        const r = rows[0]!.r;
        if (r["ok"] !== true) {
          throw new HoldfastError("BALANCE_ALERT_LIMIT", String(r["message"]));
        }
        const alert = parseBalanceAlert(r["alert"] as Json);
        const created = r["created"] === true;
        await recordAudit(client, {
          tenantId: caller.tenantId,
          keyId: caller.keyId ?? null,
          action: created ? "balance_alert.created" : "balance_alert.updated",
          target: alert.alertId,
          details: auditDetails(alert),
        });
        return { alert, created };
      });
    },

    /** The tenant's alerts by alert_id; `pageSize` is checked by the caller (1-500). */
    async list(caller: Caller, { pageSize, pageToken }: { pageSize: number; pageToken: string }): Promise<Page<BalanceAlert>> {
      const [after] = decodePageToken(pageToken, [isAlertId]) ?? [null];
      const { rows } = await pool.query<{ a: Json }>({
        name: "ledger_list_balance_alerts",
        text: `select ledger_balance_alert_json(b) as a from balance_alerts b
                where tenant_id = $1 and ($2::text is null or alert_id > $2)
                order by alert_id limit $3`,
        values: [caller.tenantId, after, pageSize + 1],
      });
      const items = rows.slice(0, pageSize).map((row) => parseBalanceAlert(row.a));
      const last = items[items.length - 1];
      return { items, nextPageToken: rows.length > pageSize && last !== undefined ? encodePageToken([last.alertId]) : "" };
    },

    /** Deletes an alert and answers it as it was; BALANCE_ALERT_NOT_FOUND when there is none. */
    async delete(caller: Caller, alertId: string): Promise<BalanceAlert> {
      return inTransaction(pool, async (client) => {
        const { rows } = await client.query<{ a: Json | null }>({
          name: "ledger_delete_balance_alert",
          text: "select ledger_delete_balance_alert($1, $2) as a",
          values: [caller.tenantId, alertId],
        });
        const row = rows[0]!.a;
        if (row === null) {
          throw new NotFoundError("BALANCE_ALERT_NOT_FOUND", "balance alert not found");
        }
        const alert = parseBalanceAlert(row);
        await recordAudit(client, {
          tenantId: caller.tenantId,
          keyId: caller.keyId ?? null,
          action: "balance_alert.deleted",
          target: alert.alertId,
          details: auditDetails(alert),
        });
        return alert;
      });
    },
  };
}

export type BalanceAlerts = ReturnType<typeof createBalanceAlerts>;
