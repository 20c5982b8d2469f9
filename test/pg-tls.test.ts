// Goal: every Holdfast process can reach PostgreSQL over TLS by DATABASE_URL alone (issue 12,
// finding 4): the URL's `sslmode`, `sslrootcert`, `sslcert` and `sslkey` parameters reach
// node-postgres through our pool factory (packages/common/src/pg.ts) and are not dropped, so
// the connection is encrypted, the server verified against the given CA, and the client
// certificate shown (docs/security.md, "TLS and mTLS").
// Method: a throwaway CA made with openssl at test time (test/support/pki.ts) and a temporary
// embedded PostgreSQL of the test's own with ssl on, serving the CA's server certificate and
// asking clients for certificates it signs (ssl_ca_file); connections through createPool, each
// asking the server about itself in pg_stat_ssl. When the server on 127.0.0.1:5432 has ssl on
// too, `sslmode=require` is checked there as well (Debian's default snakeoil certificate).
import { chownSync, copyFileSync, chmodSync, rmSync, statSync } from "node:fs";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createPool } from "@holdfast/common/pg";
import { isEmbeddedPostgresAvailable, type EmbeddedPostgres } from "@holdfast/dev-servers/embedded-postgres";
import { startTemporaryPostgres } from "@holdfast/dev-servers/temporary-postgres";
import { quietLogger } from "./support/ledger.js";
import { createPki, type Pki } from "./support/pki.js";

const LOCAL_URL = "postgres://postgres@127.0.0.1:5432/postgres";
const SSL_ON_TIMEOUT_MS = 10_000;

let pki: Pki;
let server: EmbeddedPostgres | null = null;
const embedded = await isEmbeddedPostgresAvailable();
const localSsl = await serverSsl(LOCAL_URL);

beforeAll(async () => {
  pki = createPki();
  if (embedded) server = await startTlsPostgres(pki);
}, 120_000);
afterAll(async () => {
  await server?.stop();
  if (pki) rmSync(pki.dir, { recursive: true, force: true });
});

/** `show ssl` of a server; false when it does not answer. */
async function serverSsl(url: string): Promise<boolean> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 3000 });
  try {
    await client.connect();
    return (await client.query<{ ssl: string }>("show ssl")).rows[0]?.ssl === "on";
  } catch {
    return false;
  } finally {
    await client.end().catch(() => undefined);
  }
}

/**
 * A temporary PostgreSQL serving the test PKI's server certificate, and asking clients for a
 * certificate signed by its CA (optional unless pg_hba says `cert`; here it is not required).
 */
async function startTlsPostgres(files: Pki): Promise<EmbeddedPostgres> {
  const pgServer = await startTemporaryPostgres();
  // The server reads its files as its own user, and refuses a key others can read.
  const { uid, gid } = statSync(pgServer.dataDir);
  for (const [from, to] of [[files.serverCert, "server.pem"], [files.serverKey, "server.key"], [files.caFile, "ca.pem"]] as const) {
    const target = path.join(pgServer.dataDir, to);
    copyFileSync(from, target);
    chownSync(target, uid, gid);
    chmodSync(target, 0o600);
  }
  const admin = new pg.Client({ connectionString: pgServer.adminUrl });
  await admin.connect();
  try {
    for (const [name, value] of [["ssl_cert_file", "server.pem"], ["ssl_key_file", "server.key"], ["ssl_ca_file", "ca.pem"], ["ssl", "on"]]) {
      await admin.query(`alter system set ${name} = '${value}'`);
    }
    await admin.query("select pg_reload_conf()");
  } finally {
    await admin.end();
  }
  const deadline = Date.now() + SSL_ON_TIMEOUT_MS;
  while (!(await serverSsl(pgServer.adminUrl))) {
    if (Date.now() > deadline) throw new Error(`the temporary PostgreSQL did not turn ssl on; see ${pgServer.logFile}`);
    await sleep(100);
  }
  return pgServer;
}

/** What pg_stat_ssl says about a connection made by createPool from `url`. */
async function sslOf(url: string): Promise<{ ssl: boolean; client_dn: string | null }> {
  const pool = createPool({ databaseUrl: url, pgPoolMax: 1, pgConnectTimeoutMs: 5000, pgStatementTimeoutMs: 5000 }, quietLogger);
  try {
    const { rows } = await pool.query<{ ssl: boolean; client_dn: string | null }>(
      "select ssl, client_dn from pg_stat_ssl where pid = pg_backend_pid()",
    );
    return rows[0] ?? { ssl: false, client_dn: null };
  } finally {
    await pool.end();
  }
}

/** The temporary server's URL with `params` in its query string (file paths encoded). */
function urlWith(params: Record<string, string>): string {
  const url = new URL(server!.adminUrl);
  for (const [name, value] of Object.entries(params)) url.searchParams.set(name, value);
  return url.toString();
}

describe.skipIf(!embedded)("DATABASE_URL's TLS parameters through createPool (a temporary PostgreSQL with ssl on)", () => {
  it("sslmode=verify-full with sslrootcert encrypts and verifies the server; without sslmode the connection is cleartext", async () => {
    expect(await sslOf(urlWith({ sslmode: "verify-full", sslrootcert: pki.caFile }))).toEqual({ ssl: true, client_dn: null });
    expect((await sslOf(urlWith({}))).ssl).toBe(false);
  });

  it("refuses a server whose certificate the given CA did not sign (no sslrootcert: the system's CAs)", async () => {
    await expect(sslOf(urlWith({ sslmode: "verify-full" }))).rejects.toThrow(/certificate/i);
  });

  it("sslcert and sslkey show the client certificate to the server", async () => {
    const result = await sslOf(urlWith({ sslmode: "verify-full", sslrootcert: pki.caFile, sslcert: pki.clientCert, sslkey: pki.clientKey }));
    expect(result).toEqual({ ssl: true, client_dn: "/CN=holdfast-worker" });
  });

  it("uselibpqcompat=true&sslmode=require encrypts without verifying the server, as libpq's require does", async () => {
    expect((await sslOf(urlWith({ uselibpqcompat: "true", sslmode: "require" }))).ssl).toBe(true);
  });
});

describe("the local PostgreSQL (127.0.0.1:5432)", () => {
  it.skipIf(!localSsl)("with ssl on, sslmode=require (libpq's meaning) connects over TLS", async () => {
    expect((await sslOf(`${LOCAL_URL}?uselibpqcompat=true&sslmode=require`)).ssl).toBe(true);
  });
  if (!localSsl) {
    it("has ssl off (show ssl), so its own check above is skipped; the temporary server covers TLS", () => {
      expect(localSsl).toBe(false);
    });
  }
});
