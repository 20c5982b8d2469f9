// Goal: the journal is tamper-evident (issue 12, finding 6). Every journal row of a tenant is
// linked into one hash chain in commit order, also under concurrent commands and group commit;
// every journal row and event records the API key that caused it; `holdfast verify` recomputes
// the chain and the invariants and names the row when someone with the owner's rights edited,
// deleted or re-hashed rows; chain heads are checkpointed; admin actions land in an append-only
// audit log that AdminService.ListAuditLog pages through.
// Method: a ledger core with group commit on a fresh database (createTestLedger), driven
// directly; tampering is done as the superuser (the owner), disabling the append-only triggers
// of the journal and the chain exactly as an attacker with the owner's credentials would; each
// tampering test uses a tenant of its own and runs `holdfast verify --tenant` through the CLI's
// main(). The audit log is exercised over the wire against a real server (startTestServer).
import { randomUUID } from "node:crypto";
import { Code, ConnectError } from "@connectrpc/connect";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import pino from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AdminService, Role } from "@holdfast/gen/holdfast/v1/admin_pb";
import { WalletStatus } from "@holdfast/gen/holdfast/v1/types_pb";
import { WebhookService } from "@holdfast/gen/holdfast/v1/webhooks_pb";
import { main } from "@holdfast/cli/main";
import { chainHash, verifyLedger } from "@holdfast/cli/verify";
import type { Caller } from "@holdfast/ledger/domain";
import { connect } from "@nats-io/transport-node";
import { chainHeadSubject } from "@holdfast/common/nats";
import { createChainHeadPublisher, startChainCheckpoints } from "@holdfast/ledger/chain-checkpoints";
import { createTestLedger, key, quietLogger } from "./support/ledger.js";
import { startNatsServer } from "./support/nats.js";
import { startTestServer } from "./support/server.js";
import { loopback_networks } from "./support/webhooks.js";

let t: Awaited<ReturnType<typeof createTestLedger>>;

beforeAll(async () => {
  t = await createTestLedger({ groupCommit: true });
});
afterAll(async () => {
  await t?.close();
});

const KEY_A = "0123456789abcdef";
const KEY_B = "fedcba9876543210";

/** A tenant of its own for one test, acting with API key `keyId`. */
async function tenant(keyId: string | null = KEY_A): Promise<Caller> {
  return { ...(await t.newTenant()), keyId };
}

/** Deposits, a hold captured, a spend, a refund and a transfer: journal rows of every common kind. */
async function someActivity(caller: Caller, wallet = `w_${randomUUID().slice(0, 8)}`): Promise<void> {
  const m = {};
  await t.ledger.deposit(caller, { walletId: wallet, asset: "USD", amount: 1000n, idempotencyKey: key(), metadata: { order: "o1" } });
  const hold = await t.ledger.reserve(caller, { walletId: wallet, asset: "USD", amount: 300n, holdId: "", ttlSeconds: 60, idempotencyKey: key(), metadata: m });
  if (!hold.ok) throw new Error(hold.reason);
  await t.ledger.capture(caller, { holdId: hold.hold.holdId, amount: 200n, idempotencyKey: key(), metadata: m });
  const spent = await t.ledger.spend(caller, { walletId: wallet, asset: "USD", amount: 100n, idempotencyKey: key(), metadata: m });
  if (!spent.ok) throw new Error(spent.reason);
  await t.ledger.refund(caller, { transferId: spent.transfer.transferId, amount: 40n, idempotencyKey: key(), metadata: m });
  await t.ledger.transfer(caller, { fromWalletId: wallet, toWalletId: `${wallet}_b`, asset: "USD", amount: 50n, idempotencyKey: key(), metadata: m });
}

/** Runs `holdfast verify` through the CLI; returns the exit code and what it printed. */
async function verify(...args: string[]): Promise<{ code: number; out: string; err: string }> {
  const out: string[] = [];
  const err: string[] = [];
  const code = await main(["node", "holdfast", "--database-url", t.db.url, "verify", ...args], {
    out: (l) => void out.push(l),
    err: (l) => void err.push(l),
  });
  return { code, out: out.join("\n"), err: err.join("\n") };
}

