/**
 * The balance-alert RPCs of AdminService (docs/alerts.md): PutBalanceAlert, ListBalanceAlerts
 * and DeleteBalanceAlert, admin only and closed to wallet-scoped keys (scope.ts). Thin like the
 * other handlers: validate, call the store (domain/alerts.ts), map the result. admin-service.ts
 * spreads these into its service; the outbox relay maps alert events with
 * {@link toBalanceAlertEvent}.
 *
 * @module
 */
import type { ServiceImpl } from "@connectrpc/connect";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type pg from "pg";
import { InvalidFieldError } from "@holdfast/common/errors";
import { systemClock, type Clock } from "@holdfast/common/ids";
import type { AdminService } from "@holdfast/gen/holdfast/v1/admin_pb";
import type { BalanceAlertEventSchema, BalanceAlertSchema } from "@holdfast/gen/holdfast/v1/alerts_pb";
import { ALERT_ID_PATTERN, createBalanceAlerts, parseBalanceAlertEvent, type BalanceAlert } from "../domain/alerts.js";
import type { Json } from "../domain/types.js";
import { callerOf } from "./auth.js";
import * as v from "./validate.js";

const INT64_MAX = 2n ** 63n - 1n;

/** A required alert id: 1-128 characters of A-Z, a-z, 0-9, _, : or -. */
function alertId(value: string): string {
  if (value === "") {
    throw new InvalidFieldError("alert_id", "is required");
  }
  if (!ALERT_ID_PATTERN.test(value)) {
    throw new InvalidFieldError("alert_id", "must be 1-128 characters of A-Z, a-z, 0-9, _, : or -");
  }
  return value;
}

/** hysteresis: 0 or more, and below + hysteresis (the recovery level) fits in int64. */
function hysteresis(value: bigint, below: bigint): bigint {
  if (value < 0n) {
    throw new InvalidFieldError("hysteresis", "must not be negative");
  }
  if (value > INT64_MAX - below) {
    throw new InvalidFieldError("hysteresis", "below + hysteresis must fit in int64");
  }
  return value;
}

export function toBalanceAlert(a: BalanceAlert): MessageInitShape<typeof BalanceAlertSchema> {
  return {
    alertId: a.alertId,
    walletId: a.walletId,
    asset: a.asset,
    below: a.below,
    hysteresis: a.hysteresis,
    metadata: a.metadata,
    createdAt: timestampFromDate(a.createdAt),
    updatedAt: timestampFromDate(a.updatedAt),
  };
}

/** The payload of a holdfast.balance.low or .recovered outbox row. */
export function toBalanceAlertEvent(data: Json): MessageInitShape<typeof BalanceAlertEventSchema> {
  const event = parseBalanceAlertEvent(data);
  return { alert: toBalanceAlert(event.alert), episode: event.episode };
}

type AlertHandlers = Pick<ServiceImpl<typeof AdminService>, "putBalanceAlert" | "listBalanceAlerts" | "deleteBalanceAlert">;

/** PutBalanceAlert, ListBalanceAlerts and DeleteBalanceAlert, for AdminService. */
export function alertAdminHandlers({ pool, clock = systemClock }: { pool: pg.Pool; clock?: Clock }): AlertHandlers {
  const alerts = createBalanceAlerts({ pool, clock });
  return {
    async putBalanceAlert(req, ctx) {
      const id = alertId(req.alertId);
      const below = v.amount(req.below, "below");
      const input = {
        alertId: id,
        walletId: req.walletId === "" ? "" : v.walletId(req.walletId),
        asset: v.asset(req.asset),
        below,
        hysteresis: hysteresis(req.hysteresis, below),
        metadata: v.metadata(req.metadata),
      };
      const r = await alerts.put(callerOf(ctx), input);
      return { alert: toBalanceAlert(r.alert), created: r.created };
    },

    async listBalanceAlerts(req, ctx) {
      const page = await alerts.list(callerOf(ctx), { pageSize: v.pageSize(req.pageSize), pageToken: req.pageToken });
      return { alerts: page.items.map(toBalanceAlert), nextPageToken: page.nextPageToken };
    },

    async deleteBalanceAlert(req, ctx) {
      const alert = await alerts.delete(callerOf(ctx), alertId(req.alertId));
      return { alert: toBalanceAlert(alert) };
    },
  };
}
