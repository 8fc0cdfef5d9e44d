-- The hourly events (customer.active, plan.limit_hit) look up a customer's recent events of a
-- kind; without this index that read scanned every event of the kind ever written.
CREATE INDEX events_customer_kind ON events(customer_id, kind, created_at);
