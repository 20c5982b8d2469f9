/**
 * What mapping needs from PostgreSQL besides the usage record itself: the wallet's metadata
 * (where customer ids such as `stripe_customer_id` live) and, for a refund, the transfer it
 * refunds (so the refund carries the same model, feature, ... as the usage it takes back).
 *
 * Both are looked up in one query per batch and kept in bounded caches: wallet metadata for
 * a configured time (a changed customer id is picked up within it), refunded transfers for
 * good (the journal is immutable).
 *
 * @module
 */
import type pg from "pg";
import type { UsageRecord } from "./usage.js";

/** The refunded transfer, as far as mapping a refund needs it. */
export interface RefundedTransfer {
  readonly amount: bigint;
  readonly metadata: Readonly<Record<string, string>>;
}

/** Context for mapping a batch: look-ups keyed by {@link walletKey} and {@link transferKey}. */
export interface ResolvedContext {
  readonly wallets: ReadonlyMap<string, Readonly<Record<string, string>>>;
  readonly refunded: ReadonlyMap<string, RefundedTransfer>;
}

export interface ResolverOptions {
  pool: pg.Pool;
  walletCacheTtlMs: number;
  /** Entries each cache keeps; the oldest go first. */
  cacheEntriesMax: number;
  /** Clock for cache expiry; tests may pass their own. */
  now?: () => number;
}

export const walletKey = (tenantId: string, walletId: string): string => `${tenantId}/${walletId}`;
export const transferKey = (tenantId: string, transferId: string): string => `${tenantId}/${transferId}`;

/** A map that forgets its oldest entries beyond `max` (insertion order, refreshed on set). */
class BoundedCache<V> {
  private readonly entries = new Map<string, { value: V; at: number }>();
  constructor(private readonly max: number) {}
  get(key: string, now: number, ttlMs: number): V | undefined {
    const entry = this.entries.get(key);
    if (entry === undefined) return undefined;
    if (now - entry.at > ttlMs) {
      this.entries.delete(key);
      return undefined;
    }
    return entry.value;
  }
  set(key: string, value: V, now: number): void {
    this.entries.delete(key);
    this.entries.set(key, { value, at: now });
    while (this.entries.size > this.max) {
      const oldest = this.entries.keys().next().value as string;
      this.entries.delete(oldest);
    }
  }
}

export type Resolver = ReturnType<typeof createResolver>;

/** Creates a resolver; `resolve` throws when PostgreSQL cannot be reached (the caller retries). */
export function createResolver(options: ResolverOptions) {
  const now = options.now ?? Date.now;
  const wallets = new BoundedCache<Readonly<Record<string, string>>>(options.cacheEntriesMax);
  const refunded = new BoundedCache<RefundedTransfer>(options.cacheEntriesMax);

  async function resolve(records: readonly UsageRecord[], needWallets: boolean): Promise<ResolvedContext> {
    const at = now();
    const walletOut = new Map<string, Readonly<Record<string, string>>>();
    const refundOut = new Map<string, RefundedTransfer>();
    const missingWallets = new Map<string, { tenant: string; wallet: string }>();
    const missingRefunds = new Map<string, { tenant: string; transfer: string }>();
    for (const r of records) {
      if (needWallets) {
        const key = walletKey(r.tenantId, r.walletId);
        const hit = wallets.get(key, at, options.walletCacheTtlMs);
        if (hit !== undefined) walletOut.set(key, hit);
        else missingWallets.set(key, { tenant: r.tenantId, wallet: r.walletId });
      }
      if (r.refundOf !== null) {
        const key = transferKey(r.tenantId, r.refundOf);
        const hit = refunded.get(key, at, Number.POSITIVE_INFINITY);
        if (hit !== undefined) refundOut.set(key, hit);
        else missingRefunds.set(key, { tenant: r.tenantId, transfer: r.refundOf });
      }
    }
    if (missingWallets.size > 0) {
      const found = await fetchWallets([...missingWallets.values()]);
      for (const [key] of missingWallets) {
        const metadata = found.get(key) ?? {};
        wallets.set(key, metadata, at);
        walletOut.set(key, metadata);
      }
    }
    if (missingRefunds.size > 0) {
      for (const [key, value] of await fetchTransfers([...missingRefunds.values()])) {
        refunded.set(key, value, at);
        refundOut.set(key, value);
      }
    }
    return { wallets: walletOut, refunded: refundOut };
  }

  async function fetchWallets(keys: { tenant: string; wallet: string }[]) {
    const { rows } = await options.pool.query<{ tenant_id: string; wallet_id: string; metadata: Record<string, string> }>({
      name: "billing_wallet_metadata",
      text: `select w.tenant_id, w.wallet_id, w.metadata
               from unnest($1::uuid[], $2::text[]) as k(tenant_id, wallet_id)
               join wallets w on w.tenant_id = k.tenant_id and w.wallet_id = k.wallet_id`,
      values: [keys.map((k) => k.tenant), keys.map((k) => k.wallet)],
    });
    return new Map(rows.map((row) => [walletKey(row.tenant_id, row.wallet_id), row.metadata]));
  }

  async function fetchTransfers(keys: { tenant: string; transfer: string }[]) {
    const { rows } = await options.pool.query<{ tenant_id: string; transfer_id: string; amount: bigint; metadata: Record<string, string> }>({
      name: "billing_refunded_transfers",
      text: `select t.tenant_id, t.transfer_id, t.amount, t.metadata
               from unnest($1::uuid[], $2::uuid[]) as k(tenant_id, transfer_id)
               join transfers t on t.tenant_id = k.tenant_id and t.transfer_id = k.transfer_id`,
      values: [keys.map((k) => k.tenant), keys.map((k) => k.transfer)],
    });
    return new Map(rows.map((row) => [transferKey(row.tenant_id, row.transfer_id), { amount: BigInt(row.amount), metadata: row.metadata }]));
  }

  return { resolve };
}
