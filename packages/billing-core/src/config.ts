/**
 * The billing-stream configuration file: which sinks exist, what each takes and how it maps
 * Holdfast usage onto its billing engine. JSON, documented in docs/billing-engines.md, with an
 * example in workers/billing-stream/billing-stream.example.json.
 *
 * Secrets never appear in the file: a sink names the environment variable that holds its API
 * key (`secret_env`), and a file that carries something that looks like an inline secret is
 * refused. Every limit has bounds; a value outside them stops the worker at start with an
 * error naming the sink and the field.
 *
 * The worker's environment is read here too ({@link loadBillingWorkerConfig}): the shared
 * settings (packages/common/src/config.ts) and the one variable of its own.
 *
 * A sink's customer comes from wallet metadata, which each tenant writes for itself. With more
 * than one tenant in the database, a sink that takes every tenant could be pointed by one
 * tenant at another tenant's customer on a shared engine account, so such a sink must list its
 * tenants or start its customer template with `{tenant_id}`; {@link checkSinkTenants} refuses
 * to start otherwise.
 *
 * | variable | default | meaning |
 * |---|---|---|
 * | `HOLDFAST_BILLING_CONFIG` | unset | Path of the sink configuration (JSON, see docs/billing-engines.md); the worker refuses to start without it, and `holdfast billing backfill` reads it when `--config` is not given. |
 *
 * @module
 */
import { readFile } from "node:fs/promises";
import type { QueryConfig, QueryResult, QueryResultRow } from "pg";
import { readHostConfig, readStreamProcessConfig, type HostConfig, type StreamProcessConfig } from "@holdfast/common/config";
import { readPath, type Env, type IntegerSpec } from "@holdfast/common/env";
import { isUuid } from "@holdfast/common/patterns";

/** The billing engines a sink can feed. */
export const SINK_TYPES = ["stripe", "openmeter", "lago", "metronome", "http"] as const;
export type SinkType = (typeof SINK_TYPES)[number];

/** The journal kinds that are usage: direct spends, captured holds, and refunds of either. */
export const USAGE_KINDS = ["spend", "capture", "refund"] as const;
export type UsageKind = (typeof USAGE_KINDS)[number];

/** How a sink reports a refund. */
export const REFUND_MODES = ["negative", "separate_event", "skip"] as const;
export type RefundMode = (typeof REFUND_MODES)[number];

/** Where a new durable consumer starts: the whole stream, new events only, or a time. */
export type StartPosition = { readonly policy: "all" } | { readonly policy: "new" } | { readonly policy: "time"; readonly at: Date };

/** One sink, validated and with every default filled in. */
export interface SinkConfig {
  readonly name: string;
  readonly type: SinkType;
  /** Base URL of the engine's API (scheme, host, optional port and path prefix). */
  readonly endpoint: string;
  /** The API key, read from the environment variable the file names; null when none is needed. */
  readonly secret: string | null;
  readonly secretEnv: string | null;
  /** Tenants whose usage the sink takes; null takes every tenant. */
  readonly tenants: readonly string[] | null;
  readonly kinds: readonly UsageKind[];
  /** Template of the engine's customer: `{wallet.stripe_customer_id}`, `{wallet_id}`, ... */
  readonly customer: string;
  /** Template of the engine's event name / meter code / event type. */
  readonly eventName: string;
  /** Template of the usage value; must render to an integer. `{amount}` by default. */
  readonly value: string;
  readonly refunds: RefundMode;
  /** Event name for refunds when `refunds` is `separate_event`. */
  readonly refundEventName: string | null;
  /** Caller metadata keys copied into the engine's properties; null copies them all. */
  readonly properties: readonly string[] | null;
  readonly batchSizeMax: number;
  readonly flushIntervalMs: number;
  readonly attemptsMax: number;
  readonly retryDelayMsMin: number;
  readonly retryDelayMsMax: number;
  /** Longest Retry-After the worker waits in process; longer ones go back to JetStream. */
  readonly retryAfterMsMax: number;
  readonly requestTimeoutMs: number;
  /** Requests in flight at once (Stripe sends one event per request). */
  readonly concurrency: number;
  /** Messages the sink's consumer may have delivered and not yet acknowledged. */
  readonly maxAckPending: number;
  readonly start: StartPosition;
  /** Engine-specific settings; see each sink module. */
  readonly options: Readonly<Record<string, string>>;
}

