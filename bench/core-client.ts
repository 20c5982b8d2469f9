// The ledger core called in the load generator's own process, without RPC (`--core`): what the
// database side of Holdfast does on its own, for comparison with the raw hot row, which has no
// RPC either. A reference row only; the targets compare the real service.
import pino from "pino";
import { systemClock, uuidV7 } from "@holdfast/common/ids";
import { createPool } from "@holdfast/common/pg";
import { loadLedgerConfig } from "@holdfast/ledger/config";
import { createLedger, type Refusal } from "@holdfast/ledger/domain";
import type { Call, Caller } from "./rpc-client.js";

export interface CoreOptions {
  databaseUrl: string;
  tenantId: string;
  groupCommit: boolean;
  /** The same pool size as the service's (main.ts SERVICE_POOL_MAX). */
  poolMax: number;
}

/** The ledger's own defaults (HOLDFAST_GROUP_COMMIT_BATCH_MAX and _QUEUE_MAX unset). */
const LEDGER_DEFAULTS = loadLedgerConfig({});
const CONNECT_TIMEOUT_MS = 5000;
const STATEMENT_TIMEOUT_MS = 30_000;
const HOLD_TTL_SECONDS = 120;

/** The gRPC status the RPC layer would answer for a refusal (README, Errors). */
function grpcCode(reason: Refusal["reason"]): number {
  if (reason.endsWith("_NOT_FOUND")) return 5;
  if (reason.endsWith("_EXISTS") || reason === "IDEMPOTENCY_KEY_REUSED") return 6;
  return 9;
}

function unwrap(outcome: { ok: true } | Refusal): object {
  if (!outcome.ok) throw Object.assign(new Error(outcome.message), { code: grpcCode(outcome.reason) });
  return outcome;
}

export function createCoreCaller(options: CoreOptions): Caller {
  const pool = createPool(
    {
      databaseUrl: options.databaseUrl,
      pgPoolMax: options.poolMax,
      pgConnectTimeoutMs: CONNECT_TIMEOUT_MS,
      pgStatementTimeoutMs: STATEMENT_TIMEOUT_MS,
    },
    pino({ level: "silent" }),
  );
  const ledger = createLedger({
    pool,
    clock: systemClock,
    newId: uuidV7,
    groupCommit: options.groupCommit ? { batchMax: LEDGER_DEFAULTS.groupCommitBatchMax, queueMax: LEDGER_DEFAULTS.groupCommitQueueMax } : null,
  });
  const caller = { tenantId: options.tenantId, scopeWalletId: null };
  const call: Call = async (method, r) => {
    const base = { idempotencyKey: r["idempotencyKey"] as string, metadata: {} };
    const wallet = { walletId: r["walletId"] as string, asset: r["asset"] as string, amount: r["amount"] as bigint };
    switch (method) {
      case "reserve":
        return unwrap(await ledger.reserve(caller, { ...base, ...wallet, holdId: r["holdId"] as string, ttlSeconds: HOLD_TTL_SECONDS }));
      case "capture":
        return unwrap(await ledger.capture(caller, { ...base, holdId: r["holdId"] as string, amount: r["amount"] as bigint }));
      case "deposit":
        return unwrap(await ledger.deposit(caller, { ...base, ...wallet }));
      case "spend":
        return unwrap(await ledger.spend(caller, { ...base, ...wallet }));
      case "transfer": {
        const between = { fromWalletId: r["fromWalletId"] as string, toWalletId: r["toWalletId"] as string, asset: r["asset"] as string, amount: r["amount"] as bigint };
        return unwrap(await ledger.transfer(caller, { ...base, ...between }));
      }
      default:
        throw new Error(`the core rows do not send ${method}`);
    }
  };
  return { call, close: () => void pool.end() };
}
