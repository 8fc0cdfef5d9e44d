-- The outbox without a global lock (j1msky-db `outbox`). Until now every writer of an event
-- took one advisory lock until its commit, so that `seq` order was commit order. Now an
-- event's `seq` is its transaction's id shifted left by 20 bits plus its number within the
-- transaction, so writers never wait for each other, and a reader takes only the events
-- below the oldest transaction still running (`pg_snapshot_xmin` shifted the same way):
-- every transaction that could still add an event below that line has ended, so a
-- consumer's cursor never passes an event committed late. Existing rows keep their
-- small numbers, all below the first new one.
CREATE FUNCTION j1msky_event_seq() RETURNS BIGINT LANGUAGE plpgsql AS $$
DECLARE
    n BIGINT;
BEGIN
    -- The count of this transaction's events lives in a setting local to the transaction
    -- (reset at its end, and rolled back with a savepoint together with its rows).
    n := COALESCE(NULLIF(current_setting('j1msky.events_in_xact', true), ''), '0')::BIGINT + 1;
    IF n >= 1048576 THEN
        RAISE EXCEPTION 'more than 1048575 events in one transaction';
    END IF;
    PERFORM set_config('j1msky.events_in_xact', n::TEXT, true);
    RETURN (pg_current_xact_id()::TEXT::BIGINT << 20) + n;
END $$;

ALTER TABLE events ALTER COLUMN seq SET DEFAULT j1msky_event_seq();

-- Cached reads invalidated across processes (j1msky-db `invalidation`): a revoked API key
-- and a change to what admission reads of a customer are announced on commit, whatever
-- wrote them (a server, a worker, the CLI). Only those columns: the frequent writes of
-- `last_used_at` and activity marks announce nothing.
CREATE FUNCTION j1msky_notify_keys() RETURNS TRIGGER LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('j1msky_invalidate', 'keys');
    RETURN NULL;
END $$;
CREATE TRIGGER api_keys_invalidate AFTER UPDATE OF revoked_at OR DELETE ON api_keys
    FOR EACH STATEMENT EXECUTE FUNCTION j1msky_notify_keys();

CREATE FUNCTION j1msky_notify_customers() RETURNS TRIGGER LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('j1msky_invalidate', 'customers');
    RETURN NULL;
END $$;
CREATE TRIGGER customers_invalidate
    AFTER UPDATE OF plan, monthly_budget_micros, contract_calls_per_hour, stage, billing_status,
        billing_status_since, payment_method_on_file OR DELETE ON customers
    FOR EACH STATEMENT EXECUTE FUNCTION j1msky_notify_customers();
