// The raw hot-row baseline: the database's own ceiling for one hot row. N PostgreSQL clients,
// each in a closed loop of one autocommit statement,
//
//   update bench_hot_row set balance = balance - $1 where id = 1 and balance >= $1
//
// so every command is one round trip and one commit flush while holding the row's lock: no
// RPC, no journal, no idempotency, no event.
import pg from "pg";
import type { Call, Caller } from "./rpc-client.js";

export const HOT_ROW_TABLE_SQL = "create table bench_hot_row (id int primary key, balance bigint not null)";
const CONNECT_TIMEOUT_MS = 5000;
/** PostgreSQL's "sorry, too many clients already". */
const TOO_MANY_CONNECTIONS_SQLSTATE = "53300";

/**
 * Opens up to `wanted` connections, one after another, and stops early (keeping what it has)
 * when the server has no more to give: the server is shared, and its free connections can
 * change between the orchestrator's count and this moment.
 */
async function openClients(databaseUrl: string, wanted: number): Promise<pg.Client[]> {
  const clients: pg.Client[] = [];
  while (clients.length < wanted) {
    const client = new pg.Client({ connectionString: databaseUrl, connectionTimeoutMillis: CONNECT_TIMEOUT_MS });
    try {
      await client.connect();
    } catch (err) {
      if ((err as { code?: string }).code !== TOO_MANY_CONNECTIONS_SQLSTATE || clients.length === 0) throw err;
      break;
    }
    clients.push(client);
  }
  return clients;
}

/**
 * A Caller whose every call is the UPDATE above, on its own connections: a caller takes an idle
 * one or waits for one, so more callers than connections queue in the client as they would on
 * a pool. Connecting happens before the clock starts.
 */
export async function createRawHotRowCaller(databaseUrl: string, wanted: number): Promise<Caller & { clients: number }> {
  const idle = await openClients(databaseUrl, wanted);
  const all = [...idle];
  const waiting: ((client: pg.Client) => void)[] = [];
  const acquire = () => idle.pop() ?? new Promise<pg.Client>((resolve) => waiting.push(resolve));
  const release = (client: pg.Client) => {
    const next = waiting.shift();
    if (next) next(client);
    else idle.push(client);
  };
  const call: Call = async (_method, request) => {
    const client = await acquire();
    try {
      const r = await client.query({
        name: "raw_hot_row",
        text: "update bench_hot_row set balance = balance - $1 where id = 1 and balance >= $1",
        values: [String(request["amount"])],
      });
      // No row updated: the balance would go below zero, the raw equivalent of INSUFFICIENT_FUNDS.
      if (r.rowCount !== 1) throw Object.assign(new Error("insufficient funds"), { code: 9 });
      return r;
    } finally {
      release(client);
    }
  };
  return { call, close: () => all.forEach((c) => void c.end()), clients: all.length };
}