/**
 * Runs SQL as the owner with the append-only triggers of the journal and of the chain off, as a
 * tamperer would (the chain trigger too: a rewritten row is not linked again).
 */
async function tamper(sql: string, values: unknown[] = []): Promise<void> {
  const client = await t.pool.connect();
  try {
    await client.query("begin");
    await client.query("alter table transfers disable trigger user");
    await client.query("alter table journal_chain disable trigger journal_chain_append_only");
    await client.query(sql, values);
    await client.query("alter table journal_chain enable trigger journal_chain_append_only");
    await client.query("alter table transfers enable trigger user");
    await client.query("commit");
  } finally {
    client.release();
  }
}

interface LinkRow {
  lane: number;
  chain_seq: string;
  transfer_id: string;
  prev_hash: Buffer;
  row_hash: Buffer;
  key_id: string | null;
}

async function chainOf(tenantId: string): Promise<LinkRow[]> {
  const { rows } = await t.pool.query<LinkRow>(
    `select c.lane, c.chain_seq::text, c.transfer_id::text, c.prev_hash, c.row_hash, t.key_id
       from journal_chain c join transfers t using (tenant_id, transfer_id)
      where c.tenant_id = $1 order by c.lane, c.chain_seq`,
    [tenantId],
  );
  return rows;
}