/** The whole file. */
export interface BillingConfig {
  readonly sinks: readonly SinkConfig[];
  /** How long a wallet's metadata (its customer ids) is cached. */
  readonly walletCacheTtlMs: number;
  /** Port of the worker's /healthz and /metrics endpoint; null serves none. */
  readonly metricsPort: number | null;
}

/**
 * Each engine's documented batch limit. Stripe's v1 meter event endpoint takes one event per
 * request, so its "batch" is how many events one flush sends (with `concurrency` in flight).
 */
export const ENGINE_BATCH_MAX: Readonly<Record<SinkType, number>> = {
  stripe: 1000,
  // https://docs.metronome.com/api-reference/usage/ingest-events: "a JSON array of between 1 and 100 usage events".
  metronome: 100,
  // https://getlago.com/docs/api-reference/events/batch: "Each request may include up to 100 events."
  lago: 100,
  // OpenMeter documents no batch limit; 100 keeps a request well under any proxy's body limit.
  openmeter: 100,
  http: 1000,
};

const SINKS_COUNT_MAX = 32;
const TENANTS_COUNT_MAX = 1000;
const PROPERTIES_COUNT_MAX = 64;
const TEMPLATE_LENGTH_MAX = 200;
const OPTION_LENGTH_MAX = 200;
const BATCH_SIZE_MAX: IntegerSpec = { fallback: 100, min: 1, max: 1000 };
const FLUSH_INTERVAL_MS: IntegerSpec = { fallback: 1000, min: 10, max: 60_000 };
const ATTEMPTS_MAX: IntegerSpec = { fallback: 5, min: 1, max: 20 };
const RETRY_DELAY_MS_MIN: IntegerSpec = { fallback: 200, min: 1, max: 60_000 };
const RETRY_DELAY_MS_MAX: IntegerSpec = { fallback: 30_000, min: 1, max: 10 * 60_000 };
const RETRY_AFTER_MS_MAX: IntegerSpec = { fallback: 60_000, min: 0, max: 10 * 60_000 };
const REQUEST_TIMEOUT_MS: IntegerSpec = { fallback: 10_000, min: 100, max: 120_000 };
const CONCURRENCY: IntegerSpec = { fallback: 8, min: 1, max: 64 };
const ACK_PENDING_MAX: IntegerSpec = { fallback: 2000, min: 1, max: 100_000 };
const WALLET_CACHE_TTL_MS: IntegerSpec = { fallback: 60_000, min: 0, max: 24 * 3_600_000 };
const PORT: IntegerSpec = { fallback: 0, min: 0, max: 65_535 };

const NAME_PATTERN = /^[A-Za-z0-9_-]{1,64}$/;
const ENV_NAME_PATTERN = /^[A-Z_][A-Z0-9_]{0,127}$/;
/** Keys that would hold a secret inline; the file must name an environment variable instead. */
const INLINE_SECRET_KEYS = /^(api_?key|secret|token|password|bearer|authorization|secret_key)$/i;

/** Defaults that differ by engine. */
const ENGINE_DEFAULTS: Readonly<Record<SinkType, { customer: string; eventName: string | null; properties: readonly string[] | null }>> = {
  stripe: { customer: "{wallet.stripe_customer_id}", eventName: null, properties: [] },
  openmeter: { customer: "{wallet_id}", eventName: null, properties: null },
  lago: { customer: "{wallet.lago_subscription_id}", eventName: null, properties: null },
  metronome: { customer: "{wallet.metronome_customer_id}", eventName: null, properties: null },
  http: { customer: "{wallet_id}", eventName: "holdfast.usage", properties: null },
};

/** Thrown for a malformed configuration file; the message names the sink and field. */
export class BillingConfigError extends Error {
  override readonly name = "BillingConfigError";
}

/** Everything the billing-stream worker reads from its environment, the sinks' secrets aside. */
export interface BillingWorkerConfig extends StreamProcessConfig, HostConfig {
  /** Path of the sink configuration file. */
  readonly billingConfigPath: string;
}

/** HOLDFAST_BILLING_CONFIG; null when unset. */
export function readBillingConfigPath(env: Env): string | null {
  return readPath(env, "HOLDFAST_BILLING_CONFIG");
}

/**
 * Reads and validates the worker's environment. Throws an Error naming the first bad variable,
 * or saying that HOLDFAST_BILLING_CONFIG is not set: the worker has nothing to do without sinks.
 */
