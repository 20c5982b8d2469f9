-- Group commit's results collected in linear time (docs/performance.md, "A batch's results").
--
-- 0006's ledger_command_batch appended each command's result to a jsonb array with `||`,
-- which copies the whole array every time: a batch of n commands copied n²/2 results. At the
-- default 64 commands a batch, that was 5.6 ms of a 59 ms batch on the hot wallet (measured
-- with track_functions in the benchmark). A PL/pgSQL array grows in place, and to_jsonb makes
-- it one jsonb array at the end; the commands still run one at a time, in request order, and
-- the answer is the same array of one result per command.
create or replace function ledger_command_batch(p_commands jsonb) returns jsonb
language plpgsql volatile as $$
declare
  c         jsonb;
  v_results jsonb[] := '{}';
begin
  for c in select value from jsonb_array_elements(p_commands) loop
    v_results := v_results || ledger_command(
      (c->>'tenant_id')::uuid, c->>'command', c->>'key', decode(c->>'fingerprint', 'hex'),
      (c->>'now')::timestamptz, c->'args');
  end loop;
  return to_jsonb(v_results);
end $$;

-- CREATE OR REPLACE resets SECURITY DEFINER and the search_path: set them again.
call holdfast_secure_functions();
