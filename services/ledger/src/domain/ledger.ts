import { createHash } from "node:crypto";
import type pg from "pg";
import type { Clock, IdGenerator } from "@holdfast/common/ids";
import { createGroupCommit, createHoldRoutes, type QueuedCommand } from "./group-commit.js";
import { parseBalance, parseHold, parseRefusal, parseTransfer, parseWallet } from "./rows.js";
import type {
  Balance,
  Caller,
  Hold,
  HoldStatus,
  Metadata,
  Outcome,
  Transfer,
  Wallet,
  WalletStatus,
} from "./types.js";

/** How often a command is re-run after a transient conflict (deadlock, racing unique insert). */
const command_attempts_max = 3;

/** PostgreSQL error codes that mean "run the whole command again". */
const retryable_codes = new Set(["40001", "40P01", "23505"]);

/** numeric_value_out_of_range: a balance sum would not fit int64. */
const overflow_code = "22003";

/** Invalid date/time values: a page token naming an impossible time. */
const bad_datetime_codes = new Set(["22007", "22008"]);

/** Entries in the hold id → wallet map that routes captures to their wallet's batches. */
const hold_routes_max = 100_000;

export interface LedgerOptions {
  pool: pg.Pool;
  clock: Clock;
  newId: IdGenerator;
  /** Group commit per wallet (see group-commit.ts); null runs every command alone. */
  groupCommit?: { batchMax: number; queueMax: number } | null;
}

export interface DepositInput {
  walletId: string;
  asset: string;
  amount: bigint;
  idempotencyKey: string;
  metadata: Metadata;
}
export type SpendInput = DepositInput;

export interface ReserveInput extends DepositInput {
  /** Empty: generate one. */
  holdId: string;
  ttlSeconds: number;
}

export interface CaptureInput {
  holdId: string;
  /** Null: the whole hold. */
  amount: bigint | null;
  idempotencyKey: string;
  metadata: Metadata;
}

export interface HoldCommandInput {
  holdId: string;
  idempotencyKey: string;
}

export interface ExtendHoldInput extends HoldCommandInput {
  ttlSeconds: number;
}

export interface RefundInput {
  transferId: string;
  /** Null: all that remains refundable. */
  amount: bigint | null;
  idempotencyKey: string;
  metadata: Metadata;
}

export interface TransferInput {
  fromWalletId: string;
  toWalletId: string;
  asset: string;
  amount: bigint;
  idempotencyKey: string;
  metadata: Metadata;
}

export interface UpdateWalletInput {
  walletId: string;
  status: WalletStatus | null;
  creditLimits: { asset: string; creditLimit: bigint }[];
  metadata: Metadata;
}

export interface Page<T> {
  items: T[];
  /** Opaque cursor for the next page; empty on the last page. */
  nextPageToken: string;
}

/** A malformed page token; the RPC layer answers INVALID_ARGUMENT naming page_token. */
export class InvalidPageTokenError extends Error {}

type Json = Record<string, unknown>;

/**
 * The ledger core. Every command is one call of the SQL function `ledger_command`: one round
 * trip, no row lock held across an await. The clock and the id generator are arguments so
 * that tests can drive time.
 */
