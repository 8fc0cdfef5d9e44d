-- A settlement batch answers only the spend its caller reads (j1msky-gateway
-- `roundtrip::settle`, the only caller of `j1msky_settle_batch`).
--
-- 0043's `j1msky_settle_by_key` ended every batch by reading the spend of each budget
-- window the batch touched (a read of the window's row and a sum over its slices), but the
-- gateway reads one of them: the business's day, for the budget alerts and the modes they
-- switch. Each read is a fixed cost of the batch on the server, paid again by every
-- process that settles its own calls. `j1msky_settle_batch` does what 0043's function does
-- and answers the spend of window `want` only (1-based in w_*; 0 answers every window,
-- comma-separated, as 0043 did; -1 none). `j1msky_settle_by_key` stays, for processes of
-- an older build during an upgrade, as a call of the new function answering every window.
CREATE FUNCTION j1msky_settle_batch(w_scopes TEXT, w_starts TEXT, w_spent TEXT,
                                    l_ids TEXT, l_win TEXT, l_amounts TEXT,
                                    h_ids TEXT, h_win TEXT, rows TEXT, want INT)
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
    onslice BIGINT[];
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
    onslice := array_fill(0::BIGINT, ARRAY[cardinality(scopes)]);
    FOR i IN 1 .. COALESCE(cardinality(leases), 0) LOOP
        k := lwin[i];
        UPDATE limit_leases SET amount = amount - lamount[i], spent = spent + lamount[i]
        WHERE id = leases[i] AND kind = 'budget' AND scope = scopes[k] AND window_start = starts[k];
        IF FOUND THEN
            onslice[k] := onslice[k] + lamount[i];
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
        IF released[i] <> 0 OR spend[i] <> onslice[i] THEN
            UPDATE budget_windows
            SET reserved_micros = reserved_micros - released[i], spent_micros = spent_micros + spend[i] - onslice[i]
            WHERE scope = scopes[i] AND window_start = starts[i];
        END IF;
        IF want = 0 OR want = i THEN
            SELECT b.spent_micros + (SELECT COALESCE(SUM(l.spent), 0) FROM limit_leases l
                                     WHERE l.scope = b.scope AND l.window_start = b.window_start AND l.kind = 'budget')
            INTO x FROM budget_windows b WHERE b.scope = scopes[i] AND b.window_start = starts[i];
            answer := answer || COALESCE(x::TEXT, '');
        END IF;
    END LOOP;
    RETURN array_to_string(answer, ',');
END $$;

CREATE OR REPLACE FUNCTION j1msky_settle_by_key(w_scopes TEXT, w_starts TEXT, w_spent TEXT,
                                                l_ids TEXT, l_win TEXT, l_amounts TEXT,
                                                h_ids TEXT, h_win TEXT, rows TEXT)
RETURNS TEXT LANGUAGE sql AS $$
    SELECT j1msky_settle_batch(w_scopes, w_starts, w_spent, l_ids, l_win, l_amounts, h_ids, h_win, rows, 0)
$$;
