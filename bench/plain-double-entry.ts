// The "plain double entry" baseline: the least any double-entry ledger does per transfer between
// two wallets, as one SQL function in the naive service's database (its own tables, created by
// the benchmark's setup, not a Holdfast migration):
//
//   select plain_transfer(from, to, amount)
//     lock both accounts in id order; refuse below zero; insert a transfer row and two entry
//     rows; update both balances
//
// one autocommit statement (one transaction) per transfer through a pool of the services' size:
// no idempotency key, no events, no metadata, no audit. The transfers workload
// (workloads.ts) runs it against Holdfast's Transfer command.
import pg from "pg";
import type { Call, Caller } from "./rpc-client.js";

/** The system account deposits come from at setup; it has no row of its own, like Holdfast's @world. */
const WORLD = "@world";

export const PLAIN_SCHEMA = `
  create table plain_accounts (id text primary key, balance bigint not null check (balance >= 0));
  create table plain_transfers (id bigserial primary key, debit_account_id text not null, credit_account_id text not null,
    amount bigint not null check (amount > 0), created_at timestamptz not null default now());
  create table plain_entries (id bigserial primary key, transfer_id bigint not null references plain_transfers (id),
    account_id text not null, amount bigint not null);
  create index on plain_entries (account_id);

  -- One transfer: null when the debit account lacks the funds (nothing written), else its id.
  create function plain_transfer(p_from text, p_to text, p_amount bigint) returns bigint language plpgsql as $$
  declare
    v_from_balance bigint;
    v_id bigint;
  begin
    perform 1 from plain_accounts where id in (p_from, p_to) order by id for update;
    select balance into v_from_balance from plain_accounts where id = p_from;
    if v_from_balance is null or v_from_balance < p_amount then
      return null;
    end if;
    insert into plain_transfers (debit_account_id, credit_account_id, amount) values (p_from, p_to, p_amount) returning id into v_id;
    insert into plain_entries (transfer_id, account_id, amount) values (v_id, p_from, -p_amount), (v_id, p_to, p_amount);
    update plain_accounts set balance = balance - p_amount where id = p_from;
    update plain_accounts set balance = balance + p_amount where id = p_to;
    return v_id;
  end $$;`;

/**
 * Funds every account of the naive service's `balances` table with the same amount, each as one
 * transfer from WORLD with its two entries, so that balances = entries holds from the start.
 */
export async function fundPlainAccounts(pool: pg.Pool): Promise<void> {
  await pool.query(`
    with funded as (
      insert into plain_accounts (id, balance) select wallet_id, balance from balances returning id, balance
    ), moved as (
      insert into plain_transfers (debit_account_id, credit_account_id, amount)
      select '${WORLD}', id, balance from funded returning id, credit_account_id, amount
    )
    insert into plain_entries (transfer_id, account_id, amount)
    select id, credit_account_id, amount from moved union all select id, '${WORLD}', -amount from moved`);
}

/**
 * The plain ledger's own invariants: every transfer has two entries summing to zero, every
 * account's balance equals its entries, none is below zero (the CHECK enforces it too).
 */
export async function checkPlainInvariants(pool: pg.Pool): Promise<string[]> {
  const unbalanced = await pool.query<{ n: string }>(
    `select count(*) as n from (select transfer_id from plain_entries group by transfer_id having count(*) <> 2 or sum(amount) <> 0) t`,
  );
  const wrong = await pool.query<{ n: string }>(
    `select count(*) as n from plain_accounts a
       left join (select account_id, sum(amount) as total from plain_entries group by account_id) e on e.account_id = a.id
      where a.balance <> coalesce(e.total, 0) or a.balance < 0`,
  );
  const out: string[] = [];
  if (Number(unbalanced.rows[0]!.n) > 0) out.push(`plain double entry: ${unbalanced.rows[0]!.n} transfers whose entries do not sum to zero`);
  if (Number(wrong.rows[0]!.n) > 0) out.push(`plain double entry: ${wrong.rows[0]!.n} accounts whose balance differs from their entries or is below zero`);
  return out;
}

/**
 * A Caller whose every call is one plain_transfer statement on a pool of `poolMax` connections
 * (the services' pool size), opened before the clock starts. A refusal (too little money) is
 * answered as the RPC layer would answer INSUFFICIENT_FUNDS.
 */
export async function createPlainCaller(databaseUrl: string, poolMax: number): Promise<Caller> {
  const pool = new pg.Pool({ connectionString: databaseUrl, max: poolMax });
  await Promise.all(Array.from({ length: poolMax }, () => pool.connect())).then((clients) => clients.forEach((c) => c.release()));
  const call: Call = async (method, request) => {
    if (method !== "transfer") throw new Error(`the plain double-entry row does not send ${method}`);
    const r = await pool.query<{ id: string | null }>({
      name: "plain_transfer",
      text: "select plain_transfer($1, $2, $3) as id",
      values: [request["fromWalletId"], request["toWalletId"], String(request["amount"])],
    });
    if (r.rows[0]!.id === null) throw Object.assign(new Error("insufficient funds"), { code: 9 });
    return r.rows[0];
  };
  return { call, close: () => void pool.end() };
}
