-- An atomic batch's results collected in linear time (docs/performance.md, "A batch's results
-- in linear time").
--
-- 0016's ledger_execute_batch appended each command's result to a jsonb array with `||`, which
-- copies the whole array every time: n²/2 copies for a batch of n commands (up to 100). 0022
-- fixed the same pattern in group commit's ledger_command_batch. The results now grow in a
-- PL/pgSQL array, in place, and become one jsonb array at the end; nothing else changes.
create or replace function ledger_execute_batch(p_tenant uuid, p_key text, p_fingerprint bytea,
                                     p_now timestamptz, p_batch jsonb) returns jsonb
language plpgsql volatile as $$
declare
  v_commands jsonb := p_batch->'commands';
  v_count    integer := jsonb_array_length(p_batch->'commands');
  v_answer   jsonb;
  v_result   jsonb;
  v_results  jsonb[] := '{}';
  v_at       integer;
  w          record;
begin
  v_answer := ledger_idem_begin(p_tenant, p_key, 'ExecuteBatch', p_fingerprint, p_now);
  if v_answer is not null then
    return v_answer;
  end if;
  perform set_config('holdfast.key_id', coalesce(p_batch->>'key_id', ''), true);
  perform set_config('holdfast.batch_id', p_batch->>'batch_id', true);
  begin
    for w in select * from ledger_batch_wallets(p_tenant, v_commands) order by wallet_id loop
      if w.creates then
        perform ledger_ensure_wallet(p_tenant, w.wallet_id, p_now);
      end if;
      perform ledger_lock_wallet(p_tenant, w.wallet_id);
    end loop;
    for i in 0 .. v_count - 1 loop
      v_at := i;
      v_result := ledger_command_dispatch(p_tenant, v_commands->i->>'command',
        p_key || chr(31) || i, p_fingerprint, p_now, v_commands->i->'args');
      if (v_result->>'ok')::boolean is not true then
        raise exception 'batch command % refused', i using errcode = 'HFB01';
      end if;
      v_results := v_results || (v_result - 'replayed');
    end loop;
    delete from idempotency_keys
     where tenant_id = p_tenant
       and idempotency_key in (select p_key || chr(31) || g from generate_series(0, v_count - 1) g);
    v_answer := jsonb_build_object('ok', true, 'batch_id', p_batch->>'batch_id', 'results', to_jsonb(v_results));
  exception
    when sqlstate 'HFB01' then
      v_answer := ledger_batch_refusal(v_result, v_at);
    when numeric_value_out_of_range then
      v_answer := ledger_batch_refusal(
        ledger_refusal('AMOUNT_OVERFLOW', 'the resulting balance would overflow int64'), v_at);
  end;
  perform set_config('holdfast.batch_id', '', true);
  return ledger_idem_finish(p_tenant, p_key, v_answer);
end $$;

-- CREATE OR REPLACE resets SECURITY DEFINER and the search_path: set them again.
call holdfast_secure_functions();