export function createLedger({ pool, clock, newId, groupCommit = null }: LedgerOptions) {
  /** Runs one command in its own transaction, retrying transient conflicts. */
  async function runSingle(c: QueuedCommand): Promise<Json> {
    for (let attempt = 1; ; attempt++) {
      try {
        const result = await pool.query<{ r: Json }>({
          name: "ledger_command",
          text: "select ledger_command($1, $2, $3, $4, $5, $6) as r",
          values: [c.tenantId, c.command, c.key, c.fingerprint, c.now, c.args],
        });
        return result.rows[0]!.r;
      } catch (err) {
        const code = (err as { code?: string }).code;
        if (code === overflow_code) {
          return { ok: false, reason: "AMOUNT_OVERFLOW", message: "the resulting balance would overflow int64", metadata: {} };
        }
        if (attempt >= command_attempts_max || code === undefined || !retryable_codes.has(code)) {
          throw err;
        }
      }
    }
  }

  const batches = groupCommit ? createGroupCommit({ pool, ...groupCommit, runSingle }) : null;
  const holdRoutes = createHoldRoutes(hold_routes_max);

  /**
   * Runs a command: through its wallet's group commit when the wallet is known and group
   * commit is on, alone otherwise.
   */
  async function command(
    caller: Caller,
    name: string,
    key: string,
    request: unknown,
    args: Json,
    walletId: string | undefined,
  ): Promise<Json> {
    // The fingerprint covers the request as the caller sent it (not generated ids) and the
    // key's wallet scope, so a scoped key can never replay another wallet's answer.
    const fingerprint = createHash("sha256")
      .update(canonicalJson([name, caller.scopeWalletId, request]))
      .digest();
    const queued: QueuedCommand = {
      tenantId: caller.tenantId,
      command: name,
      key,
      fingerprint,
      now: clock(),
      args: { ...args, scope_wallet_id: caller.scopeWalletId, transfer_id: newId() },
    };
    return batches && walletId !== undefined ? batches.submit(`${caller.tenantId}/${walletId}`, queued) : runSingle(queued);
  }

  function outcome<T>(row: Json, parse: (row: Json) => T): Outcome<T> {
    if (row["ok"] !== true) {
      return parseRefusal(row);
    }
    return { ok: true, replayed: row["replayed"] === true, ...parse(row) };
  }

  const withTransferAndBalance = (row: Json) => ({
    transfer: parseTransfer(row["transfer"] as Json),
    balance: parseBalance(row["balance"] as Json),
  });

  return {
    /** Group commit counters (batches, commands, largest batch, fallbacks); null when off. */
    groupCommitStats: () => batches?.stats() ?? null,

    async deposit(caller: Caller, input: DepositInput): Promise<Outcome<{ transfer: Transfer; balance: Balance }>> {
      const args = { wallet_id: input.walletId, asset: input.asset, amount: String(input.amount), metadata: input.metadata };
      const row = await command(caller, "Deposit", input.idempotencyKey, args, args, input.walletId);
      return outcome(row, withTransferAndBalance);
    },

    async spend(caller: Caller, input: SpendInput): Promise<Outcome<{ transfer: Transfer; balance: Balance }>> {
      const args = { wallet_id: input.walletId, asset: input.asset, amount: String(input.amount), metadata: input.metadata };
      const row = await command(caller, "Spend", input.idempotencyKey, args, args, input.walletId);
      return outcome(row, withTransferAndBalance);
    },

    async reserve(caller: Caller, input: ReserveInput): Promise<Outcome<{ hold: Hold; balance: Balance }>> {
      const request = {
        wallet_id: input.walletId,
        asset: input.asset,
        amount: String(input.amount),
        hold_id: input.holdId,
        ttl_seconds: input.ttlSeconds,
        metadata: input.metadata,
      };
      const args = { ...request, hold_id: input.holdId === "" ? `hold_${newId()}` : input.holdId };
      const row = await command(caller, "Reserve", input.idempotencyKey, request, args, input.walletId);
      const now = clock();
      const result = outcome(row, (r) => ({ hold: parseHold(r["hold"] as Json, now), balance: parseBalance(r["balance"] as Json) }));
      if (result.ok) {
        holdRoutes.remember(caller.tenantId, result.hold.holdId, result.hold.walletId);
      }
      return result;
    },

    async capture(
      caller: Caller,
      input: CaptureInput,
    ): Promise<Outcome<{ transfer: Transfer; hold: Hold; balance: Balance }>> {
      const args = {
        hold_id: input.holdId,
        amount: input.amount === null ? null : String(input.amount),
        metadata: input.metadata,
      };
      const row = await command(caller, "Capture", input.idempotencyKey, args, args, holdRoutes.walletOf(caller.tenantId, input.holdId));
      const now = clock();
      return outcome(row, (r) => ({ ...withTransferAndBalance(r), hold: parseHold(r["hold"] as Json, now) }));
    },

    async release(caller: Caller, input: HoldCommandInput): Promise<Outcome<{ hold: Hold; balance: Balance }>> {
      const args = { hold_id: input.holdId };
      const row = await command(caller, "Release", input.idempotencyKey, args, args, holdRoutes.walletOf(caller.tenantId, input.holdId));
      const now = clock();
      return outcome(row, (r) => ({ hold: parseHold(r["hold"] as Json, now), balance: parseBalance(r["balance"] as Json) }));
    },

    async extendHold(caller: Caller, input: ExtendHoldInput): Promise<Outcome<{ hold: Hold }>> {
      const args = { hold_id: input.holdId, ttl_seconds: input.ttlSeconds };
      const row = await command(caller, "ExtendHold", input.idempotencyKey, args, args, holdRoutes.walletOf(caller.tenantId, input.holdId));
      const now = clock();
      return outcome(row, (r) => ({ hold: parseHold(r["hold"] as Json, now) }));
    },

    async refund(caller: Caller, input: RefundInput): Promise<Outcome<{ transfer: Transfer; balance: Balance }>> {
      const args = {
        refund_transfer_id: input.transferId,
        amount: input.amount === null ? null : String(input.amount),
        metadata: input.metadata,
      };
      const row = await command(caller, "Refund", input.idempotencyKey, args, args, undefined);
      return outcome(row, withTransferAndBalance);
    },

    async transfer(
      caller: Caller,
      input: TransferInput,
    ): Promise<Outcome<{ transfer: Transfer; fromBalance: Balance; toBalance: Balance }>> {
      const args = {
        from_wallet_id: input.fromWalletId,
        to_wallet_id: input.toWalletId,
        asset: input.asset,
        amount: String(input.amount),
        metadata: input.metadata,
      };
      const row = await command(caller, "Transfer", input.idempotencyKey, args, args, undefined);
      return outcome(row, (r) => ({
        transfer: parseTransfer(r["transfer"] as Json),
        fromBalance: parseBalance(r["from_balance"] as Json),
        toBalance: parseBalance(r["to_balance"] as Json),
      }));
    },

    async createWallet(caller: Caller, walletId: string, metadata: Metadata): Promise<Outcome<{ wallet: Wallet }>> {
      const result = await pool.query<{ r: Json }>({
        name: "ledger_create_wallet",
        text: "select ledger_create_wallet($1, $2, $3) as r",
        values: [caller.tenantId, clock(), { wallet_id: walletId, metadata }],
      });
      return outcome(result.rows[0]!.r, (r) => ({ wallet: parseWallet(r["wallet"] as Json) }));
    },

    async updateWallet(caller: Caller, input: UpdateWalletInput): Promise<Outcome<{ wallet: Wallet }>> {
      const args = {
        wallet_id: input.walletId,
        status: input.status,
        credit_limits: input.creditLimits.map((l) => ({ asset: l.asset, credit_limit: String(l.creditLimit) })),
        metadata: input.metadata,
      };
      try {
        const result = await pool.query<{ r: Json }>({
          name: "ledger_update_wallet",
          text: "select ledger_update_wallet($1, $2, $3) as r",
          values: [caller.tenantId, clock(), args],
        });
        return outcome(result.rows[0]!.r, (r) => ({ wallet: parseWallet(r["wallet"] as Json) }));
      } catch (err) {
        if ((err as { code?: string }).code === overflow_code) {
          const message = "the resulting available balance would overflow int64";
          return { ok: false, reason: "AMOUNT_OVERFLOW", message, metadata: { field: "credit_limits" } };
        }
        throw err;
      }
    },

    async getWallet(caller: Caller, walletId: string): Promise<Wallet | null> {
      const result = await pool.query<{ r: Json | null }>({
        name: "ledger_get_wallet",
        text: "select ledger_wallet_json($1, $2, $3) as r",
        values: [caller.tenantId, walletId, clock()],
      });
      const row = result.rows[0]?.r;
      return row ? parseWallet(row) : null;
    },

    async getHold(caller: Caller, holdId: string): Promise<Hold | null> {
      const result = await pool.query<{ r: Json; wallet_id: string }>({
        name: "ledger_get_hold",
        text: "select ledger_hold_json(h) as r, h.wallet_id from holds h where tenant_id = $1 and hold_id = $2",
        values: [caller.tenantId, holdId],
      });
      const row = result.rows[0];
      if (!row || (caller.scopeWalletId !== null && row.wallet_id !== caller.scopeWalletId)) {
        return null;
      }
      return parseHold(row.r, clock());
    },

    listTransfers: (caller: Caller, walletId: string, asset: string, pageSize: number, pageToken: string) =>
      listTransfers(pool, caller, walletId, asset, pageSize, pageToken),

    listHolds: (caller: Caller, walletId: string, status: HoldStatus | null, pageSize: number, pageToken: string) =>
      listHolds(pool, clock(), caller, walletId, status, pageSize, pageToken),
  };
}

