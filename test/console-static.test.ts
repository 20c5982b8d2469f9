// Goal: the ledger serves the console's static files as docs/console.md says: `GET /` redirects to
// /console/, the page and hashed assets come with their content types and cache headers, only
// GET and HEAD are answered, nothing outside the build directory can be read (`..`, encoded
// slashes and dots, backslashes, NUL, symbolic links out, directories), the files need no key
// while the API beside them still does, HTTP/2 gets the same answers, and a ledger whose console
// was never built answers /console with a one-line hint instead.
// Method: a real ledger (startLedgerApp on port 0 over a fresh database) whose console directory
// is a temporary folder this file writes, next to a secret file and a symbolic link pointing
// out of it; requests are sent raw with node:http (which sends the path exactly as written, so
// traversal attempts reach the server unnormalised) and node:http2. A second ledger points at an
// empty folder.
import { mkdtemp, mkdir, rm, symlink, writeFile } from "node:fs/promises";
import http from "node:http";
import http2 from "node:http2";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startLedgerApp, type LedgerApp } from "@holdfast/ledger/app";
import { loadLedgerConfig } from "@holdfast/ledger/config";
import { createTestDatabase, type TestDatabase } from "./support/db.js";
import { quietLogger } from "./support/ledger.js";

const SECRET = "this file is outside the console directory";
const PAGE = "<!doctype html><title>console</title>";
const SCRIPT = "console.log('asset');";

let folder: string;
let db: TestDatabase;
let app: LedgerApp;
let unbuilt: LedgerApp;

beforeAll(async () => {
  folder = await mkdtemp(path.join(tmpdir(), "holdfast-console-static-"));
  const build = path.join(folder, "dist");
  await mkdir(path.join(build, "assets"), { recursive: true });
  await writeFile(path.join(build, "index.html"), PAGE);
  await writeFile(path.join(build, "assets", "index-Ab12Cd34.js"), SCRIPT);
  await writeFile(path.join(build, "assets", "index-Ab12Cd34.css"), "body{}");
  await writeFile(path.join(folder, "secret.txt"), SECRET);
  await symlink(path.join(folder, "secret.txt"), path.join(build, "link-out.txt"));
  db = await createTestDatabase();
  const config = loadLedgerConfig({ DATABASE_URL: db.url, HOLDFAST_PORT: "0", HOLDFAST_HOST: "127.0.0.1" });
  app = await startLedgerApp({ config, logger: quietLogger, migrate: false, relay: false, consoleDirectory: build });
  unbuilt = await startLedgerApp({ config, logger: quietLogger, migrate: false, relay: false, consoleDirectory: path.join(folder, "missing") });
});

afterAll(async () => {
  await app?.stop();
  await unbuilt?.stop();
  await db?.drop();
  await rm(folder, { recursive: true, force: true });
});

interface Answer {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

/** One HTTP/1.1 request with the path sent byte for byte as given. */
function request(target: LedgerApp, rawPath: string, method = "GET", headers: Record<string, string> = {}): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: target.address.host, port: target.address.port, path: rawPath, method, headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString("utf8") }));
      res.on("error", reject);
    });
    req.on("error", reject);
    req.end();
  });
}

