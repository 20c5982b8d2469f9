// Goal: TLS on the server's one port (issue 12, finding 4). With a certificate and key the
// port speaks TLS, and ALPN picks HTTP/2 or HTTP/1.1, so gRPC, Connect and gRPC-Web all work
// over it; with a client CA every client must show a certificate it signed (mTLS); a renewed
// certificate is served to new connections after reloadTls(), SIGHUP or a change of the files,
// and files that do not load leave the current certificate in place.
// Method: a throwaway CA, server and client certificates made with `openssl` at test time in
// a temporary folder (no private key is committed); createServer on port 0 with the health
// service and a stub LedgerService, called by @grpc/grpc-js with the test CA, connect-es over
// HTTP/2 and HTTP/1.1, and node:https; the served certificate is read with tls.connect. Last,
// the ledger app configured from HOLDFAST_TLS_* variables.
import { readFileSync, rmSync, writeFileSync } from "node:fs";
import https from "node:https";
import path from "node:path";
import tls from "node:tls";
import { setTimeout as sleep } from "node:timers/promises";
import * as grpc from "@grpc/grpc-js";
import { create, fromBinary, toBinary, type DescMessage, type DescMethod, type MessageInitShape, type MessageShape } from "@bufbuild/protobuf";
import { createClient, type ConnectRouter } from "@connectrpc/connect";
import { createConnectTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { Health, HealthCheckResponse_ServingStatus } from "@holdfast/gen/grpc/health/v1/health_pb";
import { LedgerService } from "@holdfast/gen/holdfast/v1/ledger_pb";
import { registerHealth } from "@holdfast/common/health";
import { createServer, type Server, type TlsOptions } from "@holdfast/common/server";
import { quietLogger } from "./support/ledger.js";
import { createPki, type Pki } from "./support/pki.js";
import { startTestServer } from "./support/server.js";

const CALL_DEADLINE_MS = 10_000;

let pki: Pki;
let server: Server | null = null;
const cleanups: (() => unknown)[] = [];

beforeAll(() => {
  pki = createPki();
});
afterAll(() => {
  rmSync(pki.dir, { recursive: true, force: true });
});
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) {
    await cleanup();
  }
  await server?.drain();
  server = null;
});

async function start(tlsOptions: Partial<TlsOptions> = {}) {
  const routes = (router: ConnectRouter) => {
    registerHealth(router, { isServing: () => true, services: [LedgerService.typeName] });
    router.service(LedgerService, { getWallet: () => ({ wallet: { walletId: "w" } }) });
  };
  server = createServer({
    routes,
    host: "127.0.0.1",
    port: 0,
    corsOrigins: [],
    readMaxBytes: 1024 * 1024,
    maxTimeoutMs: 30_000,
    defaultTimeoutMs: 10_000,
    maxInFlight: 100,
    logger: quietLogger,
    readiness: async () => ({ ready: true, detail: { database: "ok" } }),
    drainTimeoutMs: 2000,
    tls: { certFile: pki.serverCert, keyFile: pki.serverKey, watchIntervalMs: 0, reloadSignal: null, ...tlsOptions },
  });
  const address = await server.listen();
  return { port: address.port, url: `https://localhost:${address.port}` };
}

/** The grpc-js service definition of a protobuf-es service: paths and protobuf-es codecs. */
function definitionOf(methods: readonly DescMethod[], typeName: string): grpc.ServiceDefinition {
  const codec = (schema: DescMessage) => ({
    serialize: (message: unknown) => Buffer.from(toBinary(schema, message as MessageShape<DescMessage>)),
    deserialize: (bytes: Buffer) => fromBinary(schema, bytes),
  });
  return Object.fromEntries(
    methods.map((method) => [
      method.name,
      {
        path: `/${typeName}/${method.name}`,
        requestStream: false,
        responseStream: false,
        requestSerialize: codec(method.input).serialize,
        requestDeserialize: codec(method.input).deserialize,
        responseSerialize: codec(method.output).serialize,
        responseDeserialize: codec(method.output).deserialize,
      },
    ]),
  );
}

