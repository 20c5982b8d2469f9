// Goal: every Holdfast NATS client can reach NATS over TLS (issue 12, finding 4): the
// HOLDFAST_NATS_TLS_* variables are read once in the shared config and applied by connectNats,
// which the ledger's outbox relay and the workers use, and by `holdfast events tail`. With the CA
// the connection succeeds; without it, or without a client certificate when the server verifies
// clients, it is refused; a TLS setting never falls back to cleartext; a missing file is named
// by its variable.
// Method: a throwaway CA made with openssl at test time (test/support/pki.ts); nats-servers of
// the test's own on free loopback ports, one with TLS, one with TLS that verifies clients (mTLS)
// and one without TLS; connectNats against each. Last, the ledger configured from the variables
// alone publishes a deposit's event to the mTLS server, and events tail reads it back there.
import { rmSync } from "node:fs";
import path from "node:path";
import { jetstream } from "@nats-io/jetstream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { readNatsTlsConfig, type NatsTlsConfig } from "@holdfast/common/config";
import { connectNats } from "@holdfast/common/nats";
import { tailEvents } from "@holdfast/cli/events-tail";
import { key, quietLogger } from "./support/ledger.js";
import { startNatsServer } from "./support/nats.js";
import { createPki, type Pki } from "./support/pki.js";
import { startTestServer } from "./support/server.js";

type NatsServer = Awaited<ReturnType<typeof startNatsServer>>;

let pki: Pki;
let tlsServer: NatsServer;
let mtlsServer: NatsServer;
let plainServer: NatsServer;

beforeAll(async () => {
  pki = createPki();
  const tlsArgs = ["--tls", "--tlscert", pki.serverCert, "--tlskey", pki.serverKey];
  [tlsServer, mtlsServer, plainServer] = await Promise.all([
    startNatsServer({ args: tlsArgs }),
    startNatsServer({ args: [...tlsArgs, "--tlsverify", "--tlscacert", pki.caFile] }),
    startNatsServer(),
  ]);
});
afterAll(async () => {
  await Promise.all([tlsServer?.close(), mtlsServer?.close(), plainServer?.close()]);
  if (pki) rmSync(pki.dir, { recursive: true, force: true });
});

const caOnly = (): NatsTlsConfig => ({ caFile: pki.caFile, certFile: null, keyFile: null });
const withClientCert = (): NatsTlsConfig => ({ caFile: pki.caFile, certFile: pki.clientCert, keyFile: pki.clientKey });

/** Connects, makes a round trip, closes, and returns whether the server required TLS. */
async function roundTrip(url: string, tls: NatsTlsConfig | null): Promise<boolean> {
  const nc = await connectNats(url, "nats-tls-test", quietLogger, tls);
  try {
    await nc.flush();
    return nc.info?.tls_required === true;
  } finally {
    await nc.close();
  }
}

describe("HOLDFAST_NATS_TLS_* in the shared config", () => {
  it("is null when unset, takes a CA alone, and refuses a certificate without its key or a key without its certificate", () => {
    expect(readNatsTlsConfig({})).toBeNull();
    expect(readNatsTlsConfig({ HOLDFAST_NATS_TLS_CA_FILE: "/etc/ca.pem" })).toEqual({ caFile: "/etc/ca.pem", certFile: null, keyFile: null });
    expect(() => readNatsTlsConfig({ HOLDFAST_NATS_TLS_CERT_FILE: "/etc/c.pem" })).toThrow(/^HOLDFAST_NATS_TLS_KEY_FILE must be set too/);
    expect(() => readNatsTlsConfig({ HOLDFAST_NATS_TLS_KEY_FILE: "/etc/k.pem" })).toThrow(/^HOLDFAST_NATS_TLS_CERT_FILE must be set too/);
    expect(readNatsTlsConfig({ HOLDFAST_NATS_TLS_CERT_FILE: "/c.pem", HOLDFAST_NATS_TLS_KEY_FILE: "/k.pem" })).toEqual({ caFile: null, certFile: "/c.pem", keyFile: "/k.pem" });
  });
});

describe("connectNats over TLS", () => {
  it("connects to a TLS server with its CA, and is refused without it", async () => {
    expect(await roundTrip(tlsServer.url, caOnly())).toBe(true);
    // Without the test CA the server's certificate is checked against the system's CAs, which
    // do not know it.
    await expect(connectNats(tlsServer.url, "nats-tls-test", quietLogger)).rejects.toThrow();
  });

  it("shows the client certificate to a server that verifies clients, and is refused without one", async () => {
    expect(await roundTrip(mtlsServer.url, withClientCert())).toBe(true);
    await expect(connectNats(mtlsServer.url, "nats-tls-test", quietLogger, caOnly())).rejects.toThrow();
  });

  it("never falls back to cleartext: a server without TLS is refused when TLS is configured", async () => {
    expect(await roundTrip(plainServer.url, null)).toBe(false);
    await expect(connectNats(plainServer.url, "nats-tls-test", quietLogger, caOnly())).rejects.toThrow(/tls/i);
  });

  it("names the variable whose file is missing", async () => {
    const missing = path.join(pki.dir, "no-such.pem");
    await expect(connectNats(tlsServer.url, "nats-tls-test", quietLogger, { ...caOnly(), caFile: missing }))
      .rejects.toThrow(/^HOLDFAST_NATS_TLS_CA_FILE names a file that cannot be read \(ENOENT/);
    await expect(connectNats(mtlsServer.url, "nats-tls-test", quietLogger, { ...withClientCert(), keyFile: missing }))
      .rejects.toThrow(/^HOLDFAST_NATS_TLS_KEY_FILE names a file that cannot be read/);
  });
});

describe("the ledger and events tail over mTLS, configured from the variables", () => {
  it("the relay publishes a deposit's event to the mTLS server and events tail reads it there", async () => {
    const env = {
      NATS_URL: mtlsServer.url,
      HOLDFAST_NATS_TLS_CA_FILE: pki.caFile,
      HOLDFAST_NATS_TLS_CERT_FILE: pki.clientCert,
      HOLDFAST_NATS_TLS_KEY_FILE: pki.clientKey,
    };
    const s = await startTestServer(env);
    try {
      const walletId = `w-${key()}`;
      await s.app.ledger.deposit({ tenantId: s.tenantId, scopeWalletId: null }, { walletId, asset: "USD", amount: 500n, idempotencyKey: key(), metadata: {} });
      const lines: string[] = [];
      const seen = await tailEvents(
        { natsUrl: mtlsServer.url, natsTls: readNatsTlsConfig(env), stream: "HOLDFAST_EVENTS", wallet: walletId, json: true, fromStart: true, limit: 1 },
        { out: (line) => lines.push(line) },
      );
      expect(seen).toBe(1);
      const event = JSON.parse(lines[0] ?? "{}") as { type?: string; walletId?: string };
      expect(event).toMatchObject({ type: "holdfast.deposit.completed", walletId });
      // And the stream is reachable only with the client certificate.
      const nc = await connectNats(mtlsServer.url, "nats-tls-test", quietLogger, withClientCert());
      try {
        expect((await jetstream(nc).streams.get("HOLDFAST_EVENTS")).name).toBe("HOLDFAST_EVENTS");
      } finally {
        await nc.close();
      }
    } finally {
      await s.close();
    }
  });
});
