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

/** The ledger's reads, by name: everything else it does may commit events. */
const READ_METHOD = /^(get|list)[A-Z]/;

/**
 * The ledger with every write followed by `onCommit(wallets)` once it has resolved (committed),
 * wallets as for commitWakeInterceptor, read from the command's input. It wakes for writes made
 * in-process without an RPC too (the console's and tests' direct calls), which the interceptor
 * alone would miss; an RPC write wakes through both, and the wakes coalesce.
 */
export function wakeAfterWrites<L extends object>(ledger: L, onCommit: (wallets: readonly string[] | null) => void): L {
  const wrapped: Record<string, unknown> = {};
  for (const [name, value] of Object.entries(ledger)) {
    if (typeof value !== "function" || READ_METHOD.test(name)) {
      wrapped[name] = value;
      continue;
    }
    const method = value as (...args: unknown[]) => unknown;
    wrapped[name] = (...args: unknown[]) => {
      const result = method(...args);
      if (result instanceof Promise) {
        const input = args[1];
        return result.then((value: unknown) => {
          onCommit(typeof input === "object" && input !== null ? walletsOf(input as Record<string, unknown>) : null);
          return value;
        });
      }
      return result;
    };
  }
  return wrapped as L;
}
