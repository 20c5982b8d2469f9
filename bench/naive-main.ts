// The naive baseline's process (see naive-service.ts):
//
//   node bench/dist/naive-main.js --port 8090 --database postgres://.../holdfast_bench_naive [--pool-max 16]
import http2 from "node:http2";
import { parseArgs } from "node:util";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import pg from "pg";
import { readDatabaseConfig } from "@holdfast/common/config";
import { createLogger } from "@holdfast/common/logger";
import { stopOnSignals } from "@holdfast/common/process";
import { naiveRoutes } from "./naive-service.js";

/** The ledger's own connect and statement bounds (HOLDFAST_PG_* unset), so both sides wait alike. */
const DATABASE_DEFAULTS = readDatabaseConfig({});

const { values: args } = parseArgs({
  options: { port: { type: "string" }, database: { type: "string" }, "pool-max": { type: "string", default: "16" } },
});
if (!args.port || !args.database) {
  throw new Error("usage: naive-main --port N --database URL [--pool-max N]");
}
const pool = new pg.Pool({
  connectionString: args.database,
  max: Number(args["pool-max"]),
  connectionTimeoutMillis: DATABASE_DEFAULTS.pgConnectTimeoutMs,
  statement_timeout: DATABASE_DEFAULTS.pgStatementTimeoutMs,
});
const server = http2.createServer(connectNodeAdapter({ routes: naiveRoutes(pool) }));
server.listen(Number(args.port), "127.0.0.1", () => process.stdout.write("ready\n"));
// Nothing to drain: the benchmark stops this process only after its last run.
stopOnSignals(createLogger("naive", "warn"), () => pool.end());