describe("the journal hash chain", () => {
  it("links every row of a tenant from 1 without gaps, each prev_hash the row before's hash", async () => {
    const caller = await tenant();
    await someActivity(caller);
    const rows = await chainOf(caller.tenantId);
    // One command after another: each commit found lane 0 free, so it is the only lane.
    expect(new Set(rows.map((r) => r.lane))).toEqual(new Set([0]));
    expect(rows.map((r) => Number(r.chain_seq))).toEqual(rows.map((_, i) => i + 1));
    expect(rows[0]!.prev_hash.equals(Buffer.alloc(32))).toBe(true);
    for (let i = 1; i < rows.length; i++) {
      expect(rows[i]!.prev_hash.equals(rows[i - 1]!.row_hash), `row ${i + 1}`).toBe(true);
    }
    const { rows: head } = await t.pool.query<{ chain_seq: string; head_hash: Buffer }>(
      "select chain_seq::text, head_hash from journal_chain_heads where tenant_id = $1",
      [caller.tenantId],
    );
    expect(head[0]!.chain_seq).toBe(String(rows.length));
    expect(head[0]!.head_hash.equals(rows.at(-1)!.row_hash)).toBe(true);
  });

  it("is recomputed independently of the database's own hash function", async () => {
    const caller = await tenant();
    await someActivity(caller);
    const { rows } = await t.pool.query(
      `select t.tenant_id::text, c.chain_seq::text, t.transfer_id::text, t.kind, t.debit_wallet_id, t.credit_wallet_id,
              t.asset, t.amount::text, t.hold_id, t.refund_of::text, t.metadata::text,
              ((extract(epoch from t.created_at) * 1000000)::bigint)::text as created_us, t.grants::text, t.key_id,
              c.prev_hash, c.row_hash, ledger_chain_hash(c.prev_hash, t, c.chain_seq) as sql_hash
         from journal_chain c join transfers t using (tenant_id, transfer_id)
        where c.tenant_id = $1 order by c.chain_seq`,
      [caller.tenantId],
    );
    expect(rows.length).toBeGreaterThan(5);
    for (const row of rows) {
      expect(chainHash(row.prev_hash, row).toString("hex")).toBe(row.row_hash.toString("hex"));
      expect(row.sql_hash.toString("hex")).toBe(row.row_hash.toString("hex"));
    }
  });

  it("stays unbroken per tenant under concurrent commands, group commit and two tenants", async () => {
    const [a, b] = [await tenant(KEY_A), await tenant(KEY_B)];
    const wallets = ["hot", "c1", "c2", "c3"];
    for (const caller of [a, b]) {
      for (const w of wallets) {
        await t.ledger.deposit(caller, { walletId: w, asset: "USD", amount: 1_000_000n, idempotencyKey: key(), metadata: {} });
      }
    }
    const spends = [a, b].flatMap((caller) =>
      Array.from({ length: 60 }, (_, i) =>
        t.ledger.spend(caller, { walletId: i % 2 === 0 ? "hot" : wallets[1 + (i % 3)]!, asset: "USD", amount: 1n, idempotencyKey: key(), metadata: {} }),
      ),
    );
    const results = await Promise.all(spends);
    expect(results.every((r) => r.ok)).toBe(true);
    expect(t.ledger.groupCommitStats()!.batchSizeMax).toBeGreaterThan(1);
    for (const caller of [a, b]) {
      const report = await verifyLedger(t.pool, { tenantId: caller.tenantId });
      expect(report.tenants[0]).toMatchObject({ rows: wallets.length + 60, problems: [] });
      expect(report.invariantViolations).toEqual([]);
    }
  });

  it("links concurrent commits of one tenant in lanes: each lane gapless, each transaction in one lane, every row once", async () => {
    const caller = await tenant();
    const wallets = Array.from({ length: 24 }, (_, i) => `lane_${i}`);
    await Promise.all(wallets.map((w) => t.ledger.deposit(caller, { walletId: w, asset: "USD", amount: 1_000n, idempotencyKey: key(), metadata: {} })));
    const spends = Array.from({ length: 240 }, (_, i) =>
      t.ledger.spend(caller, { walletId: wallets[i % wallets.length]!, asset: "USD", amount: 1n, idempotencyKey: key(), metadata: {} }),
    );
    expect((await Promise.all(spends)).every((r) => r.ok)).toBe(true);

    const rows = await chainOf(caller.tenantId);
    const lanes = new Map<number, LinkRow[]>();
    for (const r of rows) lanes.set(r.lane, [...(lanes.get(r.lane) ?? []), r]);
    // Twenty pool connections committing at once: more than one lane was needed.
    expect(lanes.size).toBeGreaterThan(1);
    for (const [lane, links] of lanes) {
      expect(links.map((r) => Number(r.chain_seq)), `lane ${lane}`).toEqual(links.map((_, i) => i + 1));
      expect(links[0]!.prev_hash.equals(Buffer.alloc(32)), `lane ${lane}`).toBe(true);
      for (let i = 1; i < links.length; i++) {
        expect(links[i]!.prev_hash.equals(links[i - 1]!.row_hash), `lane ${lane} row ${i + 1}`).toBe(true);
      }
    }
    const { rows: counts } = await t.pool.query<{ transfers: number; links: number; linked: number; split: number; batched: number }>(
      `select (select count(*)::int from transfers where tenant_id = $1) as transfers,
              (select count(*)::int from journal_chain where tenant_id = $1) as links,
              (select count(distinct transfer_id)::int from journal_chain where tenant_id = $1) as linked,
              (select count(*)::int from (select t.xmin::text from transfers t join journal_chain c using (tenant_id, transfer_id)
                                           where t.tenant_id = $1 group by t.xmin::text having count(distinct c.lane) > 1) x) as split,
              (select count(*)::int from (select xmin::text from transfers where tenant_id = $1
                                           group by xmin::text having count(*) > 1) x) as batched`,
      [caller.tenantId],
    );
    expect(counts[0]).toMatchObject({ transfers: wallets.length + 240, links: wallets.length + 240, linked: wallets.length + 240, split: 0 });
    // Group commit put several rows in one transaction, so "each transaction in one lane" was tested.
    expect(counts[0]!.batched).toBeGreaterThan(0);
    const { rows: heads } = await t.pool.query<{ lane: number; chain_seq: string; head_hash: Buffer }>(
      "select lane, chain_seq::text, head_hash from journal_chain_heads where tenant_id = $1",
      [caller.tenantId],
    );
    // Every lane with links has its head at its last link. A lane can also be empty: created by
    // a commit that then found an older lane free and took that one instead.
    for (const lane of lanes.keys()) expect(heads.map((h) => h.lane)).toContain(lane);
    for (const head of heads) {
      const links = lanes.get(head.lane) ?? [];
      expect(head.chain_seq, `lane ${head.lane}`).toBe(String(links.length));
      expect(head.head_hash.equals(links.at(-1)?.row_hash ?? Buffer.alloc(32)), `lane ${head.lane}`).toBe(true);
    }
    const report = await verifyLedger(t.pool, { tenantId: caller.tenantId });
    expect(report.tenants[0]).toMatchObject({ rows: wallets.length + 240, problems: [] });
    expect(report.tenants[0]!.lanes.map((l) => l.lane)).toEqual(heads.map((h) => h.lane).sort((a, b) => a - b));
  });

  it("records the acting key on every journal row and event, per command inside one batch", async () => {
    const caller = await tenant(KEY_A);
    const other = { ...caller, keyId: KEY_B };
    await t.ledger.deposit(caller, { walletId: "w", asset: "USD", amount: 100n, idempotencyKey: key(), metadata: {} });
    // Concurrent commands of one wallet go out as one batch (one transaction) with two keys.
    await Promise.all(
      Array.from({ length: 10 }, (_, i) =>
        t.ledger.spend(i % 2 === 0 ? caller : other, { walletId: "w", asset: "USD", amount: 1n, idempotencyKey: `spend-${i}`, metadata: {} }),
      ),
    );
    const { rows } = await t.pool.query<{ key_id: string | null; idempotency_key: string }>(
      `select t.key_id, i.idempotency_key from transfers t
         join idempotency_keys i on i.tenant_id = t.tenant_id and i.response->'transfer'->>'transfer_id' = t.transfer_id::text
        where t.tenant_id = $1 and t.kind = 'spend'`,
      [caller.tenantId],
    );
    expect(rows).toHaveLength(10);
    for (const row of rows) {
      expect(row.key_id).toBe(Number(row.idempotency_key.split("-")[1]) % 2 === 0 ? KEY_A : KEY_B);
    }
    const { rows: events } = await t.pool.query<{ type: string; key_id: string | null; transfer_id: string }>(
      "select type, key_id, data->'transfer'->>'transfer_id' as transfer_id from events where tenant_id = $1",
      [caller.tenantId],
    );
    const keyOfTransfer = new Map((await chainOf(caller.tenantId)).map((r) => [r.transfer_id, r.key_id]));
    expect(events).toHaveLength(11);
    for (const event of events) {
      expect(event.key_id, event.type).toBe(keyOfTransfer.get(event.transfer_id));
    }
  });

  it("leaves key_id empty for what no key caused (hold expiry by the worker) and sets it for wallet updates", async () => {
    const caller = await tenant(KEY_B);
    await t.ledger.deposit(caller, { walletId: "w", asset: "USD", amount: 100n, idempotencyKey: key(), metadata: {} });
    await t.ledger.reserve(caller, { walletId: "w", asset: "USD", amount: 10n, holdId: `h_${randomUUID()}`, ttlSeconds: 1, idempotencyKey: key(), metadata: {} });
    await t.pool.query("select * from ledger_expire_batch(now() + interval '1 day', 1000)");
    await t.ledger.updateWallet(caller, { walletId: "w", status: "frozen", creditLimits: [], metadata: {} });
    const { rows } = await t.pool.query<{ type: string; key_id: string | null }>(
      "select type, key_id from events where tenant_id = $1 order by seq",
      [caller.tenantId],
    );
    expect(rows).toEqual([
      { type: "holdfast.deposit.completed", key_id: KEY_B },
      { type: "holdfast.hold.created", key_id: KEY_B },
      { type: "holdfast.hold.expired", key_id: null },
      { type: "holdfast.wallet.updated", key_id: KEY_B },
    ]);
    expect((await chainOf(caller.tenantId)).map((r) => r.key_id)).toEqual([KEY_B, KEY_B, null]);
  });
});

