-- The hash chain in lanes (docs/security.md, "Tamper evidence"; docs/performance.md, "The hash
-- chain's lanes").
--
-- Until now a tenant had one chain head, locked by every transaction of the tenant at its
-- commit and held until the commit's WAL flush was done. So a tenant's commits could not share
-- a flush: each waited for the one before it to be durable, and under concurrency the tenant's
-- commands ran one flush at a time (at 32 concurrent single-wallet Spends on this project's
-- benchmark machine: 275-328 commits/s with the chain, 810/s without it).
--
-- Now a tenant's chain has up to 16 lanes, each a chain of its own (its own sequence numbers
-- 1, 2, ..., prev_hash links and head) and each journal row is linked in exactly one lane. A
-- committing transaction takes the first lane no other transaction holds (FOR UPDATE SKIP
-- LOCKED), creating lanes as the tenant's concurrent commits need them, and links all its rows
-- in that lane: a lane still follows commit order, and up to 16 of a tenant's commits share a
-- flush. A transaction holds one lane at most, so lanes cannot deadlock; when all 16 are taken
-- it waits for one.
--
-- What the chain proves is unchanged: every link's hash covers its row and the previous link
-- of its lane, so a rewritten row breaks its lane from that row on; recomputing the lane's
-- hashes after it disagrees with the lane's checkpoints, which are recorded, logged and
-- published per lane. The lane is not part of the hash: a link moved to another lane has the
-- wrong prev_hash there. Rows linked before this migration are lane 0.

alter table journal_chain add column lane smallint not null default 0 check (lane between 0 and 15);
alter table journal_chain alter column lane drop default;
alter table journal_chain drop constraint journal_chain_pkey,
  add primary key (tenant_id, lane, chain_seq);

-- holder: the transaction that last moved the lane; while it runs, the lane is its own (it
-- holds the row lock) and its later rows go to the same lane.
alter table journal_chain_heads add column lane smallint not null default 0 check (lane between 0 and 15);
alter table journal_chain_heads alter column lane drop default;
alter table journal_chain_heads add column holder xid8;
alter table journal_chain_heads drop constraint journal_chain_heads_pkey,
  add primary key (tenant_id, lane);

alter table journal_chain_checkpoints add column lane smallint not null default 0 check (lane between 0 and 15);
alter table journal_chain_checkpoints alter column lane drop default;
alter table journal_chain_checkpoints drop constraint journal_chain_checkpoints_pkey,
  add primary key (tenant_id, lane, chain_seq);

-- Locks a lane of the tenant's chain for this transaction and returns its head: the lane this
-- transaction already holds (skip locked skips only other transactions' locks), else the first
-- free one, else a new one (up to 16), else it waits for one.
create or replace function ledger_chain_lock_head(p_tenant uuid) returns journal_chain_heads
language plpgsql volatile as $$
declare
  v_head  journal_chain_heads;
  v_lanes integer;
  v_lane  smallint;
begin
  loop
    select * into v_head from journal_chain_heads where tenant_id = p_tenant
     order by (holder = pg_current_xact_id()) is true desc, lane
     limit 1 for update skip locked;
    if found then
      return v_head;
    end if;
    select count(*) into v_lanes from journal_chain_heads where tenant_id = p_tenant;
    if v_lanes >= 16 then
      -- Drawn once: in the WHERE clause random() would be drawn again for every row.
      v_lane := floor(random() * 16);
      select * into v_head from journal_chain_heads
       where tenant_id = p_tenant and lane = v_lane for update;
      return v_head;
    end if;
    -- A concurrent transaction creating the same lane makes this wait for its commit; either
    -- way the next pass looks again.
    insert into journal_chain_heads (tenant_id, lane, chain_seq, head_hash, updated_at)
    values (p_tenant, v_lanes, 0, decode(repeat('00', 32), 'hex'), now())
    on conflict do nothing;
  end loop;
end $$;

-- Appends the link of journal row t after the head of this transaction's lane, and moves it.
create or replace function ledger_chain_append(t transfers) returns void language plpgsql volatile as $$
declare
  v_head journal_chain_heads := ledger_chain_lock_head(t.tenant_id);
  v_seq  bigint := v_head.chain_seq + 1;
  v_hash bytea := ledger_chain_hash(v_head.head_hash, t, v_seq);
begin
  insert into journal_chain (tenant_id, lane, chain_seq, transfer_id, prev_hash, row_hash)
  values (t.tenant_id, v_head.lane, v_seq, t.transfer_id, v_head.head_hash, v_hash);
  update journal_chain_heads
     set chain_seq = v_seq, head_hash = v_hash, holder = pg_current_xact_id(), updated_at = now()
   where tenant_id = t.tenant_id and lane = v_head.lane;
end $$;

-- Records the current head of up to p_heads_max lanes that moved since their last checkpoint
-- and whose last checkpoint is at least p_interval_seconds old. Reads the committed heads
-- without locking them, so it never waits for a command.
drop function ledger_chain_checkpoint(timestamptz, integer, integer);
create function ledger_chain_checkpoint(p_now timestamptz, p_interval_seconds integer,
                                        p_heads_max integer)
returns table (tenant_id uuid, lane smallint, chain_seq bigint, head_hash bytea)
language sql volatile as $$
  insert into journal_chain_checkpoints as c (tenant_id, lane, chain_seq, head_hash, recorded_at)
  select h.tenant_id, h.lane, h.chain_seq, h.head_hash, p_now
    from journal_chain_heads h
    left join lateral (select max(l.chain_seq) as chain_seq, max(l.recorded_at) as recorded_at
                         from journal_chain_checkpoints l
                        where l.tenant_id = h.tenant_id and l.lane = h.lane) last on true
   where h.chain_seq > coalesce(last.chain_seq, 0)
     and coalesce(last.recorded_at, '-infinity') <= p_now - make_interval(secs => p_interval_seconds)
   order by h.tenant_id, h.lane
   limit p_heads_max
  on conflict do nothing
  returning c.tenant_id, c.lane, c.chain_seq, c.head_hash
$$;

call holdfast_secure_functions();
