-- A settlement batch by primary key (j1msky-gateway `roundtrip::settle`, the only caller).
-- 0035/0041's `j1msky_settle` took every call's entries as JSON and summed them in one
-- statement of hash joins and aggregates over `budget_reservations` and `limit_leases`:
-- its plan (sequential scans of tables full of dead row versions, hash tables built per
-- batch) cost the server ~0.7 ms of CPU a batch whatever its size. The gateway now sends
-- the sums it already knows, as arrays, and each row is reached through its key:
--   w_*: the budget windows the batch spends in, in the gateway's lock order (the order
--        admission locks them in), with the spend of each;
--   l_*: parts of this process's budget slices turned into spend: the lease, the index
--        (1-based) of its window in w_*, the amount (summed per lease and window);
--   h_*: per-call reservation rows to release, and the index of their window.
-- rows: the ledger rows as JSON, as in 0035.
-- Rows are locked as before: the ledger and the slices and reservations of the batch
-- first, the window rows last (in order). A lease or reservation already released by the
-- sweeper of dead owners releases nothing here, and the spend is still added.
-- Returns each window's spent micros after the batch, comma-separated in w_* order (empty
-- for a window with no row). `j1msky_settle` stays for processes of an older build
-- during an upgrade.
CREATE FUNCTION j1msky_settle_by_key(w_scopes TEXT, w_starts TEXT, w_spent TEXT,
                                     l_ids TEXT, l_win TEXT, l_amounts TEXT,
                                     h_ids TEXT, h_win TEXT, rows TEXT)
RETURNS TEXT LANGUAGE plpgsql AS $$
DECLARE
    scopes TEXT[] := w_scopes::TEXT[];
    starts BIGINT[] := w_starts::BIGINT[];
    spend BIGINT[] := w_spent::BIGINT[];
    leases TEXT[] := l_ids::TEXT[];
    lwin INT[] := l_win::INT[];
    lamount BIGINT[] := l_amounts::BIGINT[];
    held TEXT[] := h_ids::TEXT[];
    hwin INT[] := h_win::INT[];
    released BIGINT[];
    answer TEXT[] := '{}';
    x BIGINT;
    k INT;
BEGIN
    IF rows <> '[]' THEN
        INSERT INTO llm_calls (id, request_id, attempt, customer_id, task_id, team, role, category, provider,
            model_requested, model_used, input_tokens, output_tokens, cost_micros, latency_micros, outcome,
            fallback_reason, created_at)
        SELECT id, request_id, attempt, customer_id, task_id, team, role, category, provider, model_requested,
            model_used, input_tokens, output_tokens, cost_micros, latency_micros, outcome, fallback_reason, created_at
        FROM json_to_recordset(rows::json) AS x(id TEXT, request_id TEXT, attempt BIGINT, customer_id TEXT,
            task_id TEXT, team TEXT, role TEXT, category TEXT, provider TEXT, model_requested TEXT, model_used TEXT,
            input_tokens BIGINT, output_tokens BIGINT, cost_micros BIGINT, latency_micros BIGINT, outcome TEXT,
            fallback_reason TEXT, created_at BIGINT)
        ON CONFLICT (request_id, attempt) DO NOTHING;
    END IF;
    IF COALESCE(cardinality(scopes), 0) = 0 THEN
        RETURN '';
    END IF;
    released := array_fill(0::BIGINT, ARRAY[cardinality(scopes)]);
    FOR i IN 1 .. COALESCE(cardinality(leases), 0) LOOP
        k := lwin[i];
        UPDATE limit_leases SET amount = amount - lamount[i]
        WHERE id = leases[i] AND kind = 'budget' AND scope = scopes[k] AND window_start = starts[k];
        IF FOUND THEN
            released[k] := released[k] + lamount[i];
        END IF;
    END LOOP;
    FOR i IN 1 .. COALESCE(cardinality(held), 0) LOOP
        k := hwin[i];
        DELETE FROM budget_reservations WHERE id = held[i] AND scope = scopes[k] AND window_start = starts[k]
        RETURNING amount_micros INTO x;
        IF FOUND THEN
            released[k] := released[k] + x;
        END IF;
    END LOOP;
    FOR i IN 1 .. cardinality(scopes) LOOP
        UPDATE budget_windows SET reserved_micros = reserved_micros - released[i], spent_micros = spent_micros + spend[i]
        WHERE scope = scopes[i] AND window_start = starts[i]
        RETURNING spent_micros INTO x;
        answer := answer || COALESCE(x::TEXT, '');
    END LOOP;
    RETURN array_to_string(answer, ',');
END $$;
