/**
 * Reading back what a run stored: the tenant's journal, idempotency records, accounts, holds and
 * outbox from PostgreSQL (and the ledger's own invariant check), and every message of the event
 * stream from NATS. The checker gets it all as plain data.
 *
 * @module
 */
import type pg from "pg";
import { connect } from "@nats-io/transport-node";
import { jetstream, jetstreamManager, DeliverPolicy } from "@nats-io/jetstream";
import { checkInvariants } from "@holdfast/ledger/invariants";

import type { AccountRow, EventRow, HoldRow, IdempotencyRow, TransferRow } from "./checker.js";

const NATS_CONNECT_TIMEOUT_MS = 5000;
/** How long one fetch waits for messages before the reader asks again. */
const FETCH_EXPIRES_MS = 2000;
const FETCH_BATCH_MAX = 1000;
/** Longest the whole read of the stream may take. */
const STREAM_READ_TIMEOUT_MS = 120_000;

/** The database half of a snapshot. */
export interface DatabaseSnapshot {
  readonly idempotency: IdempotencyRow[];
  readonly transfers: TransferRow[];
  readonly accounts: AccountRow[];
  readonly holds: HoldRow[];
  readonly events: EventRow[];
  readonly invariantViolations: string[];
}

/** Reads the tenant's rows; run it once nothing writes any more. */
export async function readDatabase(pool: pg.Pool, tenantId: string): Promise<DatabaseSnapshot> {
  const idempotency = await pool.query<{ key: string; command: string; ok: boolean | null; reason: string | null; transfer_id: string | null }>(
    `select idempotency_key as key, command, (response->>'ok')::boolean as ok, response->>'reason' as reason,
            coalesce(response->'transfer'->>'transfer_id', response->'hold'->>'reserve_transfer_id') as transfer_id
       from idempotency_keys where tenant_id = $1`,
    [tenantId],
  );
  const transfers = await pool.query<{ transfer_id: string; kind: string; debit_wallet_id: string; credit_wallet_id: string; asset: string; amount: string; hold_id: string | null; fault_key: string | null }>(
    `select transfer_id, kind, debit_wallet_id, credit_wallet_id, asset, amount::text, hold_id, metadata->>'fault_key' as fault_key
       from transfers where tenant_id = $1`,
    [tenantId],
  );
  const accounts = await pool.query<{ wallet_id: string; asset: string; credits_posted: string; debits_posted: string; debits_pending: string }>(
    `select wallet_id, asset, credits_posted::text, debits_posted::text, debits_pending::text from accounts where tenant_id = $1`,
    [tenantId],
  );
  const holds = await pool.query<{ hold_id: string; wallet_id: string; asset: string; amount: string; status: string }>(
    "select hold_id, wallet_id, asset, amount::text, status from holds where tenant_id = $1",
    [tenantId],
  );
  const events = await pool.query<{ event_id: string; type: string; published: boolean }>(
    "select event_id, type, published_at is not null as published from events where tenant_id = $1",
    [tenantId],
  );
  return {
    idempotency: idempotency.rows.map((r) => ({ key: r.key, command: r.command, ok: r.ok, reason: r.reason, transferId: r.transfer_id })),
    transfers: transfers.rows.map((r) => ({
      transferId: r.transfer_id,
      kind: r.kind,
      debitWalletId: r.debit_wallet_id,
      creditWalletId: r.credit_wallet_id,
      asset: r.asset,
      amount: BigInt(r.amount),
      holdId: r.hold_id,
      faultKey: r.fault_key,
    })),
    accounts: accounts.rows.map((r) => ({
      walletId: r.wallet_id,
      asset: r.asset,
      creditsPosted: BigInt(r.credits_posted),
      debitsPosted: BigInt(r.debits_posted),
      debitsPending: BigInt(r.debits_pending),
    })),
    holds: holds.rows.map((r) => ({ holdId: r.hold_id, walletId: r.wallet_id, asset: r.asset, amount: BigInt(r.amount), status: r.status })),
    events: events.rows.map((r) => ({ eventId: r.event_id, type: r.type, published: r.published })),
    invariantViolations: await checkInvariants(pool),
  };
}

/**
 * The event id (`Nats-Msg-Id`, equal to `ce-id`) of every message in `streamName`, in stream
 * order, read with an ordered consumer from the first message to the last one the stream held
 * when the read began.
 */
export async function readStreamEventIds(urls: readonly string[], streamName: string): Promise<string[]> {
  const nc = await connect({ servers: [...urls], timeout: NATS_CONNECT_TIMEOUT_MS });
  try {
    const jsm = await jetstreamManager(nc);
    const { state } = await jsm.streams.info(streamName);
    const ids: string[] = [];
    if (state.messages === 0) return ids;
    const consumer = await jetstream(nc).consumers.get(streamName, { deliver_policy: DeliverPolicy.All });
    const deadlineMs = Date.now() + STREAM_READ_TIMEOUT_MS;
    let lastSeq = 0;
    while (lastSeq < state.last_seq) {
      if (Date.now() > deadlineMs) throw new Error(`reading ${streamName} took longer than ${STREAM_READ_TIMEOUT_MS} ms (at ${lastSeq} of ${state.last_seq})`);
      const batch = await consumer.fetch({ max_messages: FETCH_BATCH_MAX, expires: FETCH_EXPIRES_MS });
      for await (const message of batch) {
        ids.push(message.headers?.get("Nats-Msg-Id") || message.headers?.get("ce-id") || `(no id at ${message.seq})`);
        lastSeq = message.seq;
        if (lastSeq >= state.last_seq) break;
      }
    }
    return ids;
  } finally {
    await nc.close();
  }
}
