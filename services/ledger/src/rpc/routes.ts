import type { ConnectRouter, Interceptor } from "@connectrpc/connect";
import type pg from "pg";
import type { Clock } from "@holdfast/common/ids";
import type { Logger } from "pino";
import { toConnectError } from "@holdfast/common/errors";
import { registerHealth } from "@holdfast/common/health";
import { AdminService } from "@holdfast/gen/holdfast/v1/admin_pb";
import { LedgerService } from "@holdfast/gen/holdfast/v1/ledger_pb";
import type { Ledger } from "../domain/ledger.js";
import type { WalletFeed } from "../watch.js";
import { adminService } from "./admin-service.js";
import { createAuthInterceptor, type AuthOptions, type KeyVerifier } from "./auth.js";
import { ledgerService } from "./ledger-service.js";
import { RateCardService, rateCardService } from "./rate-card-service.js";
import { WebhookService, webhookService, type WebhookServiceSettings } from "./webhook-service.js";

export interface RouteDeps {
  ledger: Ledger;
  pool: pg.Pool;
  feed: WalletFeed;
  defaultHoldTtlSeconds: number;
  webhooks: WebhookServiceSettings;
  isServing: () => boolean;
  /** The ledger's clock, for what rate cards call now; the system clock when absent. */
  clock?: Clock;
}

/** Every RPC the ledger process serves, registered in one place. */
export function createRoutes(deps: RouteDeps): (router: ConnectRouter) => void {
  return (router) => {
    router.service(LedgerService, ledgerService(deps));
    router.service(AdminService, adminService(deps));
    router.service(WebhookService, webhookService(deps));
    router.service(RateCardService, rateCardService(deps));
    registerHealth(router, { isServing: deps.isServing, services: [LedgerService.typeName, AdminService.typeName, WebhookService.typeName, RateCardService.typeName] });
  };
}

/**
 * The interceptors every route runs behind, outermost first: error mapping, then
 * authentication (with authorization and rate limits), whose refusals the error mapping
 * answers like any other error.
 */
export function createInterceptors(verifier: KeyVerifier, logger: Logger, auth: AuthOptions = {}): Interceptor[] {
  return [createErrorInterceptor(logger), createAuthInterceptor(verifier, auth)];
}

/**
 * Where every error of every service becomes its answer: whatever a handler (or an inner
 * interceptor) throws, including while a stream is running, goes through toConnectError, so
 * refusals and domain errors get their code and ErrorDetail and no SQL text or stack reaches a
 * caller.
 */
export function createErrorInterceptor(logger: Logger): Interceptor {
  return (next) => async (req) => {
    try {
      const res = await next(req);
      if (!res.stream) {
        return res;
      }
      return { ...res, message: mapStreamErrors(res.message, logger) };
    } catch (err) {
      throw toConnectError(err, logger);
    }
  };
}

async function* mapStreamErrors<T>(messages: AsyncIterable<T>, logger: Logger): AsyncIterable<T> {
  try {
    yield* messages;
  } catch (err) {
    throw toConnectError(err, logger);
  }
}