describe("holdfast verify", () => {
  it("passes an untouched ledger and prints a summary", async () => {
    const caller = await tenant();
    await someActivity(caller);
    const { code, out } = await verify("--tenant", caller.tenantId);
    expect(code, out).toBe(0);
    expect(out).toMatch(new RegExp(`tenant ${caller.tenantId}: \\d+ journal rows, chain intact, head row \\d+ [0-9a-f]{16}`));
    expect(out).toContain("invariants: ok");
    expect(out).toMatch(/verified 1 tenant\(s\), \d+ journal rows: ok$/);
  });

  it("names a row whose amount the owner changed, and the invariants it broke", async () => {
    const caller = await tenant();
    await someActivity(caller);
    const row = (await chainOf(caller.tenantId))[0]!;
    await tamper("update transfers set amount = amount + 1 where tenant_id = $1 and transfer_id = $2", [caller.tenantId, row.transfer_id]);
    const { code, out, err } = await verify("--tenant", caller.tenantId);
    expect(code).toBe(1);
    expect(out).toContain(`journal row 1 (transfer ${row.transfer_id}): content does not match its hash`);
    expect(out).toContain("an account's stored balance differs from its journal");
    expect(out).toContain("MISMATCH");
    expect(err).toContain("verification failed: 1 journal chain problem(s)");
  });

  it("names the next row when the owner also recomputed the edited row's hash", async () => {
    const caller = await tenant();
    await someActivity(caller);
    const rows = await chainOf(caller.tenantId);
    await tamper(
      `do $$
       declare r transfers;
       begin
         select * into r from transfers where tenant_id = '${caller.tenantId}' and transfer_id = '${rows[0]!.transfer_id}';
         r.metadata := '{"order": "forged"}';
         update transfers set metadata = r.metadata where tenant_id = r.tenant_id and transfer_id = r.transfer_id;
         update journal_chain set row_hash = ledger_chain_hash(prev_hash, r, 1)
          where tenant_id = r.tenant_id and chain_seq = 1;
       end $$`,
    );
    const { code, out } = await verify("--tenant", caller.tenantId);
    expect(code).toBe(1);
    expect(out).not.toContain("journal row 1 ");
    expect(out).toContain(`journal row 2 (transfer ${rows[1]!.transfer_id}): prev_hash`);
  });

  it("names a deleted journal row, a deleted link in the middle and one at the end", async () => {
    const caller = await tenant();
    await someActivity(caller);
    const rows = await chainOf(caller.tenantId);
    const n = rows.length;
    await tamper("delete from transfers where tenant_id = $1 and transfer_id = $2", [caller.tenantId, rows[1]!.transfer_id]);
    await tamper("delete from journal_chain where tenant_id = $1 and chain_seq in (4, $2)", [caller.tenantId, n]);
    const { code, out } = await verify("--tenant", caller.tenantId);
    expect(code).toBe(1);
    expect(out).toContain(`journal row 2 (transfer ${rows[1]!.transfer_id}): missing from the journal`);
    expect(out).toContain(`journal row 5 (transfer ${rows[4]!.transfer_id}): follows row 3; rows 4-4 are missing`);
    expect(out).toContain(`chain head: row ${n} `);
    expect(out).toContain(`but the chain ends at row ${n - 1} `);
    expect(out).toContain(`transfer ${rows[3]!.transfer_id}: in the journal but in no link of the chain`);
    expect(out).toContain(`transfer ${rows[n - 1]!.transfer_id}: in the journal but in no link of the chain`);
  });

  it("catches a chain rewritten from the edited row on, head included, by its checkpoint", async () => {
    const caller = await tenant();
    await someActivity(caller);
    const published = await startChainCheckpoints({ pool: t.pool, logger: quietLogger, intervalSeconds: 0 }).checkpoint();
    const mine = published.find((c) => c.tenantId === caller.tenantId)!;
    expect(mine.chainSeq).toBeGreaterThan(2n);
    // The thorough tamperer: edit row 2 and recompute every hash after it, and the head.
    await tamper(
      `do $$
       declare c journal_chain; r transfers; v_prev bytea;
       begin
         for c in select * from journal_chain where tenant_id = '${caller.tenantId}' order by chain_seq loop
           if c.chain_seq >= 2 then
             select * into r from transfers where tenant_id = c.tenant_id and transfer_id = c.transfer_id;
             if c.chain_seq = 2 then
               r.metadata := '{"order": "forged"}';
               update transfers set metadata = r.metadata where tenant_id = r.tenant_id and transfer_id = r.transfer_id;
             end if;
             c.prev_hash := v_prev;
             c.row_hash := ledger_chain_hash(c.prev_hash, r, c.chain_seq);
             update journal_chain set prev_hash = c.prev_hash, row_hash = c.row_hash
              where tenant_id = c.tenant_id and chain_seq = c.chain_seq;
           end if;
           v_prev := c.row_hash;
         end loop;
         update journal_chain_heads set head_hash = v_prev where tenant_id = '${caller.tenantId}';
       end $$`,
    );
    const { code, out } = await verify("--tenant", caller.tenantId);
    expect(code).toBe(1);
    expect(out).toContain(`journal row ${mine.chainSeq} (transfer`);
    expect(out).toContain("differs from the checkpoint of its chain head");
    expect(out).not.toContain("content does not match");
  });

  it("names the lane of a rewritten row in a lane other than 0", async () => {
    const caller = await tenant();
    const wallets = Array.from({ length: 16 }, (_, i) => `lane_${i}`);
    await Promise.all(wallets.map((w) => t.ledger.deposit(caller, { walletId: w, asset: "USD", amount: 1_000n, idempotencyKey: key(), metadata: {} })));
    await Promise.all(
      Array.from({ length: 160 }, (_, i) => t.ledger.spend(caller, { walletId: wallets[i % wallets.length]!, asset: "USD", amount: 1n, idempotencyKey: key(), metadata: {} })),
    );
    const row = (await chainOf(caller.tenantId)).find((r) => r.lane > 0 && r.chain_seq === "2")!;
    expect(row).toBeDefined();
    await tamper("update transfers set metadata = '{\"forged\": true}' where tenant_id = $1 and transfer_id = $2", [caller.tenantId, row.transfer_id]);
    const { code, out } = await verify("--tenant", caller.tenantId);
    expect(code).toBe(1);
    expect(out).toContain(`lane ${row.lane}, journal row 2 (transfer ${row.transfer_id}): content does not match its hash`);
    expect(out).toMatch(new RegExp(`tenant ${caller.tenantId}: \\d+ journal rows, 1 problem\\(s\\), \\d+ lanes, head rows 0:\\d+ [0-9a-f]{16}, 1:`));
  });

  it("with --tenant checks that tenant only; without it, every tenant", async () => {
    const [broken, fine] = [await tenant(), await tenant()];
    await someActivity(broken);
    await someActivity(fine);
    const first = (await chainOf(broken.tenantId))[0]!;
    await tamper("update transfers set asset = 'EUR' where tenant_id = $1 and transfer_id = $2", [broken.tenantId, first.transfer_id]);
    expect((await verify("--tenant", fine.tenantId)).code).toBe(0);
    const all = await verify();
    expect(all.code).toBe(1);
    expect(all.out).toContain(`tenant ${broken.tenantId}: `);
    expect(all.out).toContain(`tenant ${fine.tenantId}: `);
    expect((await verify("--tenant", "not-a-uuid")).err).toContain("--tenant must be a tenant id");
  });
});

