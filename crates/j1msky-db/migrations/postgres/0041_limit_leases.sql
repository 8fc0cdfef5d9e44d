-- Slices of the hot shared limits held by one process (j1msky-gateway `leases`, the only
-- caller): a process takes N calls of an hourly cap or M micro-USD of a budget in one
-- statement, admits its calls from the slice in memory and gives back what it did not
-- use. A row is the slice as the database knows it: for a budget, the part still
-- reserved by the owner (unused, or held by its calls in flight); for a cap, the calls
-- granted and not given back. Like reservations, a row names its owner and expires unless
-- the owner renews it, so the sweeper of dead owners releases a dead process's budget
-- slices (its calls in flight included, as for per-call reservations). A dead process's
-- cap slice is deleted without giving its calls back: nobody knows how many of them it
-- admitted, so the hour keeps them counted (never more than the cap).
CREATE TABLE limit_leases (
    id            TEXT PRIMARY KEY,
    kind          TEXT NOT NULL CHECK (kind IN ('cap', 'budget')),
    scope         TEXT NOT NULL,
    window_start  BIGINT NOT NULL,
    owner         TEXT NOT NULL,
    amount        BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL
);
CREATE INDEX limit_leases_owner ON limit_leases (owner);
CREATE INDEX limit_leases_expiry ON limit_leases (expires_at);

-- Takes a slice of `want` (at least `need`) from a cap's hourly counter or a budget's
-- window for lease `l_id`, at most 1/`spread` of what is left, so slices shrink near the
-- limit; returns what was granted, 0 when even `need` is more than that (the caller then
-- admits per call, exactly). The lease row is locked before the counter row, the order
-- settlement and the sweeper take them in.
CREATE FUNCTION j1msky_lease_take(l_id TEXT, l_kind TEXT, l_scope TEXT, l_window BIGINT, l_cap BIGINT,
                                  need BIGINT, want BIGINT, spread BIGINT, l_owner TEXT, l_expires BIGINT)
RETURNS BIGINT LANGUAGE plpgsql AS $$
DECLARE
    committed BIGINT;
    granted BIGINT;
BEGIN
    INSERT INTO limit_leases (id, kind, scope, window_start, owner, amount, expires_at)
    VALUES (l_id, l_kind, l_scope, l_window, l_owner, 0, l_expires)
    ON CONFLICT (id) DO UPDATE SET expires_at = l_expires;
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
        DELETE FROM limit_leases WHERE id = l_id AND amount = 0;
        RETURN 0;
    END IF;
    IF l_kind = 'cap' THEN
        UPDATE usage_counters SET used = used + granted WHERE scope = l_scope AND window_start = l_window;
    ELSE
        UPDATE budget_windows SET cap_micros = l_cap, reserved_micros = reserved_micros + granted
        WHERE scope = l_scope AND window_start = l_window;
    END IF;
    UPDATE limit_leases SET amount = amount + granted WHERE id = l_id;
    RETURN granted;
END $$;

-- Gives `back` of lease `l_id` back to its counter or budget. A cap's lease ends there
-- (its other calls were admitted); a budget's ends when nothing is left in it. Returns
-- what was given back (0 when the lease is gone: the sweeper released it).
CREATE FUNCTION j1msky_lease_return(l_id TEXT, back BIGINT)
RETURNS BIGINT LANGUAGE plpgsql AS $$
DECLARE
    k RECORD;
BEGIN
    UPDATE limit_leases SET amount = amount - back WHERE id = l_id
    RETURNING kind, scope, window_start, amount INTO k;
    IF NOT FOUND THEN
        RETURN 0;
    END IF;
    IF k.kind = 'cap' THEN
        UPDATE usage_counters SET used = used - back WHERE scope = k.scope AND window_start = k.window_start;
        DELETE FROM limit_leases WHERE id = l_id;
    ELSE
        UPDATE budget_windows SET reserved_micros = reserved_micros - back
        WHERE scope = k.scope AND window_start = k.window_start;
        DELETE FROM limit_leases WHERE id = l_id AND amount <= 0;
    END IF;
    RETURN back;
END $$;

-- 0035's settlement, also for calls admitted from a budget slice: an entry with "l" (the
-- lease) turns that much of the slice into spend instead of deleting a reservation row.
CREATE OR REPLACE FUNCTION j1msky_settle(settle TEXT, rows TEXT)
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
    WITH s AS (
        SELECT * FROM json_to_recordset(settle::json) AS x(id TEXT, l TEXT, s TEXT, w BIGINT, a BIGINT)
    ), held AS (
        DELETE FROM budget_reservations h USING s
        WHERE s.l IS NULL AND h.id = s.id AND h.scope = s.s AND h.window_start = s.w
        RETURNING h.scope, h.window_start, h.amount_micros
    ), per_lease AS (
        SELECT l, s, w, SUM(a) AS a FROM s WHERE l IS NOT NULL GROUP BY l, s, w
    ), leased AS (
        UPDATE limit_leases k SET amount = k.amount - p.a FROM per_lease p
        WHERE k.id = p.l AND k.kind = 'budget' AND k.scope = p.s AND k.window_start = p.w
        RETURNING k.scope, k.window_start, p.a AS amount_micros
    ), released AS (
        SELECT scope, window_start, SUM(amount_micros) AS amount
        FROM (SELECT * FROM held UNION ALL SELECT * FROM leased) x GROUP BY scope, window_start
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
