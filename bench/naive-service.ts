// The naive baseline: the same LedgerService surface (Deposit, Reserve, Capture, Spend,
// GetWallet) built the way a typical team would ship it: an interactive transaction per
// command through a pool,
//
//   BEGIN; idempotency lookup; SELECT ... FOR UPDATE; UPDATE; INSERT; INSERT key; COMMIT
//
// five to seven round trips while the wallet's row lock is held. Its schema is its own (a
// balances table and a journal table) in its own database. It is only for the benchmark; its
// process entry point is naive-main.ts.
import { createHash } from "node:crypto";
import { Code, ConnectError, type ConnectRouter } from "@connectrpc/connect";
import type pg from "pg";
import { LedgerService } from "@holdfast/gen/holdfast/v1/ledger_pb";

export const NAIVE_SCHEMA = `
  create table balances (wallet_id text primary key, asset text not null, balance bigint not null,
    held bigint not null default 0, check (balance - held >= 0));
  create table holds (hold_id text primary key, wallet_id text not null, amount bigint not null, status text not null);
  create table journal (id bigserial primary key, wallet_id text not null, kind text not null, amount bigint not null,
    hold_id text, created_at timestamptz not null default now());
  create table idempotency (key text primary key, fingerprint text not null, response text not null);`;

type Tx = pg.PoolClient;
type Json = Record<string, unknown>;
interface BalanceRow {
  asset: string;
  balance: string;
  held: string;
}

/** JSON with bigints as strings: the stored answer of a command, and its request's fingerprint. */
function toJson(value: unknown): string {
  return JSON.stringify(value, (_k, v: unknown) => (typeof v === "bigint" ? v.toString() : v));
}

function fingerprint(method: string, request: object): string {
  const { $typeName: _, ...fields } = request as Json;
  return createHash("sha256").update(method).update(toJson(fields)).digest("hex");
}

function refuse(message: string, code = Code.FailedPrecondition): never {
  throw new ConnectError(message, code);
}

/**
 * Runs `fn` in an interactive transaction keyed by the idempotency key: a key already seen
 * with the same request returns the stored answer, with another request ALREADY_EXISTS.
 * Refusals roll back and are not recorded, as most hand-written services do.
 */
async function idempotent(pool: pg.Pool, key: string, print: string, fn: (tx: Tx) => Promise<Json>): Promise<Json> {
  const tx = await pool.connect();
  try {
    await tx.query("begin");
    const seen = await tx.query<{ fingerprint: string; response: string }>(
      "select fingerprint, response from idempotency where key = $1",
      [key],
    );
    if (seen.rows[0]) {
      await tx.query("commit");
      if (seen.rows[0].fingerprint !== print) refuse("idempotency key reused with another request", Code.AlreadyExists);
      return JSON.parse(seen.rows[0].response) as Json;
    }
    const response = await fn(tx);
    await tx.query("insert into idempotency (key, fingerprint, response) values ($1, $2, $3)", [key, print, toJson(response)]);
    await tx.query("commit");
    return response;
  } catch (err) {
    await tx.query("rollback").catch(() => undefined);
    throw err;
  } finally {
    tx.release();
  }
}

async function lockWallet(tx: Tx, walletId: string): Promise<{ available: bigint }> {
  const r = await tx.query<BalanceRow>("select asset, balance, held from balances where wallet_id = $1 for update", [walletId]);
  if (!r.rows[0]) refuse("wallet not found", Code.NotFound);
  return { available: BigInt(r.rows[0].balance) - BigInt(r.rows[0].held) };
}

/** Applies a balance change and returns the Balance message the response carries. */
async function updateBalance(tx: Tx, walletId: string, posted: bigint, held: bigint): Promise<Json> {
  const r = await tx.query<BalanceRow>(
    "update balances set balance = balance + $2, held = held + $3 where wallet_id = $1 returning asset, balance, held",
    [walletId, posted.toString(), held.toString()],
  );
  const row = r.rows[0]!;
  return { asset: row.asset, posted: BigInt(row.balance), held: BigInt(row.held), available: BigInt(row.balance) - BigInt(row.held) };
}

async function journal(tx: Tx, walletId: string, kind: string, amount: bigint, holdId: string | null = null): Promise<void> {
  await tx.query("insert into journal (wallet_id, kind, amount, hold_id) values ($1, $2, $3, $4)", [walletId, kind, amount.toString(), holdId]);
}