export function loadBillingWorkerConfig(env: Env = process.env): BillingWorkerConfig {
  const billingConfigPath = readBillingConfigPath(env);
  if (billingConfigPath === null) {
    throw new Error("HOLDFAST_BILLING_CONFIG is not set: point it at the sink configuration (see docs/billing-engines.md)");
  }
  return { ...readStreamProcessConfig(env), ...readHostConfig(env), billingConfigPath };
}

/** Anything that runs a query (a pool); the tenant check reads one small count. */
export interface Queryable {
  query<R extends QueryResultRow = QueryResultRow>(config: QueryConfig): Promise<QueryResult<R>>;
}

/** The placeholder a customer template starts with to be safe with several tenants. */
const TENANT_PREFIX = "{tenant_id}";

/**
 * Refuses sinks that take every tenant while the database holds more than one, unless their
 * customer starts with `{tenant_id}`: a tenant controls its wallets' metadata, so without an
 * explicit list (or the prefix) it could have its usage billed to another tenant's customer.
 * Run at start by the worker and by `holdfast billing backfill`; throws a BillingConfigError
 * naming every such sink.
 */
export async function checkSinkTenants(config: BillingConfig, db: Queryable): Promise<void> {
  const open = config.sinks.filter((sink) => sink.tenants === null && !sink.customer.startsWith(TENANT_PREFIX));
  if (open.length === 0) return;
  const { rows } = await db.query<{ tenants: number }>({ text: "select count(*)::int as tenants from (select 1 from tenants limit 2) t" });
  if ((rows[0]?.tenants ?? 0) <= 1) return;
  const names = open.map((sink) => `"${sink.name}"`).join(", ");
  throw new BillingConfigError(
    `${open.length === 1 ? "sink" : "sinks"} ${names}: the database has more than one tenant, so each sink must list its tenants in "tenants" ` +
      `(a tenant sets its own wallets' metadata, so a sink taking every tenant could bill one tenant's usage to another's customer), ` +
      `or start "customer" with ${TENANT_PREFIX}; see docs/billing-engines.md`,
  );
}