describe("the console's files", () => {
  it("redirects / to /console/", async () => {
    const answer = await request(app, "/");
    expect(answer.status).toBe(302);
    expect(answer.headers.location).toBe("/console/");
  });

  it.each(["/console", "/console/", "/console/index.html", "/console/?from=bookmark"])("serves the page at %s, revalidated on every load, with its security headers", async (url) => {
    const answer = await request(app, url);
    expect(answer.status).toBe(200);
    expect(answer.body).toBe(PAGE);
    expect(answer.headers["content-type"]).toBe("text/html; charset=utf-8");
    expect(answer.headers["cache-control"]).toBe("no-cache");
    expect(answer.headers["x-content-type-options"]).toBe("nosniff");
    expect(answer.headers["content-security-policy"]).toContain("default-src 'self'");
    expect(answer.headers["content-security-policy"]).toContain("frame-ancestors 'none'");
  });

  it("serves hashed assets with their content type, cached for a year", async () => {
    const script = await request(app, "/console/assets/index-Ab12Cd34.js");
    expect(script).toMatchObject({ status: 200, body: SCRIPT });
    expect(script.headers["content-type"]).toBe("text/javascript; charset=utf-8");
    expect(script.headers["cache-control"]).toBe("public, max-age=31536000, immutable");
    expect(script.headers["content-length"]).toBe(String(Buffer.byteLength(SCRIPT)));
    const style = await request(app, "/console/assets/index-Ab12Cd34.css");
    expect(style.headers["content-type"]).toBe("text/css; charset=utf-8");
  });

  it("answers HEAD with the headers and no body", async () => {
    const answer = await request(app, "/console/assets/index-Ab12Cd34.js", "HEAD");
    expect(answer.status).toBe(200);
    expect(answer.headers["content-length"]).toBe(String(Buffer.byteLength(SCRIPT)));
    expect(answer.body).toBe("");
  });

  it.each(["POST", "PUT", "DELETE"])("refuses %s with 405 and names GET and HEAD", async (method) => {
    const answer = await request(app, "/console/", method);
    expect(answer.status).toBe(405);
    expect(answer.headers.allow).toBe("GET, HEAD");
  });

  it.each([
    "/console/../secret.txt",
    "/console/assets/../../secret.txt",
    "/console/%2e%2e/secret.txt",
    "/console/%2E%2E%2Fsecret.txt",
    "/console/assets/..%2f..%2fsecret.txt",
    "/console/..%5csecret.txt",
    "/console/%2e%2e%5c%2e%2e%5csecret.txt",
    "/console/.%2e/secret.txt",
    "/console/link-out.txt",
    "/console/index.html%00.js",
    "/console/%",
    "/console/assets",
    "/console/assets/",
    "/console/assets/missing.js",
    `/console/${"a/".repeat(600)}x.js`,
  ])("answers 404 and nothing of any other file for %s", async (url) => {
    const answer = await request(app, url);
    expect(answer.status).toBe(404);
    expect(answer.body).not.toContain(SECRET);
    expect(answer.body).not.toContain(PAGE);
  });

  it("needs no key for the files, while the API beside them still refuses a call without one", async () => {
    const page = await request(app, "/console/");
    expect(page.status).toBe(200);
    const call = await request(app, "/holdfast.v1.LedgerService/GetWallet", "POST", { "content-type": "application/json" });
    expect(call.status).toBe(401);
    expect(call.body).toContain("unauthenticated");
  });

  it("answers the same over HTTP/2", async () => {
    const session = http2.connect(app.url);
    try {
      const answer = await new Promise<{ status: number; type: string; body: string }>((resolve, reject) => {
        const stream = session.request({ ":path": "/console/assets/index-Ab12Cd34.js", ":method": "GET" });
        let status = 0;
        let type = "";
        const chunks: Buffer[] = [];
        stream.on("response", (headers) => {
          status = Number(headers[":status"]);
          type = String(headers["content-type"]);
        });
        stream.on("data", (c: Buffer) => chunks.push(c));
        stream.on("end", () => resolve({ status, type, body: Buffer.concat(chunks).toString("utf8") }));
        stream.on("error", reject);
        stream.end();
      });
      expect(answer).toEqual({ status: 200, type: "text/javascript; charset=utf-8", body: SCRIPT });
    } finally {
      session.close();
    }
  });

  it("answers a ledger without a built console with a one-line hint", async () => {
    const answer = await request(unbuilt, "/console/");
    expect(answer.status).toBe(404);
    expect(answer.body).toBe("the console is not built: run npm run build\n");
    expect((await request(unbuilt, "/console/assets/index-Ab12Cd34.js")).status).toBe(404);
  });
});
