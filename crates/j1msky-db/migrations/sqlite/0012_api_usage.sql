-- Pay-per-task customers' direct API calls are charged like tasks: one charge per
-- customer and UTC day (`api_day`, YYYY-MM-DD) of calls made outside any task. Such a
-- charge has no task, so `task_id` becomes optional; exactly one of the two is set.
-- SQLite cannot drop a NOT NULL in place: the table is rebuilt with its rows.
CREATE TABLE usage_charges_new (
    id                TEXT PRIMARY KEY,
    customer_id       TEXT NOT NULL REFERENCES customers(id),
    task_id           TEXT UNIQUE REFERENCES tasks(id),
    tier              TEXT NOT NULL,
    amount_micros     INTEGER NOT NULL,
    created_at        INTEGER NOT NULL,
    reported_at       INTEGER,
    stripe_item_id    TEXT,
    stripe_invoice_id TEXT,
    invoice_status    TEXT,
    api_day           TEXT,
    CHECK ((task_id IS NULL) <> (api_day IS NULL))
);
INSERT INTO usage_charges_new (id, customer_id, task_id, tier, amount_micros, created_at, reported_at,
                               stripe_item_id, stripe_invoice_id, invoice_status)
    SELECT id, customer_id, task_id, tier, amount_micros, created_at, reported_at,
           stripe_item_id, stripe_invoice_id, invoice_status
    FROM usage_charges;
DROP TABLE usage_charges;
ALTER TABLE usage_charges_new RENAME TO usage_charges;
CREATE INDEX usage_charges_customer ON usage_charges(customer_id, created_at);
CREATE UNIQUE INDEX usage_charges_api_day ON usage_charges(customer_id, api_day);