export type Ledger = ReturnType<typeof createLedger>;

/** Newest first, merging the wallet's debits and credits; the cursor is the last transfer id. */
async function listTransfers(
  pool: pg.Pool,
  caller: Caller,
  walletId: string,
  asset: string,
  pageSize: number,
  pageToken: string,
): Promise<Page<Transfer>> {
  const before = pageToken === "" ? null : decodeToken(pageToken, [isUuid])[0]!;
  const result = await pool.query<{ r: Json }>({
    name: "ledger_list_transfers",
    text: `
      select ledger_transfer_json(t) as r from (
        (select * from transfers
          where tenant_id = $1 and debit_wallet_id = $2 and debit_wallet_id not like '@%'
            and ($3::text = '' or asset = $3) and ($4::uuid is null or transfer_id < $4)
          order by transfer_id desc limit $5)
        union all
        (select * from transfers
          where tenant_id = $1 and credit_wallet_id = $2 and credit_wallet_id not like '@%'
            and ($3::text = '' or asset = $3) and ($4::uuid is null or transfer_id < $4)
          order by transfer_id desc limit $5)
      ) t order by transfer_id desc limit $5`,
    values: [caller.tenantId, walletId, asset, before, pageSize + 1],
  });
  const items = result.rows.slice(0, pageSize).map((row) => parseTransfer(row.r));
  const more = result.rows.length > pageSize;
  return { items, nextPageToken: more ? encodeToken([items.at(-1)!.transferId]) : "" };
}

