-- Shared limits on PostgreSQL in one round trip each (j1msky-gateway `limits`, which owns
-- usage_counters, budget_windows, budget_reservations and llm_calls and is their only
-- caller): an admission counts every cap and reserves every budget, or changes nothing;
-- a settlement batch books the ledger rows and the spend of many calls at once. Each
-- runs as one statement, so the rows every call shares (the global cap, the day's budget)
-- are locked only while the server runs it, never across a network wait.

-- caps: JSON [{"s": scope, "c": cap}] and budgets: JSON [{"s": scope, "w": window start,
-- "c": cap}], both in the caller's lock order. Returns '' when admitted, 'cap <i>' or
-- 'budget <i> <reserved + spent>' (0-based index) when refused.
CREATE FUNCTION j1msky_admit(caps TEXT, hour_start BIGINT, budgets TEXT, amount BIGINT,
                             rsv_id TEXT, rsv_owner TEXT, rsv_expires BIGINT)
RETURNS TEXT LANGUAGE plpgsql AS $$
DECLARE
    c RECORD;
    b RECORD;
    n INT;
    counted TEXT[] := '{}';
    reserved JSON[] := '{}';
    committed BIGINT;
BEGIN
    FOR c IN SELECT e->>'s' AS scope, (e->>'c')::BIGINT AS cap, i - 1 AS i
             FROM json_array_elements(caps::json) WITH ORDINALITY AS t(e, i) ORDER BY i LOOP
        INSERT INTO usage_counters (scope, window_start, used) VALUES (c.scope, hour_start, 1)
        ON CONFLICT (scope, window_start) DO UPDATE SET used = usage_counters.used + 1
        WHERE usage_counters.used < c.cap;
        GET DIAGNOSTICS n = ROW_COUNT;
        IF n = 0 THEN
            -- Undo what this call counted: its rows are still locked by this statement,
            -- so nobody saw the counts in between.
            UPDATE usage_counters SET used = used - 1 WHERE scope = ANY(counted) AND window_start = hour_start;
            RETURN 'cap ' || c.i;
        END IF;
        counted := counted || c.scope;
    END LOOP;
    FOR b IN SELECT e->>'s' AS scope, (e->>'w')::BIGINT AS w, (e->>'c')::BIGINT AS cap, i - 1 AS i
             FROM json_array_elements(budgets::json) WITH ORDINALITY AS t(e, i) ORDER BY i LOOP
        INSERT INTO budget_windows (scope, window_start, cap_micros, reserved_micros, spent_micros)
        SELECT b.scope, b.w, b.cap, amount, 0 WHERE amount <= b.cap
        ON CONFLICT (scope, window_start) DO UPDATE SET cap_micros = b.cap,
            reserved_micros = budget_windows.reserved_micros + amount
        WHERE budget_windows.reserved_micros + budget_windows.spent_micros + amount <= b.cap;
        GET DIAGNOSTICS n = ROW_COUNT;
        IF n = 0 THEN
            SELECT reserved_micros + spent_micros INTO committed
            FROM budget_windows WHERE scope = b.scope AND window_start = b.w;
            UPDATE usage_counters SET used = used - 1 WHERE scope = ANY(counted) AND window_start = hour_start;
            UPDATE budget_windows w SET reserved_micros = w.reserved_micros - amount
            FROM (SELECT x->>'s' AS s, (x->>'w')::BIGINT AS w FROM unnest(reserved) AS x) r
            WHERE w.scope = r.s AND w.window_start = r.w;
            DELETE FROM budget_reservations WHERE id = rsv_id;
            RETURN 'budget ' || b.i || ' ' || COALESCE(committed, 0);
        END IF;
        reserved := reserved || json_build_object('s', b.scope, 'w', b.w);
        INSERT INTO budget_reservations (id, scope, window_start, owner, amount_micros, expires_at)
        VALUES (rsv_id, b.scope, b.w, rsv_owner, amount, rsv_expires);
    END LOOP;
    RETURN '';
END $$;

-- Settles many calls in one statement. settle: JSON [{"id": reservation, "s": scope,
-- "w": window start, "a": actual cost}] (one entry per reservation and budget window);
-- rows: JSON ledger rows named as llm_calls' columns. A reservation still held is
-- released; one already released by the sweeper of dead owners only adds its spend. A
-- repeated (request_id, attempt) is ignored. Budget rows are locked in (scope, window)
-- order, the order admissions take them in. Returns the spend of every window changed as
-- JSON [{"s", "w", "spent"}].
CREATE FUNCTION j1msky_settle(settle TEXT, rows TEXT)
RETURNS TEXT LANGUAGE plpgsql AS $$
DECLARE
    changes JSON;
    r RECORD;
    out JSON[] := '{}';
    now_spent BIGINT;
BEGIN
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
    -- What each window gets: the spend of every call, and the release of the reservations
    -- still held (gathered first: a loop cannot run over a statement that deletes).
    WITH s AS (
        SELECT * FROM json_to_recordset(settle::json) AS x(id TEXT, s TEXT, w BIGINT, a BIGINT)
    ), held AS (
        DELETE FROM budget_reservations h USING s
        WHERE h.id = s.id AND h.scope = s.s AND h.window_start = s.w
        RETURNING h.scope, h.window_start, h.amount_micros
    ), released AS (
        SELECT scope, window_start, SUM(amount_micros) AS amount FROM held GROUP BY scope, window_start
    ), spent AS (
        SELECT s.s, s.w, SUM(s.a) AS amount FROM s GROUP BY s.s, s.w
    )
    SELECT json_agg(json_build_object('s', spent.s, 'w', spent.w, 'a', spent.amount,
                                      'r', COALESCE(released.amount, 0)) ORDER BY spent.s, spent.w)
    INTO changes
    FROM spent LEFT JOIN released ON released.scope = spent.s AND released.window_start = spent.w;
    FOR r IN SELECT e->>'s' AS s, (e->>'w')::BIGINT AS w, (e->>'a')::BIGINT AS a, (e->>'r')::BIGINT AS rel, i
             FROM json_array_elements(COALESCE(changes, '[]'::json)) WITH ORDINALITY AS t(e, i) ORDER BY i LOOP
        UPDATE budget_windows SET reserved_micros = reserved_micros - r.rel, spent_micros = spent_micros + r.a
        WHERE scope = r.s AND window_start = r.w
        RETURNING spent_micros INTO now_spent;
        out := out || json_build_object('s', r.s, 'w', r.w, 'spent', now_spent);
    END LOOP;
    RETURN COALESCE(array_to_json(out)::TEXT, '[]');
END $$;
