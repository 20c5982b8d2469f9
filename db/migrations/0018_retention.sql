-- Retention that keeps up with the write rate (docs/performance.md, "Retention"): published
-- events are pruned, and the tables that retention empties (idempotency records, events,
-- webhook deliveries and messages) get autovacuum settings that keep their dead rows reused
-- instead of growing the files.
--
-- Why batched deletes and not time partitions: a partitioned table's unique keys must include
-- the partition key, so idempotency_keys partitioned by created_at could hold one
-- (tenant_id, idempotency_key) twice, in two partitions, and a retried command would be applied
-- twice; events' keys (event_id, the stream's deduplication key, and the gapless
-- (tenant_id, wallet_id, seq)) would lose their guarantee the same way. So each table keeps its
-- keys, and retention deletes in short statements (a few thousand rows each, in index order of
-- age) that loop while behind and pause when caught up; autovacuum makes the freed space
-- reusable, so the file stops growing once the deletes keep pace with the inserts.

-- 1. Events are deleted oldest position first, so the prune walks this index.
create index events_by_position on events (position);

-- 2. What was pruned of each wallet: its events 1..pruned_seq are gone. pruned_links and
--    pruned_digest stand for the journal rows those events carried (one per journal row and
--    wallet, as invariant 5 counts them): their number, and the sum of
--    hashtextextended(transfer_id, 0). The invariant checker (and so holdfast verify) checks
--    "every journal row has exactly one event on each wallet it touched" above pruned_seq row
--    by row, and below it by this count and sum.
create table event_retention (
  tenant_id     uuid        not null,
  wallet_id     text        not null,
  pruned_seq    bigint      not null check (pruned_seq > 0),
  pruned_links  bigint      not null check (pruned_links >= 0),
  pruned_digest numeric     not null,
  pruned_at     timestamptz not null,
  primary key (tenant_id, wallet_id),
  foreign key (tenant_id, wallet_id) references wallets (tenant_id, wallet_id)
);

-- 3. Deletes up to p_rows_max events, oldest position first, stopping before the first one that
--    is unpublished or was published at or after p_published_before: so an unpublished event
--    is never deleted, and each wallet loses only a prefix of its sequence. (Within a wallet,
--    positions rise with seq: both are drawn under the wallet's lock. An event whose
--    transaction commits after this statement's snapshot was taken, with a lower position, is
--    its wallet's newest: the wallet was locked until then.) Returns the number deleted; fewer
--    than p_rows_max means caught up. Two short statements, so it holds its locks only for its
--    batch.
create function ledger_prune_events(p_published_before timestamptz, p_rows_max integer) returns integer
language plpgsql volatile as $$
declare
  n       integer;
  v_young bigint;
  v_old   bigint;
begin
  if p_rows_max is null or p_rows_max < 1 then
    raise exception 'ledger_prune_events: p_rows_max must be at least 1' using errcode = 'invalid_parameter_value';
  end if;
  -- The first position that stays, among the oldest p_rows_max. Computed once, before the
  -- delete: as a subquery of the delete's join it was evaluated again for every candidate,
  -- seconds of CPU per call on a table of 100,000 events even with nothing to prune.
  select coalesce(min(position) filter (where published_at is null or published_at >= p_published_before),
                  9223372036854775807),
         count(*) filter (where published_at < p_published_before)
    into v_young, v_old
    from (select position, published_at from events order by position limit p_rows_max) c;
  if v_old = 0 then
    return 0;   -- the oldest event is young or unpublished: nothing to prune (the usual case)
  end if;
  -- Deleted by position through the index. The delete runs on a newer snapshot than the
  -- select above, so it checks again that each row is published and old.
  with gone as (
    delete from events e
     where e.position = any (array(select position from events
                                    where position < v_young order by position limit p_rows_max))
       and e.published_at < p_published_before
    returning e.tenant_id, e.wallet_id, e.seq, e.data
  ), links as (
    select g.tenant_id, g.wallet_id, g.data->'transfer'->>'transfer_id' as transfer_id
      from gone g where g.data ? 'transfer'
    union all
    select g.tenant_id, g.wallet_id, l->>'transfer_id'
      from gone g cross join jsonb_array_elements(g.data->'token_transfers') l
     where g.data ? 'token_transfers'
  ), per_wallet as (
    select g.tenant_id, g.wallet_id, max(g.seq) as pruned_seq, count(*) as events,
           coalesce(l.links, 0) as links, coalesce(l.digest, 0) as digest
      from gone g
      left join (select tenant_id, wallet_id, count(*) as links, sum(hashtextextended(transfer_id, 0)) as digest
                   from links group by 1, 2) l using (tenant_id, wallet_id)
     group by g.tenant_id, g.wallet_id, l.links, l.digest
  ), recorded as (
    insert into event_retention as r (tenant_id, wallet_id, pruned_seq, pruned_links, pruned_digest, pruned_at)
    select tenant_id, wallet_id, pruned_seq, links, digest, now() from per_wallet
    on conflict (tenant_id, wallet_id) do update
      set pruned_seq = greatest(r.pruned_seq, excluded.pruned_seq),
          pruned_links = r.pruned_links + excluded.pruned_links,
          pruned_digest = r.pruned_digest + excluded.pruned_digest,
          pruned_at = excluded.pruned_at
    returning 1
  )
  select coalesce(sum(events), 0) into n from per_wallet;
  return n;
end $$;

insert into holdfast_entry_points (function_name, kind) values ('ledger_prune_events', 'definer');

-- 4. Autovacuum of the tables retention empties: a pass once 2% of the rows are dead (the
--    default, 20%, lets a table sit at a fifth dead before its space is reused), without the
--    cost delay (the tables stay as small as their retention keeps them, so a pass is short).
alter table idempotency_keys set (autovacuum_vacuum_scale_factor = 0.02, autovacuum_vacuum_insert_scale_factor = 0.02,
                                  autovacuum_analyze_scale_factor = 0.02, autovacuum_vacuum_cost_delay = 0);
alter table events set (autovacuum_vacuum_scale_factor = 0.02, autovacuum_vacuum_insert_scale_factor = 0.02,
                        autovacuum_analyze_scale_factor = 0.02, autovacuum_vacuum_cost_delay = 0);
alter table webhook_deliveries set (autovacuum_vacuum_scale_factor = 0.02, autovacuum_vacuum_insert_scale_factor = 0.02,
                                    autovacuum_analyze_scale_factor = 0.02, autovacuum_vacuum_cost_delay = 0);
alter table webhook_events set (autovacuum_vacuum_scale_factor = 0.02, autovacuum_vacuum_insert_scale_factor = 0.02,
                                autovacuum_analyze_scale_factor = 0.02, autovacuum_vacuum_cost_delay = 0);

call holdfast_secure_functions();
