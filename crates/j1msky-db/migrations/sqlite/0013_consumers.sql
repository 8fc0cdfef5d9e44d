-- Event consumers: a lease on each cursor row, so that with several processes one
-- consumer's batch is handled by one of them at a time (a dead owner's lease expires),
-- and the events a consumer failed on, retried with back-off and then parked.
ALTER TABLE consumer_cursors ADD COLUMN lease_owner TEXT;
ALTER TABLE consumer_cursors ADD COLUMN lease_until INTEGER;

CREATE TABLE consumer_failures (
    consumer    TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    attempts    INTEGER NOT NULL,
    next_try_at INTEGER NOT NULL,
    last_error  TEXT NOT NULL,
    parked      INTEGER NOT NULL DEFAULT 0,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (consumer, seq)
);
CREATE INDEX consumer_failures_due ON consumer_failures (consumer, parked, next_try_at);
