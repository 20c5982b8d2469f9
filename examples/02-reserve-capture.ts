// Reserve before the expensive work, capture what it really cost: the cycle every Holdfast
// caller runs, over gRPC with the generated client, the API key from HOLDFAST_API_KEY (the
// one variable every example and doc uses).
//
//   export HOLDFAST_API_KEY=$(cat .holdfast/dev-admin-key)   # after npm start
//   npx tsx examples/02-reserve-capture.ts [endpoint] [wallet_id]
//
// The endpoint defaults to http://127.0.0.1:8080 and the wallet to user_123. Each run funds the
// wallet with 1000 and reserves 500 of it, then captures 123: the other 377 go back.
import { randomUUID } from "node:crypto";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { LedgerService } from "@holdfast/gen/holdfast/v1/ledger_pb";

const [endpoint = "http://127.0.0.1:8080", walletId = "user_123"] = process.argv.slice(2);
const apiKey = process.env["HOLDFAST_API_KEY"];
if (apiKey === undefined || apiKey.trim() === "") {
  console.error("set HOLDFAST_API_KEY to a writer or admin key (npm start keeps one in .holdfast/dev-admin-key)");
  process.exit(1);
}

const ledger = createClient(
  LedgerService,
  createGrpcTransport({
    baseUrl: endpoint,
    interceptors: [(next) => (req) => {
      req.header.set("authorization", `Bearer ${apiKey.trim()}`);
      return next(req);
    }],
  }),
);

// A fresh idempotency key per command and run; a retry of one command would reuse its key.
const run = randomUUID();
await ledger.deposit({ walletId, asset: "USD", amount: 1000n, idempotencyKey: `${run}-deposit` });
const { hold } = await ledger.reserve({
  walletId,
  asset: "USD",
  amount: 500n,
  ttlSeconds: 45,
  holdId: `generation_${run}`,
  idempotencyKey: `${run}-reserve`,
  metadata: { model: "gpt-4-turbo" },
});
console.log(`reserved ${hold?.amount} USD on ${walletId} (hold ${hold?.holdId})`);
const { balance } = await ledger.capture({ holdId: hold!.holdId, amount: 123n, idempotencyKey: `${run}-capture` });
console.log(`captured 123 USD; available now ${balance?.available}`);
