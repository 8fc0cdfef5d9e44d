-- Event consumers: a lease on each cursor row, so that with several processes one
-- consumer's batch is handled by one of them at a time (a dead owner's lease expires),
-- and the events a consumer failed on, retried with back-off and then parked.
ALTER TABLE consumer_cursors ADD COLUMN lease_owner TEXT;
ALTER TABLE consumer_cursors ADD COLUMN lease_until BIGINT;

CREATE TABLE consumer_failures (
    consumer    TEXT NOT NULL,
    seq         BIGINT NOT NULL,
    attempts    BIGINT NOT NULL,
    next_try_at BIGINT NOT NULL,
    last_error  TEXT NOT NULL,
    parked      BIGINT NOT NULL DEFAULT 0,
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (consumer, seq)
);
CREATE INDEX consumer_failures_due ON consumer_failures (consumer, parked, next_try_at);
