-- Retention triggers (owned by j1msky-lifecycle). A trigger fires once per occurrence:
-- (trigger, customer, occurrence) is unique. `customer_id` is '-' for a business-wide
-- trigger (the churn spike). `cleared_at` closes a condition-style firing (low task
-- success) so it can fire again after the customer recovered.
CREATE TABLE lifecycle_trigger_firings (
    id TEXT PRIMARY KEY,
    trigger_id TEXT NOT NULL,
    customer_id TEXT NOT NULL,
    occurrence TEXT NOT NULL,
    action TEXT NOT NULL,
    fired_at BIGINT NOT NULL,
    cleared_at BIGINT,
    UNIQUE (trigger_id, customer_id, occurrence)
);
CREATE INDEX lifecycle_trigger_firings_at ON lifecycle_trigger_firings(fired_at);

-- The inactivity read model: a customer's last login, API call or task, and how many of
-- the inactivity thresholds this quiet spell has already fired (reset by any activity).
-- The sweep reads only the customers past the next threshold through the index.
CREATE TABLE lifecycle_activity (
    customer_id TEXT PRIMARY KEY,
    last_active_at BIGINT NOT NULL,
    inactive_level BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX lifecycle_activity_due ON lifecycle_activity(inactive_level, last_active_at);
INSERT INTO lifecycle_activity (customer_id, last_active_at, inactive_level)
SELECT c.id,
       COALESCE((SELECT MAX(e.created_at) FROM events e
                 WHERE e.customer_id = c.id AND e.kind IN ('user.logged_in', 'customer.active', 'task.submitted')),
                c.created_at),
       0
FROM customers c;

-- Billing: an offer granted for a later, server-chosen redemption (the upgrade prompt's
-- coupon) expires, and is spent once.
ALTER TABLE offer_grants ADD COLUMN expires_at BIGINT;
ALTER TABLE offer_grants ADD COLUMN redeemed_at BIGINT;
