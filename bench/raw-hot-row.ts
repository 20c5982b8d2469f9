// The raw hot-row baseline: the database's own ceiling for one hot row. N PostgreSQL clients,
// each in a closed loop of one autocommit statement,
//
//   update bench_hot_row set balance = balance - $1 where id = 1 and balance >= $1
//
// so every command is one round trip and one commit flush while holding the row's lock: no
// RPC, no journal, no idempotency, no event.
import pg from "pg";
import type { Call, Caller } from "./rpc-client.js";

export const hot_row_table_sql = "create table bench_hot_row (id int primary key, balance bigint not null)";
const connect_timeout_ms = 5000;

/** A Caller whose every call is the UPDATE above, on a pool of exactly `clients` connections. */
export async function createRawHotRowCaller(databaseUrl: string, clients: number): Promise<Caller> {
  const pool = new pg.Pool({ connectionString: databaseUrl, max: clients, connectionTimeoutMillis: connect_timeout_ms });
  // Open every connection before the clock starts, so that connecting is not measured.
  const opened = await Promise.all(Array.from({ length: clients }, () => pool.connect()));
  opened.forEach((c) => c.release());
  const call: Call = async (_method, request) => {
    const r = await pool.query({
      name: "raw_hot_row",
      text: "update bench_hot_row set balance = balance - $1 where id = 1 and balance >= $1",
      values: [String(request["amount"])],
    });
    // No row updated: the balance would go below zero, the raw equivalent of INSUFFICIENT_FUNDS.
    if (r.rowCount !== 1) throw Object.assign(new Error("insufficient funds"), { code: 9 });
    return r;
  };
  return { call, close: () => void pool.end() };
}
