// The naive baseline's process (see naive-service.ts):
//
//   node bench/dist/naive-main.js --port 8090 --database postgres://.../holdfast_bench_naive [--pool-max 16]
import http2 from "node:http2";
import { parseArgs } from "node:util";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import pg from "pg";
import { createLogger } from "@holdfast/common/logger";
import { stopOnSignals } from "@holdfast/common/process";
import { naiveRoutes } from "./naive-service.js";

const CONNECT_TIMEOUT_MS = 5000;
/** The same server-side statement bound as the ledger's default (HOLDFAST_PG_STATEMENT_TIMEOUT_MS). */
const STATEMENT_TIMEOUT_MS = 5000;

const { values: args } = parseArgs({
  options: { port: { type: "string" }, database: { type: "string" }, "pool-max": { type: "string", default: "16" } },
});
if (!args.port || !args.database) {
  throw new Error("usage: naive-main --port N --database URL [--pool-max N]");
}
const pool = new pg.Pool({
  connectionString: args.database,
  max: Number(args["pool-max"]),
  connectionTimeoutMillis: CONNECT_TIMEOUT_MS,
  statement_timeout: STATEMENT_TIMEOUT_MS,
});
const server = http2.createServer(connectNodeAdapter({ routes: naiveRoutes(pool) }));
server.listen(Number(args.port), "127.0.0.1", () => process.stdout.write("ready\n"));
// Nothing to drain: the benchmark stops this process only after its last run.
stopOnSignals(createLogger("naive", "warn"), () => pool.end());
