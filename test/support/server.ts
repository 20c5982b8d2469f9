import { createClient, type Client, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import type { DescService } from "@bufbuild/protobuf";
import { createManualClock } from "@holdfast/common/ids";
import { createApiKey, createTenant } from "@holdfast/ledger/auth/api-keys";
import { startLedgerApp } from "@holdfast/ledger/app";
import { loadLedgerConfig } from "@holdfast/ledger/config";
import { createTestDatabase } from "./db.js";
import { quietLogger } from "./ledger.js";

export type Protocol = "connect" | "connect-json" | "grpc" | "grpc-web";
export const protocols: Protocol[] = ["connect", "connect-json", "grpc", "grpc-web"];

/**
 * A real ledger server on port 0 over a fresh database, with a manual clock, one tenant and a
 * key of every role, for tests that go through the wire.
 */
export async function startTestServer(env: Record<string, string> = {}) {
  const db = await createTestDatabase();
  const config = loadLedgerConfig({ DATABASE_URL: db.url, HOLDFAST_PORT: "0", HOLDFAST_HOST: "127.0.0.1", HOLDFAST_AUTH_CACHE_MS: "0", ...env });
  const clock = createManualClock(new Date("2026-01-01T00:00:00Z"));
  // The outbox relay runs only for tests that bring their own NATS server (NATS_URL in env).
  const app = await startLedgerApp({ config, logger: quietLogger, clock, migrate: false, relay: env["NATS_URL"] !== undefined });
  const { tenantId } = await createTenant(app.pool, `tenant-${db.url.slice(-8)}`);
  const issue = async (role: "admin" | "writer" | "reader", walletId?: string) =>
    (await createApiKey(app.pool, { tenantId, name: `${role} key`, role, walletId })).secret;
  const keys = { admin: await issue("admin"), writer: await issue("writer"), reader: await issue("reader") };

  function transport(protocol: Protocol, apiKey: string | null): Transport {
    const interceptors = [
      (next: Parameters<import("@connectrpc/connect").Interceptor>[0]) => async (req: Parameters<typeof next>[0]) => {
        if (apiKey !== null) req.header.set("authorization", `Bearer ${apiKey}`);
        return next(req);
      },
    ];
    switch (protocol) {
      case "connect":
        return createConnectTransport({ baseUrl: app.url, httpVersion: "2", useBinaryFormat: true, interceptors });
      case "connect-json":
        return createConnectTransport({ baseUrl: app.url, httpVersion: "1.1", useBinaryFormat: false, interceptors });
      case "grpc":
        return createGrpcTransport({ baseUrl: app.url, interceptors });
      case "grpc-web":
        return createGrpcWebTransport({ baseUrl: app.url, httpVersion: "1.1", interceptors });
    }
  }

  return {
    app,
    db,
    clock,
    tenantId,
    keys,
    issue,
    transport,
    client<S extends DescService>(service: S, protocol: Protocol = "connect", apiKey: string | null = keys.admin): Client<S> {
      return createClient(service, transport(protocol, apiKey));
    },
    async close() {
      await app.stop();
      await db.drop();
    },
  };
}
