/**
 * The dead-letter table (`billing_dead_letters`, migration 0005): usage a sink refused for
 * good, with the engine's answer, kept out of the way of the usage behind it.
 *
 * @module
 */
import type pg from "pg";
import type { UsageRecord } from "./usage.js";

/** One record to dead-letter. */
export interface DeadLetter {
  readonly record: UsageRecord;
  /** The engine's HTTP status; null when nothing was sent (the record could not be mapped). */
  readonly httpStatus: number | null;
  readonly answer: string;
  readonly request: unknown;
  readonly attempts: number;
}

/**
 * Writes dead letters in one statement. A transfer dead-lettered again (a backfill that hit
 * the same refusal) updates its row: the latest answer wins and the row is open again.
 */
export async function recordDeadLetters(pool: pg.Pool, sink: string, letters: readonly DeadLetter[], now: Date = new Date()): Promise<void> {
  if (letters.length === 0) return;
  await pool.query({
    name: "billing_dead_letter",
    text: `insert into billing_dead_letters as d
             (tenant_id, sink, transfer_id, kind, wallet_id, http_status, answer, request, attempts,
              first_failed_at, last_failed_at)
           select l.tenant_id, $1, l.transfer_id, l.kind, l.wallet_id, l.http_status, l.answer, l.request,
                  l.attempts, $2, $2
             from jsonb_to_recordset($3::jsonb) as l(tenant_id uuid, transfer_id uuid, kind text, wallet_id text,
                                                    http_status int, answer text, request jsonb, attempts int)
           on conflict (tenant_id, sink, transfer_id) do update
              set http_status = excluded.http_status, answer = excluded.answer, request = excluded.request,
                  attempts = d.attempts + excluded.attempts, last_failed_at = excluded.last_failed_at,
                  resolved_at = null`,
    values: [
      sink,
      now,
      JSON.stringify(
        letters.map((l) => ({
          tenant_id: l.record.tenantId,
          transfer_id: l.record.transferId,
          kind: l.record.kind,
          wallet_id: l.record.walletId,
          http_status: l.httpStatus,
          answer: l.answer,
          request: l.request,
          attempts: l.attempts,
        })),
      ),
    ],
  });
}

/** Marks open dead letters of these transfers resolved: a later send was accepted. */
export async function resolveDeadLetters(pool: pg.Pool, sink: string, records: readonly UsageRecord[], now: Date = new Date()): Promise<number> {
  if (records.length === 0) return 0;
  const result = await pool.query({
    name: "billing_dead_letter_resolve",
    text: `update billing_dead_letters d set resolved_at = $2
             from unnest($3::uuid[], $4::uuid[]) as k(tenant_id, transfer_id)
            where d.sink = $1 and d.tenant_id = k.tenant_id and d.transfer_id = k.transfer_id
              and d.resolved_at is null`,
    values: [sink, now, records.map((r) => r.tenantId), records.map((r) => r.transferId)],
  });
  return result.rowCount ?? 0;
}
