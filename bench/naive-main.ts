// The naive baseline's process (see naive-service.ts):
//
//   node dist/bench/naive-main.js --port 8090 --database postgres://.../holdfast_bench_naive
import http2 from "node:http2";
import { parseArgs } from "node:util";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import pg from "pg";
import { naiveRoutes } from "./naive-service.js";

/** The same pool size as the ledger's in the benchmark (bench/main.ts service_pool_max). */
const pool_max = 16;

const { values: args } = parseArgs({ options: { port: { type: "string" }, database: { type: "string" } } });
if (!args.port || !args.database) {
  throw new Error("usage: naive-main --port N --database URL");
}
const pool = new pg.Pool({ connectionString: args.database, max: pool_max, connectionTimeoutMillis: 5000 });
const server = http2.createServer(connectNodeAdapter({ routes: naiveRoutes(pool) }));
server.listen(Number(args.port), "127.0.0.1", () => process.stdout.write("ready\n"));
process.on("SIGTERM", () => server.close(() => void pool.end().then(() => process.exit(0))));