describe("chain checkpoints", () => {
  it("records and logs a tenant's head once it moved, and not again within the interval", async () => {
    const caller = await tenant();
    await someActivity(caller);
    const lines: Record<string, unknown>[] = [];
    const logger = pino({ level: "info" }, { write: (line: string) => void lines.push(JSON.parse(line) as Record<string, unknown>) });
    const checkpoints = startChainCheckpoints({ pool: t.pool, logger, intervalSeconds: 3600 });
    const first = await checkpoints.checkpoint();
    const mine = first.find((c) => c.tenantId === caller.tenantId);
    const rows = await chainOf(caller.tenantId);
    expect(mine).toEqual({ tenantId: caller.tenantId, lane: 0, chainSeq: BigInt(rows.length), headHash: rows.at(-1)!.row_hash.toString("hex"), recordedAt: expect.any(Date) });
    expect(lines).toContainEqual(expect.objectContaining({ msg: "journal chain head", tenantId: caller.tenantId, lane: 0, chainSeq: String(rows.length) }));
    await t.ledger.deposit(caller, { walletId: "w", asset: "USD", amount: 1n, idempotencyKey: key(), metadata: {} });
    expect((await checkpoints.checkpoint()).find((c) => c.tenantId === caller.tenantId)).toBeUndefined();
    checkpoints.stop();
    await expect(t.pool.query("delete from journal_chain_checkpoints where tenant_id = $1", [caller.tenantId])).rejects.toThrow(/append-only/);
  });
});