/** Newest first; the cursor is the last (created_at, hold_id). Status is the effective one. */
async function listHolds(
  pool: pg.Pool,
  now: Date,
  caller: Caller,
  walletId: string,
  status: HoldStatus | null,
  pageSize: number,
  pageToken: string,
): Promise<Page<Hold>> {
  const [afterTime, afterId] = pageToken === "" ? [null, null] : decodeToken(pageToken, [isTimestamp, isText]);
  const result = await pool
    .query<{ r: Json; created_at_text: string }>({
    name: "ledger_list_holds",
    text: `
      select ledger_hold_json(h) as r, h.created_at::text as created_at_text from holds h
       where tenant_id = $1 and wallet_id = $2
         and ($4::timestamptz is null or (created_at, hold_id) < ($4, $5))
         and case $3::text
               when '' then true
               when 'pending' then status = 'pending' and expires_at > $6
               when 'expired' then status = 'expired' or (status = 'pending' and expires_at <= $6)
               else status = $3
             end
       order by created_at desc, hold_id desc limit $7`,
    values: [caller.tenantId, walletId, status ?? "", afterTime, afterId, now, pageSize + 1],
    })
    .catch((err: unknown) => {
      // The shape check above cannot tell February 30 from a real date; the database can.
      if (bad_datetime_codes.has((err as { code?: string }).code ?? "")) {
        throw new InvalidPageTokenError("page_token is not one this server issued");
      }
      throw err;
    });
  const rows = result.rows.slice(0, pageSize);
  const items = rows.map((row) => parseHold(row.r, now));
  const last = rows.at(-1);
  const more = result.rows.length > pageSize;
  return { items, nextPageToken: more && last ? encodeToken([last.created_at_text, last.r["hold_id"] as string]) : "" };
}

function encodeToken(parts: string[]): string {
  return Buffer.from(JSON.stringify(parts)).toString("base64url");
}

const isUuid = (s: string) => /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/.test(s);
const isTimestamp = (s: string) => /^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}(\.\d{1,6})?[+-]\d{2}(:\d{2})?$/.test(s);
const isText = (s: string) => s.length > 0 && s.length <= 128;

/** Decodes a page token, checking each part so that a forged token can never reach SQL. */
function decodeToken(token: string, checks: ((part: string) => boolean)[]): string[] {
  let parts: unknown;
  try {
    parts = JSON.parse(Buffer.from(token, "base64url").toString("utf8"));
  } catch {
    throw new InvalidPageTokenError("page_token is not one this server issued");
  }
  const valid =
    Array.isArray(parts) &&
    parts.length === checks.length &&
    parts.every((p, i) => typeof p === "string" && checks[i]!(p));
  if (!valid) {
    throw new InvalidPageTokenError("page_token is not one this server issued");
  }
  return parts as string[];
}

/** JSON with object keys sorted, so that equal requests hash equally. */
export function canonicalJson(value: unknown): string {
  return JSON.stringify(value, (_key, v: unknown) => {
    if (v !== null && typeof v === "object" && !Array.isArray(v)) {
      return Object.fromEntries(Object.entries(v as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
    }
    return v;
  });
}
