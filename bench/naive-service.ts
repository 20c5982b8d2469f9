// The naive baseline: the same LedgerService surface (Deposit, Reserve, Capture, Spend) built
// the way a typical team would ship it: an interactive transaction per command through a pool
// (BEGIN; idempotency lookup; SELECT ... FOR UPDATE; UPDATE; INSERT; COMMIT), several round
// trips while the wallet's row lock is held. It is only for the benchmark.
// Its process entry point is naive-main.ts.
import { Code, ConnectError } from "@connectrpc/connect";
import type pg from "pg";
import { LedgerService } from "../gen/holdfast/v1/ledger_pb.js";

export const naive_schema = `
  create table if not exists balances (wallet_id text primary key, balance bigint not null, held bigint not null default 0,
    check (balance - held >= 0));
  create table if not exists holds (hold_id text primary key, wallet_id text not null, amount bigint not null, status text not null);
  create table if not exists journal (id bigserial primary key, wallet_id text not null, kind text not null, amount bigint not null,
    hold_id text, created_at timestamptz not null default now());
  create table if not exists idempotency (key text primary key, response text not null);`;

type Tx = pg.PoolClient;

/** Runs fn in an interactive transaction; an idempotency key already seen returns its answer. */
async function transaction(pool: pg.Pool, key: string, fn: (tx: Tx) => Promise<string>): Promise<string> {
  const tx = await pool.connect();
  try {
    await tx.query("begin");
    const seen = await tx.query<{ response: string }>("select response from idempotency where key = $1", [key]);
    if (seen.rows[0]) {
      await tx.query("commit");
      return seen.rows[0].response;
    }
    const response = await fn(tx);
    await tx.query("insert into idempotency (key, response) values ($1, $2)", [key, response]);
    await tx.query("commit");
    return response;
  } catch (err) {
    await tx.query("rollback").catch(() => undefined);
    throw err;
  } finally {
    tx.release();
  }
}

async function lockWallet(tx: Tx, walletId: string): Promise<{ balance: bigint; held: bigint }> {
  const r = await tx.query<{ balance: string; held: string }>("select balance, held from balances where wallet_id = $1 for update", [walletId]);
  if (!r.rows[0]) throw new ConnectError("wallet not found", Code.NotFound);
  return { balance: BigInt(r.rows[0].balance), held: BigInt(r.rows[0].held) };
}

function refuse(message: string): never {
  throw new ConnectError(message, Code.FailedPrecondition);
}

export function naiveRoutes(pool: pg.Pool) {
  return (router: import("@connectrpc/connect").ConnectRouter) =>
    router.service(LedgerService, {
      async deposit(req) {
        await transaction(pool, req.idempotencyKey, async (tx) => {
          await tx.query(
            "insert into balances (wallet_id, balance) values ($1, $2) on conflict (wallet_id) do update set balance = balances.balance + $2",
            [req.walletId, req.amount.toString()],
          );
          await tx.query("insert into journal (wallet_id, kind, amount) values ($1, 'deposit', $2)", [req.walletId, req.amount.toString()]);
          return "ok";
        });
        return {};
      },
      async spend(req) {
        await transaction(pool, req.idempotencyKey, async (tx) => {
          const w = await lockWallet(tx, req.walletId);
          if (w.balance - w.held < req.amount) refuse("insufficient funds");
          await tx.query("update balances set balance = balance - $2 where wallet_id = $1", [req.walletId, req.amount.toString()]);
          await tx.query("insert into journal (wallet_id, kind, amount) values ($1, 'spend', $2)", [req.walletId, req.amount.toString()]);
          return "ok";
        });
        return {};
      },
      async reserve(req) {
        await transaction(pool, req.idempotencyKey, async (tx) => {
          const w = await lockWallet(tx, req.walletId);
          if (w.balance - w.held < req.amount) refuse("insufficient funds");
          await tx.query("update balances set held = held + $2 where wallet_id = $1", [req.walletId, req.amount.toString()]);
          await tx.query("insert into holds (hold_id, wallet_id, amount, status) values ($1, $2, $3, 'pending')", [
            req.holdId,
            req.walletId,
            req.amount.toString(),
          ]);
          return "ok";
        });
        return { hold: { holdId: req.holdId } };
      },
      async capture(req) {
        await transaction(pool, req.idempotencyKey, async (tx) => {
          const h = await tx.query<{ wallet_id: string; amount: string; status: string }>(
            "select wallet_id, amount, status from holds where hold_id = $1 for update",
            [req.holdId],
          );
          const hold = h.rows[0];
          if (!hold) throw new ConnectError("hold not found", Code.NotFound);
          if (hold.status !== "pending") refuse("hold is not pending");
          const amount = req.amount ?? BigInt(hold.amount);
          const w = await lockWallet(tx, hold.wallet_id);
          if (w.balance - w.held + BigInt(hold.amount) < amount) refuse("insufficient funds");
          await tx.query("update balances set balance = balance - $2, held = held - $3 where wallet_id = $1", [
            hold.wallet_id,
            amount.toString(),
            hold.amount,
          ]);
          await tx.query("update holds set status = 'captured' where hold_id = $1", [req.holdId]);
          await tx.query("insert into journal (wallet_id, kind, amount, hold_id) values ($1, 'capture', $2, $3)", [
            hold.wallet_id,
            amount.toString(),
            req.holdId,
          ]);
          return "ok";
        });
        return {};
      },
    });
}

/** The naive service's own invariants: balances equal their journal, nothing below zero. */
export async function checkNaiveInvariants(pool: pg.Pool): Promise<string[]> {
  const r = await pool.query<{ wallet_id: string }>(`
    select b.wallet_id from balances b
      left join (select wallet_id, sum(case when kind = 'deposit' then amount else -amount end) as net
                   from journal group by wallet_id) j using (wallet_id)
      left join (select wallet_id, sum(amount) as pending from holds where status = 'pending' group by wallet_id) h using (wallet_id)
     where b.balance <> coalesce(j.net, 0) or b.held <> coalesce(h.pending, 0) or b.balance - b.held < 0
     limit 10`);
  return r.rows.map((row) => `naive: wallet ${row.wallet_id} does not match its journal`);
}
