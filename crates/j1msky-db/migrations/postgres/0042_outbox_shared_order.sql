-- The outbox without one lock every writer queues on (j1msky-db `outbox`).
--
-- Every new event takes its number through `j1msky_event_seq()`, the column's default:
-- it holds the outbox key in SHARED mode until its transaction ends, then draws from the
-- sequence. Writers never wait for each other, and any statement that inserts an event
-- (a caller's CTE included) keeps the rule without knowing it.
--
-- A reader that wants to go past its cursor calls `j1msky_events_mark(cursor)` on its own
-- (one statement, its own transaction). It takes the same key in EXCLUSIVE mode, which
-- waits only for the writers of THIS database that are in flight (advisory locks are per
-- database), and returns the highest committed number while holding it. Every number up
-- to that mark was drawn by a transaction that has ended, so reading up to it never
-- passes over an event that commits later. Numbers drawn afterwards are all higher (the
-- sequence hands them out in order; its cache is 1).
CREATE FUNCTION j1msky_event_seq() RETURNS BIGINT LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock_shared(116760522222457);
    RETURN nextval('events_seq_seq');
END $$;

ALTER TABLE events ALTER COLUMN seq SET DEFAULT j1msky_event_seq();

-- Returns the mark: `after_seq` itself when nothing past it can be read yet. A reader
-- queued for the key holds back new writers, so it waits at most `lock_timeout` for a
-- long writer and then reports nothing new (it asks again on its next round) rather than
-- stall every writer behind that one.
CREATE FUNCTION j1msky_events_mark(after_seq BIGINT) RETURNS BIGINT LANGUAGE plpgsql
SET lock_timeout = '200ms' AS $$
DECLARE
    mark BIGINT;
BEGIN
    -- Cheap: no number past the cursor was ever drawn, so there is nothing to wait for.
    IF (SELECT last_value FROM events_seq_seq) <= after_seq THEN
        RETURN after_seq;
    END IF;
    IF NOT pg_try_advisory_xact_lock(116760522222457) THEN
        BEGIN
            PERFORM pg_advisory_xact_lock(116760522222457);
        EXCEPTION WHEN lock_not_available THEN
            RETURN after_seq;
        END;
    END IF;
    -- A fresh snapshot (each statement of a volatile function takes one), taken with
    -- no writer in flight.
    SELECT MAX(seq) INTO mark FROM events;
    RETURN GREATEST(COALESCE(mark, 0), after_seq);
END $$;
