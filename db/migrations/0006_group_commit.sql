-- Group commit: several commands of one wallet in one transaction.
--
-- On a hot wallet the row lock is held until the commit is flushed, so one command per
-- transaction caps the wallet at about 1 / (flush time + execution time). The service queues
-- the commands of a wallet while one of its batches is in flight and sends the queue as the
-- next batch: one round trip, one flush, one result per command.
--
-- No per-item savepoints are needed: ledger_command returns business refusals as values, so a
-- refused command changes nothing and the others go on. Anything raised (a racing unique
-- insert, an int64 overflow) aborts the whole batch, and the service then runs each command
-- of it alone, so one bad command never fails its neighbours.
create function ledger_command_batch(p_commands jsonb) returns jsonb
language plpgsql volatile as $$
declare
  c         jsonb;
  v_results jsonb := '[]'::jsonb;
begin
  for c in select value from jsonb_array_elements(p_commands) loop
    v_results := v_results || jsonb_build_array(ledger_command(
      (c->>'tenant_id')::uuid, c->>'command', c->>'key', decode(c->>'fingerprint', 'hex'),
      (c->>'now')::timestamptz, c->'args'));
  end loop;
  return v_results;
end $$;
