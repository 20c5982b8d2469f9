/**
 * Maps a usage record onto one sink's terms: the engine's customer, event name, signed value
 * and properties. Pure: everything it needs from PostgreSQL arrives in a ResolvedContext.
 *
 * Templates name fields of the record in braces: `{tenant_id}`, `{wallet_id}`, `{asset}`,
 * `{kind}`, `{amount}`, `{transfer_id}`, `{wallet.KEY}` (the wallet's metadata) and
 * `{meta.KEY}` (the caller's metadata on the journal row), and for the spends and captures of
 * the usage commands `{model}` and `{usage.input_tokens}` ... `{usage.reasoning_tokens}`,
 * `{usage.total_tokens}` (their token legs, docs/metering.md): so one sink can bill money
 * (`{amount}`) and another tokens (`{usage.output_tokens}`). Other records have no usage, so
 * such a template dead-letters them. A template whose placeholder has no
 * value cannot be rendered; the record is then dead-lettered with the reason, never sent with
 * a guessed customer.
 *
 * Refunds, per sink (`refunds`):
 * - `negative` (default): the same event name with the value negated. Every supported engine
 *   sums negative values into the period's usage (Stripe floors a negative period at 0).
 * - `separate_event`: a positive value under `refund_event_name`.
 * - `skip`: not sent at all.
 * A refund carries the refunded usage's metadata (model, feature, ...) under its own, so it
 * lands in the same meter dimensions. With a value template such as `{meta.tokens}`, a refund
 * uses its own `tokens` when the caller gave one, the refunded usage's when it is refunded in
 * full, and is dead-lettered otherwise: a partial refund has no honest token count to guess.
 *
 * @module
 */
import type { SinkConfig } from "./config.js";
import { transferKey, walletKey, type ResolvedContext } from "./resolver.js";
import { USAGE_TOKEN_FIELDS, type UsageRecord } from "./usage.js";

/** A usage record in one sink's terms, ready for the sink's wire format. */
export interface BillableUsage {
  readonly record: UsageRecord;
  /** The engine's idempotency / dedupe key: the transfer id. */
  readonly key: string;
  readonly customer: string;
  readonly eventName: string;
  /** Signed: negative for a refund under `refunds: negative`. */
  readonly value: bigint;
  readonly properties: Readonly<Record<string, string>>;
}

export type MappingResult =
  | { readonly kind: "usage"; readonly usage: BillableUsage }
  | { readonly kind: "skip"; readonly why: string }
  | { readonly kind: "unmappable"; readonly why: string };

/** Whether any of the sink's templates reads the wallet's metadata (so it must be looked up). */
export function needsWalletMetadata(sink: SinkConfig): boolean {
  return [sink.customer, sink.eventName, sink.value, sink.refundEventName ?? ""].some((t) => t.includes("{wallet."));
}

/** Maps one record for one sink. */
export function mapUsage(sink: SinkConfig, record: UsageRecord, context: ResolvedContext): MappingResult {
  if (sink.tenants !== null && !sink.tenants.includes(record.tenantId)) return { kind: "skip", why: "tenant not routed to this sink" };
  if (!sink.kinds.includes(record.kind)) return { kind: "skip", why: `${record.kind} not routed to this sink` };
  const isRefund = record.kind === "refund";
  if (isRefund && sink.refunds === "skip") return { kind: "skip", why: "refunds are skipped by this sink" };
  const refunded = record.refundOf === null ? undefined : context.refunded.get(transferKey(record.tenantId, record.refundOf));
  if (isRefund && refunded === undefined) return { kind: "unmappable", why: `refunded transfer ${record.refundOf ?? "(none)"} not found` };
  const wallet = context.wallets.get(walletKey(record.tenantId, record.walletId)) ?? {};
  const metadata = { ...(refunded?.metadata ?? {}), ...record.metadata };
  const fields = { record, wallet, metadata };
  const customer = render(sink.customer, fields);
  if (customer === null) return { kind: "unmappable", why: `no customer: ${sink.customer} has no value for wallet ${record.walletId}` };
  const nameTemplate = isRefund && sink.refunds === "separate_event" ? (sink.refundEventName ?? sink.eventName) : sink.eventName;
  const eventName = render(nameTemplate, fields);
  if (eventName === null) return { kind: "unmappable", why: `no event name: ${nameTemplate} has no value` };
  const valueMetadata = isRefund && refunded !== undefined && refunded.amount === record.amount ? metadata : record.metadata;
  const rendered = render(sink.value, { ...fields, metadata: valueMetadata });
  if (rendered === null || !/^-?\d{1,19}$/.test(rendered)) {
    return { kind: "unmappable", why: `no integer value: ${sink.value} rendered ${rendered === null ? "nothing" : `"${rendered}"`}` };
  }
  const magnitude = BigInt(rendered);
  const value = isRefund && sink.refunds === "negative" ? -magnitude : magnitude;
  return {
    kind: "usage",
    usage: { record, key: record.transferId, customer, eventName, value, properties: pickProperties(sink, record, metadata) },
  };
}

/** The caller metadata the sink keeps, plus what every engine can group by. */
function pickProperties(sink: SinkConfig, record: UsageRecord, metadata: Record<string, string>): Record<string, string> {
  const out: Record<string, string> = {};
  const keys = sink.properties ?? Object.keys(metadata).sort();
  for (const key of keys) {
    const value = metadata[key];
    if (value !== undefined) out[key] = value;
  }
  if (sink.properties === null) {
    out["asset"] = record.asset;
    out["kind"] = record.kind;
    out["wallet_id"] = record.walletId;
    if (record.refundOf !== null) out["refund_of"] = record.refundOf;
  }
  return out;
}

interface TemplateFields {
  record: UsageRecord;
  wallet: Readonly<Record<string, string>>;
  metadata: Readonly<Record<string, string>>;
}

/** Renders a template; null when a placeholder has no value. */
export function render(template: string, fields: TemplateFields): string | null {
  let missing = false;
  const out = template.replace(/\{([^}]+)\}/g, (_, name: string) => {
    const value = placeholder(name, fields);
    if (value === undefined || value === "") missing = true;
    return value ?? "";
  });
  return missing ? null : out;
}

function placeholder(name: string, { record, wallet, metadata }: TemplateFields): string | undefined {
  if (name.startsWith("wallet.")) return wallet[name.slice("wallet.".length)];
  if (name.startsWith("meta.")) return metadata[name.slice("meta.".length)];
  if (name.startsWith("usage.")) return usagePlaceholder(name.slice("usage.".length), record);
  switch (name) {
    case "tenant_id":
      return record.tenantId;
    case "wallet_id":
      return record.walletId;
    case "asset":
      return record.asset;
    case "kind":
      return record.kind;
    case "amount":
      return record.amount.toString();
    case "transfer_id":
      return record.transferId;
    case "model":
      return record.usage?.model;
    default:
      return undefined;
  }
}

/** `{usage.<class>_tokens}` or `{usage.total_tokens}`; undefined for a record without usage. */
function usagePlaceholder(field: string, record: UsageRecord): string | undefined {
  const usage = record.usage ?? null;
  if (usage === null) return undefined;
  const counts = usage.tokens;
  if (field === "total_tokens") return USAGE_TOKEN_FIELDS.reduce((sum, f) => sum + counts[f], 0n).toString();
  return (USAGE_TOKEN_FIELDS as readonly string[]).includes(field) ? counts[field as (typeof USAGE_TOKEN_FIELDS)[number]].toString() : undefined;
}
