-- A customer's passage through one journey (owned by j1msky-lifecycle). The journey's
-- definition is copied in at enrollment, so editing the journey later changes nothing
-- already scheduled. One enrollment per (journey, customer, entry_key).
CREATE TABLE lifecycle_enrollments (
    id TEXT PRIMARY KEY,
    customer_id TEXT NOT NULL REFERENCES customers(id),
    journey TEXT NOT NULL,
    version BIGINT NOT NULL,
    definition TEXT NOT NULL,
    entry_key TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'active',
    current_step TEXT,
    started_at BIGINT NOT NULL,
    ended_at BIGINT,
    end_reason TEXT,
    UNIQUE (journey, customer_id, entry_key)
);
CREATE INDEX lifecycle_enrollments_customer ON lifecycle_enrollments(customer_id, journey, state);