/** One unary grpc-js call over a TLS channel; resolves with the response or the status error. */
function grpcUnary<M extends DescMethod & { methodKind: "unary" }>(
  port: number,
  typeName: string,
  method: M,
  request: MessageInitShape<M["input"]>,
  credentials: grpc.ChannelCredentials,
  metadata = new grpc.Metadata(),
): Promise<{ ok: true; response: MessageShape<M["output"]> } | { ok: false; code: grpc.status }> {
  const Constructor = grpc.makeGenericClientConstructor(definitionOf([method], typeName), typeName);
  const client = new Constructor(`localhost:${port}`, credentials);
  const call = (client as unknown as Record<string, grpc.requestCallback<unknown> & ((...args: unknown[]) => void)>)[method.name]!;
  return new Promise((resolve) => {
    call.call(client, create(method.input, request), metadata, { deadline: Date.now() + CALL_DEADLINE_MS }, (err: grpc.ServiceError | null, response: unknown) => {
      client.close();
      resolve(err ? { ok: false, code: err.code } : { ok: true, response: response as MessageShape<M["output"]> });
    });
  });
}

/** POSTs Connect JSON over HTTPS (HTTP/1.1); resolves with status, ALPN and body, or the error. */
function httpsJson(
  port: number,
  urlPath: string,
  body: object,
  options: https.RequestOptions & tls.ConnectionOptions = {},
  header: Record<string, string> = {},
) {
  return new Promise<{ status: number; alpn: string | false | null; body: unknown } | { error: Error }>((resolve) => {
    const text = JSON.stringify(body);
    const req = https.request({
      host: "localhost",
      port,
      path: urlPath,
      method: "POST",
      ca: pki.caPem,
      agent: false,
      headers: { "content-type": "application/json", "content-length": String(Buffer.byteLength(text)), ...header },
      ...options,
    });
    req.on("response", (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (chunk: Buffer) => chunks.push(chunk));
      res.on("end", () => {
        const alpn = (res.socket as tls.TLSSocket | null)?.alpnProtocol ?? null;
        resolve({ status: res.statusCode ?? 0, alpn, body: JSON.parse(Buffer.concat(chunks).toString("utf8")) });
      });
    });
    req.on("error", (error) => resolve({ error }));
    req.end(text);
  });
}

/** The subject CN of the certificate a new connection is served. */
async function servedCommonName(port: number): Promise<string> {
  const socket = tls.connect({ host: "127.0.0.1", port, servername: "localhost", ca: pki.caPem, ALPNProtocols: ["h2"] });
  try {
    await new Promise<void>((resolve, reject) => {
      socket.once("secureConnect", resolve);
      socket.once("error", reject);
    });
    return String(socket.getPeerCertificate().subject.CN);
  } finally {
    socket.destroy();
  }
}

const checkMethod = Health.method.check;
const grpcTls = () => grpc.credentials.createSsl(pki.caPem);

describe("TLS on the one port", () => {
  it("serves gRPC (grpc-js with the test CA), Connect over HTTP/2 and HTTP/1.1, and gRPC-Web, by ALPN", async () => {
    const { port, url } = await start();
    const grpcAnswer = await grpcUnary(port, Health.typeName, checkMethod, {}, grpcTls());
    expect(grpcAnswer.ok && grpcAnswer.response.status).toBe(HealthCheckResponse_ServingStatus.SERVING);
    const json = await httpsJson(port, "/grpc.health.v1.Health/Check", {}, { ALPNProtocols: ["http/1.1"] });
    expect(json).toEqual({ status: 200, alpn: "http/1.1", body: { status: "SERVING" } });
    // A client that offers no protocol gets HTTP/1.1.
    const plain = await httpsJson(port, "/grpc.health.v1.Health/Check", {});
    expect(plain).toEqual({ status: 200, alpn: false, body: { status: "SERVING" } });
    const transports = [
      createConnectTransport({ baseUrl: url, httpVersion: "2", nodeOptions: { ca: pki.caPem } }),
      createConnectTransport({ baseUrl: url, httpVersion: "1.1", nodeOptions: { ca: pki.caPem } }),
      createGrpcWebTransport({ baseUrl: url, httpVersion: "1.1", nodeOptions: { ca: pki.caPem } }),
    ];
    for (const transport of transports) {
      const wallet = await createClient(LedgerService, transport).getWallet({ walletId: "w" });
      expect(wallet.wallet?.walletId).toBe("w");
    }
  });

  it("does not speak cleartext on a TLS port", async () => {
    const { port } = await start();
    const answer = await fetch(`http://127.0.0.1:${port}/healthz`).then((res) => res.status, () => "refused");
    expect(answer).toBe("refused");
  });

  it("with a client CA, refuses clients without a certificate and serves those with one", async () => {
    const { port } = await start({ clientCaFile: path.join(pki.dir, "ca.pem") });
    const withoutGrpc = await grpcUnary(port, Health.typeName, checkMethod, {}, grpcTls());
    expect(withoutGrpc).toEqual({ ok: false, code: grpc.status.UNAVAILABLE });
    const withoutHttps = await httpsJson(port, "/grpc.health.v1.Health/Check", {});
    expect("error" in withoutHttps).toBe(true);
    const credentials = grpc.credentials.createSsl(pki.caPem, pki.clientKeyPem, pki.clientCertPem);
    const withGrpc = await grpcUnary(port, Health.typeName, checkMethod, {}, credentials);
    expect(withGrpc.ok && withGrpc.response.status).toBe(HealthCheckResponse_ServingStatus.SERVING);
    const withHttps = await httpsJson(port, "/grpc.health.v1.Health/Check", {}, { cert: pki.clientCertPem, key: pki.clientKeyPem });
    expect(withHttps).toMatchObject({ status: 200, body: { status: "SERVING" } });
  });
});

