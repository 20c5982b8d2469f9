import type pg from "pg";
import type { Logger } from "pino";
import { headers as natsHeaders, type NatsConnection } from "@nats-io/transport-node";
import type { NatsTlsConfig } from "@holdfast/common/config";
import { chainHeadSubject, connectNats } from "@holdfast/common/nats";

/** How often the ledger looks for chain heads to publish. */
export const CHAIN_CHECKPOINT_POLL_MS = 60 * 1000;
/** Least time between two checkpoints of one lane; a head that did not move gets none. */
export const CHAIN_CHECKPOINT_INTERVAL_SECONDS = 5 * 60;
/** Lane heads checkpointed per statement, so one pass has a bounded cost. */
const CHAIN_CHECKPOINT_HEADS_MAX = 1000;

export interface ChainCheckpointsOptions {
  pool: pg.Pool;
  logger: Logger;
  pollMs?: number;
  intervalSeconds?: number;
  /** Sends each new head outside the database as well (see {@link createChainHeadPublisher}). */
  publish?: (head: ChainCheckpoint) => Promise<void>;
}

/** A published chain head: the head of one lane of a tenant's chain (migration 0020). */
export interface ChainCheckpoint {
  tenantId: string;
  lane: number;
  chainSeq: bigint;
  headHash: string;
  recordedAt: Date;
}

/**
 * Publishes the journal's chain heads (migrations 0011, 0020): every few minutes, for each lane
 * of a tenant's chain whose head moved, a row in the append-only journal_chain_checkpoints table
 * and a log line "journal chain head" with the lane, sequence number and hash, and, with
 * `publish`, a NATS message.
 * The log line and the message are the copies outside the database: whoever rewrites journal
 * rows and recomputes every hash after them still disagrees with the heads published before.
 * `holdfast verify` checks every checkpoint row. Several replicas may run this: the SQL records
 * a head once, and only the replica that recorded it publishes it.
 */
export function startChainCheckpoints(options: ChainCheckpointsOptions) {
  const { pool, logger } = options;
  const intervalSeconds = options.intervalSeconds ?? CHAIN_CHECKPOINT_INTERVAL_SECONDS;

  async function checkpoint(): Promise<ChainCheckpoint[]> {
    const { rows } = await pool.query<{ tenant_id: string; lane: number; chain_seq: string; head_hash: Buffer; recorded_at: Date }>({
      name: "ledger_chain_checkpoint",
      // recorded_at is the now() the function stored: one transaction, one now().
      text: "select tenant_id, lane, chain_seq::text, head_hash, now() as recorded_at from ledger_chain_checkpoint(now(), $1, $2)",
      values: [intervalSeconds, CHAIN_CHECKPOINT_HEADS_MAX],
    });
    const published = rows.map((r) => ({
      tenantId: r.tenant_id,
      lane: r.lane,
      chainSeq: BigInt(r.chain_seq),
      headHash: r.head_hash.toString("hex"),
      recordedAt: r.recorded_at,
    }));
    for (const head of published) {
      logger.info({ tenantId: head.tenantId, lane: head.lane, chainSeq: head.chainSeq.toString(), headHash: head.headHash }, "journal chain head");
      // The checkpoint row and the log line are written; a NATS outage loses only this copy.
      await options.publish?.(head).catch((err: unknown) => logger.warn({ err, tenantId: head.tenantId }, "journal chain head not published to NATS"));
    }
    return published;
  }

  const timer = setInterval(() => {
    checkpoint().catch((err: unknown) => logger.warn({ err }, "journal chain checkpoint failed; will retry"));
  }, options.pollMs ?? CHAIN_CHECKPOINT_POLL_MS);
  timer.unref();
  return { checkpoint, stop: () => clearInterval(timer) };
}

export interface ChainHeadPublisherOptions {
  natsUrl: string;
  natsTls: NatsTlsConfig | null;
  namespace: string;
  logger: Logger;
}

/**
 * Publishes chain heads on NATS as `holdfast.chain.head` messages, on
 * `<namespace>.chain.<tenant>` (docs/security.md, "Tamper evidence"). They stay out of the
 * events stream on purpose: a new event type there would reach every webhook endpoint that takes
 * all events. A subscriber, or a JetStream stream an operator adds on `<namespace>.chain.>`,
 * keeps a copy the database's owner cannot edit. Nats-Msg-Id is `<tenant>:<lane>:<chain_seq>`,
 * so a stream keeps each head once. Connects on first use: a ledger whose tenants write nothing never
 * opens this connection.
 */
export function createChainHeadPublisher(options: ChainHeadPublisherOptions) {
  let connection: Promise<NatsConnection> | null = null;
  return {
    async publish(head: ChainCheckpoint): Promise<void> {
      connection ??= connectNats(options.natsUrl, "holdfast-ledger-chain-heads", options.logger, options.natsTls).catch((err: unknown) => {
        connection = null;
        throw err;
      });
      const nc = await connection;
      const h = natsHeaders();
      h.set("Nats-Msg-Id", `${head.tenantId}:${head.lane}:${head.chainSeq}`);
      const body = JSON.stringify({
        type: "holdfast.chain.head",
        tenant_id: head.tenantId,
        lane: head.lane,
        chain_seq: head.chainSeq.toString(),
        head_hash: head.headHash,
        recorded_at: head.recordedAt.toISOString(),
      });
      nc.publish(chainHeadSubject(options.namespace, head.tenantId), body, { headers: h });
      await nc.flush();
    },
    async close(): Promise<void> {
      const pending = connection;
      connection = null;
      await pending?.then((nc) => nc.drain()).catch(() => undefined);
    },
  };
}
