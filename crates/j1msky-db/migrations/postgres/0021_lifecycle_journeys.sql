-- The journey step engine (owned by j1msky-lifecycle). `steps_run` counts the steps an
-- enrollment has run: it is the occurrence in each step timer's key, so a step reached
-- twice (a loop) is scheduled twice and a step fired twice runs once.
ALTER TABLE lifecycle_enrollments ADD COLUMN steps_run BIGINT NOT NULL DEFAULT 0;

-- An enrollment parked on a `wait_until` step. Whoever deletes the row (the event's
-- consumer or the timeout timer) takes its branch; the other finds nothing to do.
CREATE TABLE lifecycle_waits (
    enrollment_id TEXT PRIMARY KEY REFERENCES lifecycle_enrollments(id),
    customer_id TEXT NOT NULL REFERENCES customers(id),
    step TEXT NOT NULL,
    occurrence BIGINT NOT NULL,
    event TEXT,
    condition TEXT,
    timeout_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX lifecycle_waits_customer ON lifecycle_waits(customer_id);

-- What each step of an enrollment did (sent, skipped as stale, branch taken, …).
CREATE TABLE lifecycle_step_log (
    enrollment_id TEXT NOT NULL REFERENCES lifecycle_enrollments(id),
    step TEXT NOT NULL,
    occurrence BIGINT NOT NULL,
    outcome TEXT NOT NULL,
    detail TEXT,
    at BIGINT NOT NULL,
    PRIMARY KEY (enrollment_id, step, occurrence)
);

-- Customer attributes set by journeys (`set_attribute`) and read by conditions.
CREATE TABLE lifecycle_attributes (
    customer_id TEXT NOT NULL REFERENCES customers(id),
    name TEXT NOT NULL,
    value TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (customer_id, name)
);
