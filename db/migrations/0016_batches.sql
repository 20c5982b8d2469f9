-- Atomic batches: LedgerService.ExecuteBatch applies up to 100 wallet commands in one
-- transaction, all of them or none (docs/batches.md).
--
-- ledger_execute_batch is one round trip, like ledger_command:
--
-- 1. It claims the batch's idempotency key (ledger_idem_begin): a replay answers the recorded
--    results, or the recorded refusal, and touches nothing else.
-- 2. It locks every wallet the batch names, in wallet id order, before any command runs: the
--    one global order every command that locks two wallets follows (ledger_transfer), so
--    batches over the same wallets in any order of commands cannot deadlock each other or a
--    Transfer. A hold or a transfer a command names resolves to its wallet; a hold a Reserve
--    of the same batch creates is on a wallet that Reserve names. A wallet the batch creates
--    (Deposit, CreateGrant, a Transfer's destination) is inserted at its place in that order,
--    so waiting for another transaction's insert of it is ordered like a lock.
-- 3. It runs the commands in request order through ledger_command_dispatch, each seeing what
--    the ones before it did, inside one block with an exception handler (one subtransaction
--    for the whole batch, not one per command). The dispatch claims an idempotency key per
--    command; the batch derives them from its own key and the command's index with a control
--    character no caller key may contain (callers' keys are printable ASCII), and deletes them
--    before it returns: the batch's own record is what answers replays.
-- 4. The first refusal raises, which rolls the block back to its savepoint: no journal row,
--    no event, no balance change and no wallet of the batch remains. The refusal, with the
--    index of the command at fault, is recorded under the batch's key like any refusal. A sum
--    that would overflow int64 is recorded the same way, as AMOUNT_OVERFLOW. Anything else
--    raised (a deadlock, a racing insert of the same hold id) aborts the whole call, claim
--    included, and the service runs the batch again.
--
-- A batch bypasses group commit (services/ledger/src/domain/group-commit.ts): it is one
-- transaction of its own, never part of a wallet's queued batch. Joining one wallet's queue
-- would put the batch's other wallets' locks inside that wallet's transaction, after its lock
-- and out of the global order, and would let a refusal elsewhere in the queue's batch fall
-- back to running the batch's commands alone. Correctness never depends on the queue: the
-- wallet row lock serialises every writer (docs/architecture.md, "Hot wallets: who writes"),
-- so the queue's writer and a batch simply take turns on the lock.
--
-- Every event the batch writes carries its id: ledger_execute_batch sets holdfast.batch_id for
-- the transaction and a BEFORE INSERT trigger on events adds it to the event's data, whatever
-- function emits the event (as holdfast.key_id is stamped, migration 0011).

-- 1. The batch id on events.

create function ledger_stamp_batch() returns trigger language plpgsql as $$
declare
  v_batch text := nullif(current_setting('holdfast.batch_id', true), '');
begin
  if v_batch is not null then
    new.data := new.data || jsonb_build_object('batch_id', v_batch);
  end if;
  return new;
end $$;

create trigger events_batch before insert on events
  for each row execute function ledger_stamp_batch();

-- 2. The wallets a batch touches, each once, and whether a command of the batch creates it.
--    p_commands is the batch's [{command, args}]: a wallet is named by args.wallet_id,
--    from_wallet_id or to_wallet_id, or through args.hold_id (the hold's wallet) or a Refund's
--    refund_transfer_id (the wallet the transfer debited). Names that match nothing add
--    nothing; the command at fault then refuses (HOLD_NOT_FOUND, TRANSFER_NOT_FOUND).

create function ledger_batch_wallets(p_tenant uuid, p_commands jsonb)
returns table (wallet_id text, creates boolean) language sql stable as $$
  select n.wallet_id, bool_or(n.creates)
    from jsonb_array_elements(p_commands) c
    cross join lateral (
      select c->'args'->>'wallet_id', c->>'command' in ('Deposit', 'CreateGrant')
      union all
      select c->'args'->>'from_wallet_id', false
      union all
      select c->'args'->>'to_wallet_id', c->>'command' = 'Transfer'
      union all
      select h.wallet_id, false from holds h
       where h.tenant_id = p_tenant and h.hold_id = c->'args'->>'hold_id'
      union all
      select t.debit_wallet_id, false from transfers t
       where c->>'command' = 'Refund' and t.tenant_id = p_tenant
         and t.transfer_id = (c->'args'->>'refund_transfer_id')::uuid
    ) n (wallet_id, creates)
   where n.wallet_id is not null and n.wallet_id not like '@%'
   group by n.wallet_id
$$;

-- 3. The entry point. p_batch: {batch_id, key_id, commands: [{command, args}]}, the args as
--    ledger_command takes them. Answers {ok: true, batch_id, results: [...]} with one result
--    per command, or the refusal of the command at fault with its index (top level and in
--    metadata, beside metadata.reason), recorded under p_key either way.

create function ledger_execute_batch(p_tenant uuid, p_key text, p_fingerprint bytea,
                                     p_now timestamptz, p_batch jsonb) returns jsonb
language plpgsql volatile as $$
declare
  v_commands jsonb := p_batch->'commands';
  v_count    integer := jsonb_array_length(p_batch->'commands');
  v_answer   jsonb;
  v_result   jsonb;
  v_results  jsonb := '[]'::jsonb;
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
      v_results := v_results || jsonb_build_array(v_result - 'replayed');
    end loop;
    delete from idempotency_keys
     where tenant_id = p_tenant
       and idempotency_key in (select p_key || chr(31) || g from generate_series(0, v_count - 1) g);
    v_answer := jsonb_build_object('ok', true, 'batch_id', p_batch->>'batch_id', 'results', v_results);
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

-- The answer of a refused batch: the refusal of the command at index p_at, with the index.
create function ledger_batch_refusal(p_refusal jsonb, p_at integer) returns jsonb
language sql immutable as $$
  select ledger_refusal(p_refusal->>'reason', p_refusal->>'message',
           coalesce(p_refusal->'metadata', '{}'::jsonb)
             || jsonb_build_object('index', p_at::text, 'reason', p_refusal->>'reason'))
      || jsonb_build_object('index', p_at)
$$;

insert into holdfast_entry_points (function_name, kind) values ('ledger_execute_batch', 'definer');

call holdfast_secure_functions();