async function capture(tx: Tx, holdId: string, amount: bigint | undefined): Promise<Json> {
  const h = await tx.query<{ wallet_id: string; amount: string; status: string }>(
    "select wallet_id, amount, status from holds where hold_id = $1 for update",
    [holdId],
  );
  const hold = h.rows[0];
  if (!hold) refuse("hold not found", Code.NotFound);
  if (hold.status !== "pending") refuse("hold is not pending");
  const held = BigInt(hold.amount);
  const taken = amount ?? held;
  const wallet = await lockWallet(tx, hold.wallet_id);
  if (wallet.available + held < taken) refuse("insufficient funds");
  const balance = await updateBalance(tx, hold.wallet_id, -taken, -held);
  await tx.query("update holds set status = 'captured' where hold_id = $1", [holdId]);
  await journal(tx, hold.wallet_id, "capture", taken, holdId);
  return { hold: { holdId, walletId: hold.wallet_id, amount: held, capturedAmount: taken }, balance };
}

export function naiveRoutes(pool: pg.Pool) {
  return (router: ConnectRouter) =>
    router.service(LedgerService, {
      async deposit(req) {
        return idempotent(pool, req.idempotencyKey, fingerprint("deposit", req), async (tx) => {
          await tx.query("insert into balances (wallet_id, asset, balance) values ($1, $2, 0) on conflict do nothing", [req.walletId, req.asset]);
          await lockWallet(tx, req.walletId);
          const balance = await updateBalance(tx, req.walletId, req.amount, 0n);
          await journal(tx, req.walletId, "deposit", req.amount);
          return { balance };
        });
      },
      async spend(req) {
        return idempotent(pool, req.idempotencyKey, fingerprint("spend", req), async (tx) => {
          const wallet = await lockWallet(tx, req.walletId);
          if (wallet.available < req.amount) refuse("insufficient funds");
          const balance = await updateBalance(tx, req.walletId, -req.amount, 0n);
          await journal(tx, req.walletId, "spend", req.amount);
          return { balance };
        });
      },
      async reserve(req) {
        return idempotent(pool, req.idempotencyKey, fingerprint("reserve", req), async (tx) => {
          const wallet = await lockWallet(tx, req.walletId);
          if (wallet.available < req.amount) refuse("insufficient funds");
          const balance = await updateBalance(tx, req.walletId, 0n, req.amount);
          await tx.query("insert into holds (hold_id, wallet_id, amount, status) values ($1, $2, $3, 'pending')", [
            req.holdId,
            req.walletId,
            req.amount.toString(),
          ]);
          return { hold: { holdId: req.holdId, walletId: req.walletId, amount: req.amount }, balance };
        });
      },
      async capture(req) {
        return idempotent(pool, req.idempotencyKey, fingerprint("capture", req), (tx) => capture(tx, req.holdId, req.amount));
      },
      async getWallet(req) {
        const r = await pool.query<BalanceRow>("select asset, balance, held from balances where wallet_id = $1", [req.walletId]);
        if (!r.rows[0]) refuse("wallet not found", Code.NotFound);
        const { asset, balance, held } = r.rows[0];
        return { wallet: { walletId: req.walletId, balances: [{ asset, posted: BigInt(balance), held: BigInt(held), available: BigInt(balance) - BigInt(held) }] } };
      },
    });
}

/** The naive service's own invariants: balances and holds equal their journal, nothing below zero. */
export async function checkNaiveInvariants(pool: pg.Pool): Promise<string[]> {
  const r = await pool.query<{ wallet_id: string }>(`
    select b.wallet_id from balances b
      left join (select wallet_id, sum(case when kind = 'deposit' then amount else -amount end) as net
                   from journal group by wallet_id) j using (wallet_id)
      left join (select wallet_id, sum(amount) as pending from holds where status = 'pending' group by wallet_id) h using (wallet_id)
     where b.balance <> coalesce(j.net, 0) or b.held <> coalesce(h.pending, 0) or b.balance - b.held < 0
     limit 10`);
  return r.rows.map((row) => `naive: wallet ${row.wallet_id} does not match its journal or is below zero`);
}