/** Reads and validates the configuration file at `path`. */
export async function loadBillingConfig(path: string, env: Env = process.env): Promise<BillingConfig> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (error) {
    throw new BillingConfigError(`cannot read the billing configuration ${path}: ${(error as Error).message}`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (error) {
    throw new BillingConfigError(`${path} is not valid JSON: ${(error as Error).message}`);
  }
  return parseBillingConfig(json, env);
}

/** Validates an already parsed configuration object. */
export function parseBillingConfig(json: unknown, env: Env = process.env): BillingConfig {
  const root = object(json, "the configuration");
  rejectInlineSecrets(root, "the configuration");
  const sinksJson = root["sinks"];
  if (!Array.isArray(sinksJson) || sinksJson.length === 0 || sinksJson.length > SINKS_COUNT_MAX) {
    throw new BillingConfigError(`"sinks" must be a list of 1 to ${SINKS_COUNT_MAX} sinks`);
  }
  const sinks = sinksJson.map((sink, index) => parseSink(sink, index, env));
  const names = new Set<string>();
  for (const sink of sinks) {
    if (names.has(sink.name)) throw new BillingConfigError(`two sinks are named "${sink.name}"`);
    names.add(sink.name);
  }
  const port = integer(root, "metrics_port", PORT, "the configuration");
  return {
    sinks,
    walletCacheTtlMs: integer(root, "wallet_cache_ttl_ms", WALLET_CACHE_TTL_MS, "the configuration"),
    metricsPort: root["metrics_port"] === undefined ? null : port,
  };
}

function parseSink(json: unknown, index: number, env: Env): SinkConfig {
  const sink = object(json, `sinks[${index}]`);
  const name = string(sink, "name", `sinks[${index}]`);
  if (!NAME_PATTERN.test(name)) {
    throw new BillingConfigError(`sinks[${index}].name must be 1-64 characters of A-Z, a-z, 0-9, _ or -`);
  }
  const where = `sink "${name}"`;
  const type = oneOf(sink, "type", SINK_TYPES, undefined, where);
  const defaults = ENGINE_DEFAULTS[type];
  const secretEnv = optionalString(sink, "secret_env", where);
  const eventName = template(sink, "event_name", defaults.eventName, where);
  const refunds = oneOf(sink, "refunds", REFUND_MODES, "negative", where);
  const refundEventName = refunds === "separate_event" ? template(sink, "refund_event_name", null, where) : null;
  const retryDelayMsMin = integer(sink, "retry_delay_ms_min", RETRY_DELAY_MS_MIN, where);
  const retryDelayMsMax = integer(sink, "retry_delay_ms_max", { ...RETRY_DELAY_MS_MAX, min: retryDelayMsMin }, where);
  return {
    name,
    type,
    endpoint: endpoint(sink, where),
    secret: readSecret(secretEnv, env, where),
    secretEnv,
    tenants: tenants(sink, where),
    kinds: kinds(sink, where),
    customer: template(sink, "customer", defaults.customer, where),
    eventName,
    value: template(sink, "value", "{amount}", where),
    refunds,
    refundEventName,
    properties: properties(sink, defaults.properties, where),
    batchSizeMax: integer(sink, "batch_size_max", { ...BATCH_SIZE_MAX, max: ENGINE_BATCH_MAX[type], fallback: Math.min(BATCH_SIZE_MAX.fallback, ENGINE_BATCH_MAX[type]) }, where),
    flushIntervalMs: integer(sink, "flush_interval_ms", FLUSH_INTERVAL_MS, where),
    attemptsMax: integer(sink, "attempts_max", ATTEMPTS_MAX, where),
    retryDelayMsMin,
    retryDelayMsMax,
    retryAfterMsMax: integer(sink, "retry_after_ms_max", RETRY_AFTER_MS_MAX, where),
    requestTimeoutMs: integer(sink, "request_timeout_ms", REQUEST_TIMEOUT_MS, where),
    concurrency: integer(sink, "concurrency", CONCURRENCY, where),
    maxAckPending: integer(sink, "max_ack_pending", ACK_PENDING_MAX, where),
    start: start(sink, where),
    options: options(sink, type, where),
  };
}

function readSecret(secretEnv: string | null, env: Env, where: string): string | null {
  if (secretEnv === null) return null;
  if (!ENV_NAME_PATTERN.test(secretEnv)) {
    throw new BillingConfigError(`${where}: secret_env must name an environment variable (A-Z, 0-9, _), got "${secretEnv}"`);
  }
  const value = env[secretEnv]?.trim();
  if (value === undefined || value === "") {
    throw new BillingConfigError(`${where}: the environment variable ${secretEnv} (secret_env) is not set`);
  }
  return value;
}

/** Refuses keys that would put a secret in the file, at any depth. */
function rejectInlineSecrets(value: Record<string, unknown>, where: string): void {
  for (const [key, inner] of Object.entries(value)) {
    if (INLINE_SECRET_KEYS.test(key)) {
      throw new BillingConfigError(`${where}: "${key}" looks like an inline secret; name an environment variable in "secret_env" instead`);
    }
    if (Array.isArray(inner)) {
      inner.forEach((item, i) => {
        if (isObject(item)) rejectInlineSecrets(item, `${where}.${key}[${i}]`);
      });
    } else if (isObject(inner)) {
      rejectInlineSecrets(inner, `${where}.${key}`);
    }
  }
}

function endpoint(sink: Record<string, unknown>, where: string): string {
  const raw = string(sink, "endpoint", where);
  if (!URL.canParse(raw)) throw new BillingConfigError(`${where}: endpoint must be an http(s) URL`);
  const url = new URL(raw);
  if ((url.protocol !== "http:" && url.protocol !== "https:") || url.username !== "" || url.password !== "" || url.search !== "" || url.hash !== "") {
    throw new BillingConfigError(`${where}: endpoint must be an http(s) URL without credentials, query or fragment`);
  }
  return url.toString().replace(/\/+$/, "");
}

function tenants(sink: Record<string, unknown>, where: string): string[] | null {
  const raw = sink["tenants"];
  if (raw === undefined || raw === "*") return null;
  if (!Array.isArray(raw) || raw.length === 0 || raw.length > TENANTS_COUNT_MAX || !raw.every((t) => typeof t === "string" && isUuid(t) && t === t.toLowerCase())) {
    throw new BillingConfigError(`${where}: tenants must be "*" or a list of 1 to ${TENANTS_COUNT_MAX} tenant ids (lowercase UUIDs)`);
  }
  return [...new Set(raw as string[])];
}

function kinds(sink: Record<string, unknown>, where: string): UsageKind[] {
  const raw = sink["events"];
  if (raw === undefined) return [...USAGE_KINDS];
  if (!Array.isArray(raw) || raw.length === 0 || !raw.every((k) => (USAGE_KINDS as readonly unknown[]).includes(k))) {
    throw new BillingConfigError(`${where}: events must be a non-empty list of ${USAGE_KINDS.join(", ")}`);
  }
  return [...new Set(raw as UsageKind[])];
}

function properties(sink: Record<string, unknown>, fallback: readonly string[] | null, where: string): readonly string[] | null {
  const raw = sink["properties"];
  if (raw === undefined) return fallback;
  if (raw === "all") return null;
  if (!Array.isArray(raw) || raw.length > PROPERTIES_COUNT_MAX || !raw.every((k) => typeof k === "string" && /^[A-Za-z0-9_.:-]{1,64}$/.test(k))) {
    throw new BillingConfigError(`${where}: properties must be "all" or a list of up to ${PROPERTIES_COUNT_MAX} metadata keys`);
  }
  return raw as string[];
}

function start(sink: Record<string, unknown>, where: string): StartPosition {
  const raw = sink["start"];
  if (raw === undefined || raw === "all") return { policy: "all" };
  if (raw === "new") return { policy: "new" };
  if (typeof raw === "string" && !Number.isNaN(Date.parse(raw))) return { policy: "time", at: new Date(raw) };
  throw new BillingConfigError(`${where}: start must be "all", "new" or an ISO 8601 time`);
}

/** Engine-specific string settings, e.g. `"stripe": {"api_version": "2025-04-30.basil"}`. */
function options(sink: Record<string, unknown>, type: SinkType, where: string): Record<string, string> {
  const raw = sink[type];
  if (raw === undefined) return {};
  const obj = object(raw, `${where}.${type}`);
  const out: Record<string, string> = {};
  for (const [key, value] of Object.entries(obj)) {
    if (typeof value !== "string" || value.length > OPTION_LENGTH_MAX) {
      throw new BillingConfigError(`${where}.${type}.${key} must be a string of at most ${OPTION_LENGTH_MAX} characters`);
    }
    out[key] = value;
  }
  return out;
}

function template(sink: Record<string, unknown>, key: string, fallback: string | null, where: string): string {
  const raw = sink[key] ?? fallback;
  if (typeof raw !== "string" || raw === "" || raw.length > TEMPLATE_LENGTH_MAX) {
    throw new BillingConfigError(`${where}: ${key} must be a string of 1-${TEMPLATE_LENGTH_MAX} characters${fallback === null ? " (it has no default for this engine)" : ""}`);
  }
  for (const match of raw.matchAll(/\{([^}]*)\}/g)) {
    if (!/^(tenant_id|wallet_id|asset|kind|amount|transfer_id|model|usage\.(input|cached_input|cache_write|cache_write_1h|output|reasoning|total)_tokens|wallet\.[A-Za-z0-9_.:-]+|meta\.[A-Za-z0-9_.:-]+)$/.test(match[1] ?? "")) {
      throw new BillingConfigError(`${where}: ${key} uses unknown placeholder {${match[1]}}`);
    }
  }
  return raw;
}

