/**
 * The standard gRPC health service (`grpc.health.v1.Health`), so Kubernetes probes, load
 * balancers and grpc-health-probe can ask a Holdfast process whether it serves.
 *
 * @module
 */
import { setTimeout as sleep } from "node:timers/promises";

import { Code, ConnectError } from "@connectrpc/connect";
import type { ConnectRouter, HandlerContext } from "@connectrpc/connect";

import {
  Health,
  HealthCheckResponse_ServingStatus as ServingStatus,
} from "@holdfast/gen/grpc/health/v1/health_pb";
import type { HealthCheckRequest } from "@holdfast/gen/grpc/health/v1/health_pb";
import { ledgerError } from "./errors.js";

/** What the health service reports on. */
export interface HealthOptions {
  /** Whether the process serves now; called on every Check and every Watch poll. */
  readonly isServing: () => boolean;
  /** Fully qualified service names the process serves, e.g. `holdfast.v1.LedgerService`. */
  readonly services: readonly string[];
}

/**
 * The health service's name. The server keeps its calls outside the command budget and caps
 * its Watch streams apart (call-admission.ts), because they need no key.
 */
export const HEALTH_SERVICE_NAME = Health.typeName;

/**
 * How often Watch re-reads `isServing`. Polling keeps `isServing` a plain function that
 * callers can compute from anything; half a second is well under any probe period.
 */
export const WATCH_POLL_MS = 500;

/**
 * Registers `grpc.health.v1.Health` on the router. Every known service shares the process's
 * status, because they share one database and one drain. The empty name means the server as
 * a whole.
 */
export function registerHealth(router: ConnectRouter, options: HealthOptions): void {
  const known = new Set(["", ...options.services]);
  const currentStatus = (): ServingStatus =>
    options.isServing() ? ServingStatus.SERVING : ServingStatus.NOT_SERVING;
  router.service(Health, {
    check(request: HealthCheckRequest) {
      if (!known.has(request.service)) {
        throw ledgerError(Code.NotFound, "SERVICE_NOT_FOUND", `unknown service "${request.service}"`);
      }
      return { status: currentStatus() };
    },
    watch(request: HealthCheckRequest, context: HandlerContext) {
      // The health protocol answers Watch for an unknown service with SERVICE_UNKNOWN and
      // keeps the stream open rather than failing it, so a watcher started before a service is
      // registered does not have to retry.
      const status = known.has(request.service) ? currentStatus : () => ServingStatus.SERVICE_UNKNOWN;
      return watchStatus(status, context.signal);
    },
  });
}

/** Yields the status now and again whenever it changes, until the signal aborts. */
async function* watchStatus(
  status: () => ServingStatus,
  signal: AbortSignal,
): AsyncGenerator<{ status: ServingStatus }> {
  let last: ServingStatus | undefined;
  while (!signal.aborted) {
    const now = status();
    if (now !== last) {
      last = now;
      yield { status: now };
    }
    await sleep(WATCH_POLL_MS, undefined, { signal }).catch(() => undefined);
  }
  // The signal also aborts on a deadline or a server drain; ending with its reason tells the
  // client why, so it can reconnect elsewhere. A client cancel has no one left to tell.
  throw ConnectError.from(signal.reason, Code.Canceled);
}
