-- What calls spend from a process's budget slices is written with its flushes, not with
-- every settlement batch (j1msky-gateway `leases::Leases::flush`, the only caller).
--
-- 0043/0048's batch turned each call's spend from a slice into the slice row's `spent`
-- in the batch itself: two row updates (the day's slice and the customer's) and a read of
-- the day's spend in every batch, a fixed cost on the server that each process pays per
-- batch, so splitting the same calls between more processes multiplied it. A batch now
-- writes the ledger rows and what was held per call; the owner adds up what its calls
-- spent from each slice in memory and moves it from `amount` to `spent` a few times a
-- second, when it gives a slice back and at shutdown, in one call of this function, which
-- answers the spend of one window (the business's day) for the budget alerts.
--
-- A slice whose row is gone was swept: its owner was taken for dead, and the sweeper
-- counted all of it as spent (j1msky-gateway `limits::release_expired`), so what its calls
-- spent is already counted and nothing is added anywhere. Returns the spend of window
-- (w_scope, w_start), its slices' included, or -1 when it has no row or none was asked.
CREATE FUNCTION j1msky_slices_spent(l_ids TEXT, l_amounts TEXT, w_scope TEXT, w_start BIGINT)
RETURNS BIGINT LANGUAGE plpgsql AS $$
DECLARE
    leases TEXT[] := l_ids::TEXT[];
    amounts BIGINT[] := l_amounts::BIGINT[];
    x BIGINT;
BEGIN
    FOR i IN 1 .. COALESCE(cardinality(leases), 0) LOOP
        UPDATE limit_leases SET amount = amount - amounts[i], spent = spent + amounts[i]
        WHERE id = leases[i] AND kind = 'budget';
    END LOOP;
    IF w_scope IS NULL THEN
        RETURN -1;
    END IF;
    SELECT b.spent_micros + (SELECT COALESCE(SUM(l.spent), 0) FROM limit_leases l
                             WHERE l.scope = b.scope AND l.window_start = b.window_start AND l.kind = 'budget')
    INTO x FROM budget_windows b WHERE b.scope = w_scope AND b.window_start = w_start;
    RETURN COALESCE(x, -1);
END $$;