describe("certificate reload", () => {
  it("serves a renewed certificate to new connections after reloadTls()", async () => {
    const { port } = await start();
    expect(await servedCommonName(port)).toBe("holdfast-server-1");
    pki.renewServer("holdfast-server-2");
    expect(await servedCommonName(port)).toBe("holdfast-server-1");
    await server!.reloadTls();
    expect(await servedCommonName(port)).toBe("holdfast-server-2");
  });

  it("reloads on SIGHUP", async () => {
    const { port } = await start({ reloadSignal: "SIGHUP" });
    const before = await servedCommonName(port);
    pki.renewServer("holdfast-server-sighup");
    process.kill(process.pid, "SIGHUP");
    expect(await eventually(() => servedCommonName(port), "holdfast-server-sighup")).toBe("holdfast-server-sighup");
    expect(before).not.toBe("holdfast-server-sighup");
  });

  it("reloads when the files change", async () => {
    const { port } = await start({ watchIntervalMs: 100 });
    pki.renewServer("holdfast-server-watched");
    expect(await eventually(() => servedCommonName(port), "holdfast-server-watched")).toBe("holdfast-server-watched");
  });

  it("keeps the current certificate when the new files do not load", async () => {
    const { port } = await start();
    pki.renewServer("holdfast-server-good");
    await server!.reloadTls();
    const key = readFileSync(pki.serverKey);
    writeFileSync(pki.serverKey, "not a key");
    cleanups.push(() => writeFileSync(pki.serverKey, key));
    await expect(server!.reloadTls()).rejects.toThrow();
    expect(await servedCommonName(port)).toBe("holdfast-server-good");
  });
});

describe("the ledger app over TLS", () => {
  it("reads HOLDFAST_TLS_* and serves keyed gRPC calls and Connect JSON over TLS", async () => {
    const s = await startTestServer({
      HOLDFAST_TLS_CERT_FILE: pki.serverCert,
      HOLDFAST_TLS_KEY_FILE: pki.serverKey,
      HOLDFAST_TLS_WATCH_INTERVAL_MS: "0",
    });
    cleanups.push(() => s.close());
    expect(s.app.url.startsWith("https://")).toBe(true);
    const port = s.app.address.port;
    const deposit = await httpsJson(
      port,
      "/holdfast.v1.LedgerService/Deposit",
      { walletId: "alice", asset: "USD", amount: "100", idempotencyKey: "d-1" },
      {},
      { authorization: `Bearer ${s.keys.writer}` },
    );
    expect(deposit).toMatchObject({ status: 200 });
    const metadata = new grpc.Metadata();
    metadata.set("authorization", `Bearer ${s.keys.reader}`);
    const wallet = await grpcUnary(port, LedgerService.typeName, LedgerService.method.getWallet, { walletId: "alice" }, grpcTls(), metadata);
    expect(wallet.ok && wallet.response.wallet?.walletId).toBe("alice");
    const anonymous = await grpcUnary(port, LedgerService.typeName, LedgerService.method.getWallet, { walletId: "alice" }, grpcTls());
    expect(anonymous).toEqual({ ok: false, code: grpc.status.UNAUTHENTICATED });
  });
});

/** Polls until `read` returns `expected` or five seconds pass; returns the last value read. */
async function eventually(read: () => Promise<string>, expected: string): Promise<string> {
  const deadlineMs = Date.now() + 5000;
  let value = await read();
  while (value !== expected && Date.now() < deadlineMs) {
    await sleep(100);
    value = await read();
  }
  return value;
}