describe("chain heads on NATS", () => {
  it("publishes each new head on <namespace>.chain.<tenant>, outside the events stream, and a NATS outage loses only that copy", async () => {
    const caller = await tenant();
    await someActivity(caller);
    const namespace = `chain${randomUUID().slice(0, 8)}`;
    const nats = await startNatsServer();
    const nc = await connect({ servers: nats.url });
    const sub = nc.subscribe(chainHeadSubject(namespace, caller.tenantId), { max: 1 });
    await nc.flush();
    const publisher = createChainHeadPublisher({ natsUrl: nats.url, natsTls: null, namespace, logger: quietLogger });
    const checkpoints = startChainCheckpoints({ pool: t.pool, logger: quietLogger, intervalSeconds: 0, publish: publisher.publish });
    try {
      const mine = (await checkpoints.checkpoint()).find((c) => c.tenantId === caller.tenantId)!;
      const rows = await chainOf(caller.tenantId);
      let received: { json: () => unknown; headers?: { get(k: string): string } } | undefined;
      for await (const m of sub) received = m;
      expect(received!.json()).toEqual({
        type: "holdfast.chain.head",
        tenant_id: caller.tenantId,
        lane: 0,
        chain_seq: String(rows.length),
        head_hash: rows.at(-1)!.row_hash.toString("hex"),
        recorded_at: mine.recordedAt.toISOString(),
      });
      expect(received!.headers?.get("Nats-Msg-Id")).toBe(`${caller.tenantId}:0:${rows.length}`);
    } finally {
      checkpoints.stop();
      await publisher.close();
      await nc.close();
      await nats.stop();
    }

    // NATS unreachable: the checkpoint row is still written and returned.
    await t.ledger.deposit(caller, { walletId: "w", asset: "USD", amount: 1n, idempotencyKey: key(), metadata: {} });
    const away = createChainHeadPublisher({ natsUrl: "nats://127.0.0.1:1", natsTls: null, namespace, logger: quietLogger });
    const offline = startChainCheckpoints({ pool: t.pool, logger: quietLogger, intervalSeconds: 0, publish: away.publish });
    try {
      const head = (await offline.checkpoint()).find((c) => c.tenantId === caller.tenantId);
      expect(head?.chainSeq).toBe(BigInt((await chainOf(caller.tenantId)).length));
    } finally {
      offline.stop();
      await away.close();
    }
  });
});

