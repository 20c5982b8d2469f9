/**
 * The statement RPCs (docs/statements.md): LedgerService.GetStatement (reader; a wallet-scoped
 * key reads its own wallet's, which scope.ts checks), AdminService.CloseStatement and
 * AdminService.ListStatements (admin). Thin like the other handlers: validate, call the ledger
 * core, map the result. ledger-service.ts and admin-service.ts spread these into their services.
 *
 * @module
 */
import type { ServiceImpl } from "@connectrpc/connect";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromDate, type Timestamp } from "@bufbuild/protobuf/wkt";
import { InvalidFieldError } from "@holdfast/common/errors";
import type { AdminService } from "@holdfast/gen/holdfast/v1/admin_pb";
import type { LedgerService } from "@holdfast/gen/holdfast/v1/ledger_pb";
import { StatementSide, type StatementSchema } from "@holdfast/gen/holdfast/v1/statements_pb";
import { TransferKind } from "@holdfast/gen/holdfast/v1/types_pb";
import type { Ledger } from "../domain/ledger.js";
import type { Statement, StatementLine } from "../domain/statements.js";
import { callerOf } from "./auth.js";
import { unwrap } from "./convert.js";
import * as v from "./validate.js";

/** group_by names a metadata key, so it has a metadata key's shape (ledger.proto, "metadata"). */
const GROUP_BY_PATTERN = /^[A-Za-z0-9_.:-]{1,64}$/;

const SIDES: Record<StatementLine["side"], StatementSide> = { debit: StatementSide.DEBIT, credit: StatementSide.CREDIT };

/** GetStatement, for LedgerService. */
export function statementHandlers({ ledger }: { ledger: Ledger }): Pick<ServiceImpl<typeof LedgerService>, "getStatement"> {
  return {
    async getStatement(req, ctx) {
      const input = {
        walletId: v.walletId(req.walletId),
        asset: v.asset(req.asset),
        periodStart: requiredTimestamp(req.periodStart, "period_start"),
        periodEnd: requiredTimestamp(req.periodEnd, "period_end"),
        groupBy: groupBy(req.groupBy),
      };
      if (input.periodEnd.getTime() <= input.periodStart.getTime()) {
        throw new InvalidFieldError("period_end", "must be after period_start");
      }
      const r = unwrap(await ledger.getStatement(callerOf(ctx), input));
      return { statement: toStatement(r.statement) };
    },
  };
}

/** CloseStatement and ListStatements, for AdminService. */
export function statementAdminHandlers({
  ledger,
}: {
  ledger: Ledger;
}): Pick<ServiceImpl<typeof AdminService>, "closeStatement" | "listStatements"> {
  return {
    async closeStatement(req, ctx) {
      const input = {
        walletId: v.walletId(req.walletId),
        asset: v.asset(req.asset),
        periodEnd: requiredTimestamp(req.periodEnd, "period_end"),
        groupBy: groupBy(req.groupBy),
        idempotencyKey: v.idempotencyKey(req.idempotencyKey),
      };
      // The audit log entry is written by the SQL in the same transaction as the statement.
      const r = unwrap(await ledger.closeStatement(callerOf(ctx), input));
      return { statement: toStatement(r.statement), replayed: r.replayed };
    },

    async listStatements(req, ctx) {
      const input = {
        walletId: req.walletId === "" ? "" : v.walletId(req.walletId),
        asset: req.asset === "" ? "" : v.asset(req.asset),
        pageSize: v.pageSize(req.pageSize),
        pageToken: req.pageToken,
      };
      const page = await ledger.listStatements(callerOf(ctx), input);
      return { statements: page.items.map(toStatement), nextPageToken: page.nextPageToken };
    },
  };
}

/** A period bound: required, within the range of google.protobuf.Timestamp. */
function requiredTimestamp(value: Timestamp | undefined, field: string): Date {
  const date = v.optionalTimestamp(value, field);
  if (date === null) {
    throw new InvalidFieldError(field, "is required");
  }
  return date;
}

/** The metadata key to group lines by; empty for none. */
function groupBy(value: string): string {
  if (value !== "" && !GROUP_BY_PATTERN.test(value)) {
    throw new InvalidFieldError("group_by", "must be a metadata key: 1-64 characters of A-Z, a-z, 0-9, _, ., : or -");
  }
  return value;
}

export function toStatement(s: Statement): MessageInitShape<typeof StatementSchema> {
  return {
    statementId: s.statementId ?? "",
    walletId: s.walletId,
    asset: s.asset,
    periodStart: timestampFromDate(s.periodStart),
    periodEnd: timestampFromDate(s.periodEnd),
    groupBy: s.groupBy,
    openingPosted: s.openingPosted,
    closingPosted: s.closingPosted,
    lines: s.lines.map((l) => ({
      // The journal's kinds are the enum's names in lower case (types.proto, TransferKind).
      kind: TransferKind[l.kind.toUpperCase() as keyof typeof TransferKind] ?? TransferKind.UNSPECIFIED,
      side: SIDES[l.side],
      groupValue: l.groupValue,
      count: l.count,
      amount: l.amount,
    })),
    totalDebits: s.totalDebits,
    totalCredits: s.totalCredits,
    amountDue: s.amountDue,
    closedAt: s.closedAt ? timestampFromDate(s.closedAt) : undefined,
  };
}
