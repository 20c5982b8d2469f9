/**
 * After a call that may have committed events, tell whoever waits for them: the outbox relay
 * (so the events reach NATS at once instead of at its safety poll) and the WatchWallet feed (so
 * watchers see the change at once instead of at its next poll). The call has returned, so its
 * transaction has committed.
 *
 * Reads (the RPCs a reader key may call, scope.ts) wake nobody, and neither do calls outside
 * Holdfast's services (the gRPC health service), so probes and reads cost the relay nothing. A
 * write that committed nothing (refused, replayed) only costs an idle look.
 *
 * @module
 */
import type { Interceptor } from "@connectrpc/connect";
import { ruleOf } from "./scope.js";

/** The services whose writes commit events. */
const HOLDFAST_SERVICE_PREFIX = "holdfast.v1.";
/** Request fields that name the wallets a command changes. */
const WALLET_FIELDS = ["walletId", "fromWalletId", "toWalletId"] as const;

/**
 * `onCommit(wallets)` runs after each successful write: `wallets` are the wallets the request
 * names, or null when it names none it changes by itself (Capture by hold id, ExecuteBatch), so
 * any watched wallet may have changed.
 */
export function commitWakeInterceptor(onCommit: (wallets: readonly string[] | null) => void): Interceptor {
  return (next) => async (req) => {
    const res = await next(req);
    if (!req.stream && req.service.typeName.startsWith(HOLDFAST_SERVICE_PREFIX) && ruleOf(req.service.typeName, req.method.name).role !== "reader") {
      onCommit(walletsOf(req.message as Record<string, unknown>));
    }
    return res;
  };
}

function walletsOf(message: Record<string, unknown>): readonly string[] | null {
  const wallets = WALLET_FIELDS.map((field) => message[field]).filter((v): v is string => typeof v === "string" && v !== "");
  return wallets.length > 0 ? wallets : null;
}
