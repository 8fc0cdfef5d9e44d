-- PostgreSQL's 0043 settles a batch of gateway calls by primary key and keeps what a
-- call spends from a process's budget slice on the slice's row until the slice is topped
-- up, given back or swept. SQLite takes no slices, but its table has the column too, so
-- both engines share one schema and the sweeper one statement.
ALTER TABLE limit_leases ADD COLUMN spent INTEGER NOT NULL DEFAULT 0;
CREATE INDEX limit_leases_window ON limit_leases (scope, window_start);
