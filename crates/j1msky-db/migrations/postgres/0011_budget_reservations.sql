-- Reservations held in budget_windows.reserved_micros when limits live in the database,
-- one row per (reservation, budget window): who holds it and until when, so those of a
-- process that died are released once they expire instead of when their window ends.
CREATE TABLE budget_reservations (
    id             TEXT NOT NULL,
    scope          TEXT NOT NULL,
    window_start   BIGINT NOT NULL,
    owner          TEXT NOT NULL,
    amount_micros  BIGINT NOT NULL,
    expires_at     BIGINT NOT NULL,
    PRIMARY KEY (id, scope, window_start)
);
CREATE INDEX budget_reservations_expiry ON budget_reservations (expires_at);
