-- Settlement batches by primary key, and no shared row written per batch
-- (j1msky-gateway `roundtrip::settle`, the only caller of `j1msky_settle_by_key`).
--
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
--
-- And every batch of every process used to end on the day budget's row (its spend),
-- so processes queued on that row once per batch. Now what a call spends from a slice
-- stays on the slice's own row (`limit_leases.spent`): the window's `reserved_micros`
-- still holds the whole slice, so reserved + spent, what admission compares with the
-- cap, is unchanged, and the window's `spent_micros` catches up when the slice is topped
-- up, given back or swept (`j1msky_lease_take`, `j1msky_lease_return`, the gateway's
-- sweeper). Readers of a window's spend add its slices' (`limits::budget_state`).
-- A lease or reservation already released by the sweeper of dead owners releases nothing
-- here, and the spend goes to the window's row.
-- Returns each window's spend after the batch (its slices' included), comma-separated in
-- w_* order (empty for a window with no row). `j1msky_settle` stays for processes of an
-- older build during an upgrade.
ALTER TABLE limit_leases ADD COLUMN spent BIGINT NOT NULL DEFAULT 0;
CREATE INDEX limit_leases_window ON limit_leases (scope, window_start);

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
        SELECT b.spent_micros + (SELECT COALESCE(SUM(l.spent), 0) FROM limit_leases l
                                 WHERE l.scope = b.scope AND l.window_start = b.window_start AND l.kind = 'budget')
        INTO x FROM budget_windows b WHERE b.scope = scopes[i] AND b.window_start = starts[i];
        answer := answer || COALESCE(x::TEXT, '');
    END LOOP;
    RETURN array_to_string(answer, ',');
END $$;


-- 0041's functions, with a slice's spend folded into its window whenever the window's
-- row is locked anyway: on a top-up (or a refused one) and when the slice is given back.
CREATE OR REPLACE FUNCTION j1msky_lease_take(l_id TEXT, l_kind TEXT, l_scope TEXT, l_window BIGINT, l_cap BIGINT,
                                             need BIGINT, want BIGINT, spread BIGINT, l_owner TEXT, l_expires BIGINT)
RETURNS BIGINT LANGUAGE plpgsql AS $$
DECLARE
    committed BIGINT;
    granted BIGINT;
    folded BIGINT;
BEGIN
    INSERT INTO limit_leases (id, kind, scope, window_start, owner, amount, expires_at)
    VALUES (l_id, l_kind, l_scope, l_window, l_owner, 0, l_expires)
    ON CONFLICT (id) DO UPDATE SET expires_at = l_expires
    RETURNING spent INTO folded;
    IF l_kind = 'cap' THEN
        INSERT INTO usage_counters (scope, window_start, used) VALUES (l_scope, l_window, 0)
        ON CONFLICT (scope, window_start) DO NOTHING;
        SELECT used INTO committed FROM usage_counters
        WHERE scope = l_scope AND window_start = l_window FOR UPDATE;
    ELSE
        INSERT INTO budget_windows (scope, window_start, cap_micros, reserved_micros, spent_micros)
        VALUES (l_scope, l_window, l_cap, 0, 0) ON CONFLICT (scope, window_start) DO NOTHING;
        SELECT reserved_micros + spent_micros INTO committed FROM budget_windows
        WHERE scope = l_scope AND window_start = l_window FOR UPDATE;
    END IF;
    granted := LEAST(want, (l_cap - committed) / spread);
    IF granted < need OR granted <= 0 THEN
        IF folded <> 0 THEN
            UPDATE budget_windows SET reserved_micros = reserved_micros - folded, spent_micros = spent_micros + folded
            WHERE scope = l_scope AND window_start = l_window;
            UPDATE limit_leases SET spent = 0 WHERE id = l_id;
        END IF;
        DELETE FROM limit_leases WHERE id = l_id AND amount = 0;
        RETURN 0;
    END IF;
    IF l_kind = 'cap' THEN
        UPDATE usage_counters SET used = used + granted WHERE scope = l_scope AND window_start = l_window;
    ELSE
        UPDATE budget_windows SET cap_micros = l_cap, reserved_micros = reserved_micros + granted - folded,
            spent_micros = spent_micros + folded
        WHERE scope = l_scope AND window_start = l_window;
    END IF;
    UPDATE limit_leases SET amount = amount + granted, spent = 0 WHERE id = l_id;
    RETURN granted;
END $$;

CREATE OR REPLACE FUNCTION j1msky_lease_return(l_id TEXT, back BIGINT)
RETURNS BIGINT LANGUAGE plpgsql AS $$
DECLARE
    k RECORD;
BEGIN
    SELECT kind, scope, window_start, amount - back AS amount, spent INTO k
    FROM limit_leases WHERE id = l_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN 0;
    END IF;
    IF k.kind = 'cap' THEN
        UPDATE usage_counters SET used = used - back WHERE scope = k.scope AND window_start = k.window_start;
        DELETE FROM limit_leases WHERE id = l_id;
    ELSE
        UPDATE budget_windows SET reserved_micros = reserved_micros - back - k.spent,
            spent_micros = spent_micros + k.spent
        WHERE scope = k.scope AND window_start = k.window_start;
        IF k.amount <= 0 THEN
            DELETE FROM limit_leases WHERE id = l_id;
        ELSE
            UPDATE limit_leases SET amount = k.amount, spent = 0 WHERE id = l_id;
        END IF;
    END IF;
    RETURN back;
END $$;
