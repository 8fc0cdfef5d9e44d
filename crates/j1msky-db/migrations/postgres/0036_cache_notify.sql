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
