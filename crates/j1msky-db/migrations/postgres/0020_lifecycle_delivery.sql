-- Mail delivery (owned by j1msky-lifecycle): who must not get mail, who chose what,
-- and the key that signs unsubscribe links.
-- A suppressed address gets no lifecycle mail at all (hard bounce, operator, unsubscribe
-- from everything); consent is per customer and category.
CREATE TABLE lifecycle_suppressions (
    email_lower TEXT PRIMARY KEY,
    customer_id TEXT,
    reason TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT '',
    at BIGINT NOT NULL
);
CREATE INDEX lifecycle_suppressions_customer ON lifecycle_suppressions(customer_id);

CREATE TABLE lifecycle_consents (
    customer_id TEXT NOT NULL REFERENCES customers(id),
    category TEXT NOT NULL,
    granted BIGINT NOT NULL,
    source TEXT NOT NULL,
    at BIGINT NOT NULL,
    PRIMARY KEY (customer_id, category)
);

CREATE TABLE lifecycle_keys (
    name TEXT PRIMARY KEY,
    secret TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

-- Set just before the transport is called: a `sending` row whose lease expired with
-- this set may have reached the server, so it becomes `unknown` instead of being resent.
ALTER TABLE lifecycle_messages ADD COLUMN attempt_at BIGINT;
CREATE INDEX lifecycle_messages_lease ON lifecycle_messages(state, lease_until);
CREATE INDEX lifecycle_messages_sent ON lifecycle_messages(customer_id, sent_at);