describe("the audit log", () => {
  let s: Awaited<ReturnType<typeof startTestServer>>;
  beforeAll(async () => {
    s = await startTestServer({ HOLDFAST_WEBHOOK_ALLOWED_NETWORKS: loopback_networks });
  });
  afterAll(async () => {
    await s?.close();
  });

  it("lists keys created and revoked, wallet updates and webhook endpoint changes, newest first, with the acting key", async () => {
    const admin = s.client(AdminService);
    const hooks = s.client(WebhookService);
    const adminKeyId = s.keys.admin.split("_")[1]!;
    const created = await admin.createApiKey({ name: "ci", role: Role.WRITER });
    await admin.revokeApiKey({ keyId: created.apiKey!.keyId });
    const wallet = `w_${randomUUID().slice(0, 8)}`;
    await s.app.ledger.deposit({ tenantId: s.tenantId, scopeWalletId: null }, { walletId: wallet, asset: "USD", amount: 10n, idempotencyKey: key(), metadata: {} });
    await admin.updateWallet({ walletId: wallet, status: WalletStatus.FROZEN, creditLimits: [{ asset: "USD", creditLimit: 500n }] });
    const endpoint = await hooks.createEndpoint({ url: "http://127.0.0.1:9/hooks", eventTypes: [] });
    const endpointId = endpoint.endpoint!.endpointId;
    await hooks.updateEndpoint({ endpointId, description: "renamed" });
    const rotated = await hooks.rotateEndpointSecret({ endpointId });
    await hooks.deleteEndpoint({ endpointId });

    const page = await admin.listAuditLog({});
    expect(page.entries.map((e) => [e.action, e.target, e.keyId])).toEqual([
      ["webhook_endpoint.deleted", endpointId, adminKeyId],
      ["webhook_endpoint.secret_rotated", endpointId, adminKeyId],
      ["webhook_endpoint.updated", endpointId, adminKeyId],
      ["webhook_endpoint.created", endpointId, adminKeyId],
      ["wallet.updated", wallet, adminKeyId],
      ["api_key.revoked", created.apiKey!.keyId, adminKeyId],
      ["api_key.created", created.apiKey!.keyId, adminKeyId],
    ]);
    expect(page.entries[4]!.details).toMatchObject({ status: "frozen", credit_limits: [{ asset: "USD", credit_limit: "500" }] });
    expect(page.entries[6]!.details).toMatchObject({ name: "ci", role: "writer" });
    expect(timestampDate(page.entries[0]!.occurredAt!).getTime()).toBeGreaterThan(Date.now() - 60_000);
    const everything = JSON.stringify(page.entries, (_k, v: unknown) => (typeof v === "bigint" ? String(v) : v));
    expect(everything).not.toContain(endpoint.secret);
    expect(everything).not.toContain(rotated.secret);
    expect(everything).not.toContain(created.secret);
  });

  it("pages, is for admin keys only, keeps tenants apart and refuses UPDATE and DELETE", async () => {
    const admin = s.client(AdminService);
    for (let i = 0; i < 3; i++) await admin.createApiKey({ name: `k${i}`, role: Role.READER });
    const first = await admin.listAuditLog({ pageSize: 2 });
    expect(first.entries).toHaveLength(2);
    const second = await admin.listAuditLog({ pageSize: 2, pageToken: first.nextPageToken });
    expect(second.entries[0]!.auditId < first.entries[1]!.auditId).toBe(true);
    const denied = await s.client(AdminService, "connect", s.keys.writer).listAuditLog({}).catch((e: unknown) => ConnectError.from(e));
    expect((denied as ConnectError).code).toBe(Code.PermissionDenied);
    const bad = await admin.listAuditLog({ pageToken: "garbage!" }).catch((e: unknown) => ConnectError.from(e));
    expect((bad as ConnectError).code).toBe(Code.InvalidArgument);

    const otherTenant = randomUUID();
    await s.app.pool.query("insert into tenants (id, name) values ($1, $2)", [otherTenant, `t-${otherTenant}`]);
    const { createApiKey } = await import("@holdfast/ledger/auth/api-keys");
    const otherAdmin = (await createApiKey(s.app.pool, { tenantId: otherTenant, name: "a", role: "admin" })).secret;
    expect((await s.client(AdminService, "connect", otherAdmin).listAuditLog({})).entries).toEqual([]);

    await expect(s.app.pool.query("update audit_log set target = 'x'")).rejects.toThrow(/append-only/);
    await expect(s.app.pool.query("delete from audit_log")).rejects.toThrow(/append-only/);
    await expect(s.app.pool.query("truncate audit_log")).rejects.toThrow(/append-only/);
  });
});
