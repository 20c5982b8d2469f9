/**
 * What `npm start` prints once the stack runs. Every line states a fact it checked: the
 * processes listed are the ones alive when it is printed, and each server says whether
 * `npm start` embedded or started it or found it.
 *
 * @module
 */
import path from "node:path";

import { withoutPassword } from "@holdfast/common/config";

/** Where a server the stack uses came from. */
export type ServerOrigin = "embedded" | "started" | "found" | "configured";

/** A server the stack uses: PostgreSQL or NATS. */
export interface ServerInfo {
  readonly url: string;
  readonly origin: ServerOrigin;
  /** Where its data (and, for nats-server, its log) lives, when npm start runs it. */
  readonly dataDir?: string;
}

/** A process of the stack, alive when the banner is printed. */
export interface ProcessInfo {
  readonly name: string;
  readonly pid: number;
}

/** Everything the banner shows. */
export interface BannerInfo {
  readonly endpoint: string;
  readonly tenant: { readonly id: string; readonly name: string };
  readonly adminKey: string;
  readonly adminKeyFile: string;
  readonly corsOrigins: readonly string[];
  readonly database: ServerInfo;
  /** Null when NATS is not running. */
  readonly nats: ServerInfo | null;
  readonly running: readonly ProcessInfo[];
  /** Workers that do not run, each with the reason. */
  readonly notRunning: readonly { readonly name: string; readonly reason: string }[];
  readonly webhookNetworks: string;
}

const ORIGIN_TEXT: Readonly<Record<ServerOrigin, string>> = {
  embedded: "embedded by npm start",
  started: "started by npm start",
  found: "found running on this machine",
  configured: "as configured",
};

/** The banner's text, ending with a blank line. */
export function formatBanner(info: BannerInfo): string {
  const keyFile = displayPath(info.adminKeyFile);
  const lines = [
    "",
    "Holdfast is running.",
    "",
    `  endpoint     ${info.endpoint}   (gRPC, gRPC-Web and Connect on one port)`,
    `  console      ${info.endpoint}/console   (sign in with the key below)`,
    `  tenant       ${info.tenant.name}   (id ${info.tenant.id})`,
    `  admin key    ${info.adminKey}`,
    `               (saved in ${keyFile}, readable by you only, and reused by later starts)`,
    `  cors         ${formatCors(info.corsOrigins)}`,
    `  database     ${formatServer(info.database)}`,
    `  nats         ${info.nats === null ? "not running (see above); events wait in PostgreSQL" : formatServer(info.nats)}`,
    `  processes    ${info.running.map((p) => `${p.name} (pid ${p.pid})`).join(", ")}`,
    ...info.notRunning.map((w, i) => `${i === 0 ? "  not running  " : "               "}${w.name}: ${w.reason}`),
    `  webhooks     endpoints allowed on http and https in ${info.webhookNetworks}`,
    "",
    "Try a first deposit:",
    "",
    `  export HOLDFAST_API_KEY=$(cat ${keyFile})`,
    `  curl -s -X POST ${info.endpoint}/holdfast.v1.LedgerService/Deposit \\`,
    "    -H 'content-type: application/json' \\",
    '    -H "authorization: Bearer $HOLDFAST_API_KEY" \\',
    `    -d '{"walletId":"user_123","asset":"USD","amount":"1000","idempotencyKey":"dep-1"}'`,
    "",
    "Press Ctrl-C to stop.",
    "",
    "",
  ];
  return lines.join("\n");
}

function formatCors(origins: readonly string[]): string {
  if (origins.length === 0) {
    return "no browser origin may call the API (set HOLDFAST_CORS_ORIGINS to allow some)";
  }
  return origins.includes("*") ? "any browser origin may call the API (*)" : `browsers may call the API from ${origins.join(", ")}`;
}

function formatServer(server: ServerInfo): string {
  const where = server.dataDir === undefined ? "" : `, data in ${displayPath(server.dataDir)}`;
  return `${withoutPassword(server.url)}   (${ORIGIN_TEXT[server.origin]}${where})`;
}

/** A path relative to the working directory when it lies inside it, else absolute. */
function displayPath(file: string): string {
  const relative = path.relative(process.cwd(), file);
  return relative === "" || relative.startsWith("..") || path.isAbsolute(relative) ? file : relative;
}
