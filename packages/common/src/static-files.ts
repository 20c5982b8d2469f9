/**
 * Static files on the RPC port: the web console's build output (docs/console.md) under one
 * path prefix, so that the console and the API it calls share an origin and the ledger's CORS
 * and key rules apply to its calls unchanged.
 *
 * Only GET and HEAD; only regular files inside the directory, after the URL path is decoded,
 * normalised and its symbolic links resolved, so no `..`, encoded slash or link can reach a file
 * outside it. The files need no key: they are the same for everyone and hold no data (the API
 * calls they make carry the key). Hashed build assets are cached for a year; the page itself
 * is revalidated on every load, so a new build is picked up at once. A directory that holds no
 * build answers 404 with a one-line hint rather than failing the process: the API does not
 * need the console.
 *
 * @module
 */
import { createReadStream } from "node:fs";
import { realpath, stat } from "node:fs/promises";
import type http from "node:http";
import type http2 from "node:http2";
import path from "node:path";
import { pipeline } from "node:stream/promises";

import type { Logger } from "pino";

type NodeRequest = http.IncomingMessage | http2.Http2ServerRequest;
type NodeResponse = http.ServerResponse | http2.Http2ServerResponse;

/**
 * Answers a request when it is one of the handler's paths and returns true; returns false, having
 * touched nothing, for every other path (the caller routes it on).
 */
export type StaticFiles = (req: NodeRequest, res: NodeResponse, urlPath: string) => boolean;

/** Options for {@link createStaticFiles}. */
export interface StaticFilesOptions {
  /** The built files; `index.html` in it is the page served at the prefix itself. */
  readonly directory: string;
  /** Where they are served, e.g. `/console`: the prefix, and everything below `<prefix>/`. */
  readonly prefix: string;
  /** Files below this folder of the directory have content hashes in their names. */
  readonly hashedFolder: string;
  /** Whether `GET /` redirects to the prefix. */
  readonly redirectRoot: boolean;
  /** What a request for the prefix answers (in one line) when the directory holds no build. */
  readonly notBuiltHint: string;
  readonly logger: Logger;
}

/** Content types by extension; anything else is served as bytes. */
const CONTENT_TYPES: Readonly<Record<string, string>> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".mjs": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".json": "application/json",
  ".map": "application/json",
  ".svg": "image/svg+xml",
  ".png": "image/png",
  ".ico": "image/x-icon",
  ".woff2": "font/woff2",
  ".txt": "text/plain; charset=utf-8",
};
const CONTENT_TYPE_DEFAULT = "application/octet-stream";
/** A hashed asset never changes under its name: a year, the longest caches honour. */
const HASHED_CACHE_CONTROL = "public, max-age=31536000, immutable";
/** The page names the current assets, so it is checked with the server on every load. */
const PAGE_CACHE_CONTROL = "no-cache";
/** Longest URL path looked up; longer ones are not the console's. */
const URL_PATH_BYTES_MAX = 1024;
/**
 * The console's page runs only its own scripts and calls only its own origin; it may not be
 * framed. Inline styles are allowed because the chart library positions its elements with them.
 */
const CONTENT_SECURITY_POLICY =
  "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/** Creates the handler; the directory is read on each request, so a later build is served as is. */
export function createStaticFiles(options: StaticFilesOptions): StaticFiles {
  const prefix = options.prefix.replace(/\/+$/, "");
  const root = path.resolve(options.directory);
  return (req, res, urlPath) => {
    if (options.redirectRoot && urlPath === "/" && (req.method === "GET" || req.method === "HEAD")) {
      answerRedirect(req, res, `${prefix}/`);
      return true;
    }
    if (urlPath !== prefix && !urlPath.startsWith(`${prefix}/`)) {
      return false;
    }
    if (req.method !== "GET" && req.method !== "HEAD") {
      res.setHeader("allow", "GET, HEAD");
      answerText(req, res, 405, "method not allowed");
      return true;
    }
    const relative = urlPath === prefix ? "" : urlPath.slice(prefix.length + 1);
    serve(req, res, root, relative, options).catch((err: unknown) => {
      options.logger.error({ err, path: urlPath }, "static file failed");
      if (!res.headersSent) {
        answerText(req, res, 500, "internal error");
      } else {
        res.destroy();
      }
    });
    return true;
  };
}

async function serve(req: NodeRequest, res: NodeResponse, root: string, relative: string, options: StaticFilesOptions): Promise<void> {
  const rootReal = await realpath(root).catch(() => null);
  const page = relative === "" || relative === "index.html";
  if (rootReal === null || !(await isFile(path.join(rootReal, "index.html")))) {
    answerText(req, res, 404, page ? options.notBuiltHint : "not found");
    return;
  }
  const file = await resolveInside(rootReal, page ? "index.html" : relative);
  if (file === null) {
    answerText(req, res, 404, "not found");
    return;
  }
  const info = await stat(file);
  const hashed = relative.startsWith(`${options.hashedFolder}/`);
  res.setHeader("content-type", CONTENT_TYPES[path.extname(file).toLowerCase()] ?? CONTENT_TYPE_DEFAULT);
  res.setHeader("content-length", String(info.size));
  res.setHeader("cache-control", hashed ? HASHED_CACHE_CONTROL : PAGE_CACHE_CONTROL);
  res.setHeader("x-content-type-options", "nosniff");
  if (path.extname(file) === ".html") {
    res.setHeader("content-security-policy", CONTENT_SECURITY_POLICY);
    res.setHeader("x-frame-options", "DENY");
    res.setHeader("referrer-policy", "no-referrer");
  }
  res.writeHead(200);
  if (req.method === "HEAD") {
    res.end();
    return;
  }
  await pipeline(createReadStream(file), res);
}

/**
 * The real path of a regular file named by a URL path below the root, or null when the path is
 * malformed, leaves the root (`..`, an encoded slash or NUL, a symbolic link out), or names no
 * regular file.
 */
export async function resolveInside(rootReal: string, urlRelative: string): Promise<string | null> {
  if (urlRelative.length > URL_PATH_BYTES_MAX) {
    return null;
  }
  let decoded: string;
  try {
    decoded = decodeURIComponent(urlRelative);
  } catch {
    return null;
  }
  // A backslash is a separator on some systems and an encoded slash hides one from the checks above.
  if (decoded.includes("\0") || decoded.includes("\\")) {
    return null;
  }
  const segments = decoded.split("/");
  if (segments.some((segment) => segment === ".." || segment === ".")) {
    return null;
  }
  const candidate = path.resolve(rootReal, decoded);
  if (!candidate.startsWith(rootReal + path.sep)) {
    return null;
  }
  const real = await realpath(candidate).catch(() => null);
  if (real === null || !real.startsWith(rootReal + path.sep)) {
    return null;
  }
  return (await isFile(real)) ? real : null;
}

async function isFile(file: string): Promise<boolean> {
  return stat(file).then((info) => info.isFile(), () => false);
}

function answerRedirect(req: NodeRequest, res: NodeResponse, location: string): void {
  res.setHeader("location", location);
  answerText(req, res, 302, `see ${location}`);
}

function answerText(req: NodeRequest, res: NodeResponse, status: number, text: string): void {
  res.setHeader("content-type", "text/plain; charset=utf-8");
  res.setHeader("cache-control", "no-store");
  res.setHeader("x-content-type-options", "nosniff");
  res.writeHead(status);
  if (req.method === "HEAD") {
    res.end();
  } else {
    res.end(`${text}\n`);
  }
}
