// A throwaway PKI for the TLS tests: a CA, a server certificate for localhost and 127.0.0.1,
// and a client certificate, made with `openssl` at test time in a temporary folder (no private
// key is committed). test/tls.test.ts serves the ledger's port with it, test/nats-tls.test.ts
// a nats-server and test/pg-tls.test.ts a PostgreSQL.
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";

/** The files of the throwaway PKI, and the PEM text of what clients need. */
export interface Pki {
  readonly dir: string;
  /** The CA certificate's file, and its PEM text. */
  readonly caFile: string;
  readonly caPem: Buffer;
  readonly serverCert: string;
  readonly serverKey: string;
  /** The client certificate (CN holdfast-worker) and its key: files, and their PEM text. */
  readonly clientCert: string;
  readonly clientKey: string;
  readonly clientCertPem: Buffer;
  readonly clientKeyPem: Buffer;
  /** Writes a new server certificate (same key type, new serial, subject CN `cn`) over the served files. */
  renewServer(cn: string): void;
}

function openssl(dir: string, ...args: string[]): void {
  execFileSync("openssl", args, { cwd: dir, stdio: "pipe" });
}

/** A CA, a server certificate for localhost and 127.0.0.1, and a client certificate; remove `dir` when done. */
export function createPki(): Pki {
  const dir = mkdtempSync(path.join(tmpdir(), "holdfast-tls-"));
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
  openssl(dir, "req", "-x509", ...ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=holdfast test CA",
    "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign");
  writeFileSync(path.join(dir, "server.ext"), "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n");
  writeFileSync(path.join(dir, "client.ext"), "extendedKeyUsage=clientAuth\n");
  const issue = (name: string, cn: string, ext: string, outPrefix = name) => {
    openssl(dir, "req", ...ec, "-keyout", `${outPrefix}.key`, "-out", `${name}.csr`, "-subj", `/CN=${cn}`);
    openssl(dir, "x509", "-req", "-in", `${name}.csr`, "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
      "-out", `${outPrefix}.pem`, "-days", "2", "-extfile", ext);
  };
  issue("server", "holdfast-server-1", "server.ext");
  issue("client", "holdfast-worker", "client.ext");
  const read = (file: string) => readFileSync(path.join(dir, file));
  return {
    dir,
    caFile: path.join(dir, "ca.pem"),
    caPem: read("ca.pem"),
    serverCert: path.join(dir, "server.pem"),
    serverKey: path.join(dir, "server.key"),
    clientCert: path.join(dir, "client.pem"),
    clientKey: path.join(dir, "client.key"),
    clientCertPem: read("client.pem"),
    clientKeyPem: read("client.key"),
    renewServer: (cn) => issue("server", cn, "server.ext"),
  };
}