function oneOf<T extends string>(sink: Record<string, unknown>, key: string, allowed: readonly T[], fallback: T | undefined, where: string): T {
  const raw = sink[key] ?? fallback;
  const found = allowed.find((candidate) => candidate === raw);
  if (found === undefined) throw new BillingConfigError(`${where}: ${key} must be one of ${allowed.join(", ")}`);
  return found;
}

function integer(obj: Record<string, unknown>, key: string, bounds: IntegerSpec, where: string): number {
  const raw = obj[key];
  if (raw === undefined) return bounds.fallback;
  if (typeof raw !== "number" || !Number.isSafeInteger(raw) || raw < bounds.min || raw > bounds.max) {
    throw new BillingConfigError(`${where}: ${key} must be an integer from ${bounds.min} to ${bounds.max}`);
  }
  return raw;
}

function string(obj: Record<string, unknown>, key: string, where: string): string {
  const raw = obj[key];
  if (typeof raw !== "string" || raw === "") throw new BillingConfigError(`${where}: ${key} is required`);
  return raw;
}

function optionalString(obj: Record<string, unknown>, key: string, where: string): string | null {
  const raw = obj[key];
  if (raw === undefined) return null;
  if (typeof raw !== "string" || raw === "") throw new BillingConfigError(`${where}: ${key} must be a non-empty string`);
  return raw;
}

function object(json: unknown, where: string): Record<string, unknown> {
  if (!isObject(json)) throw new BillingConfigError(`${where} must be a JSON object`);
  return json;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}
