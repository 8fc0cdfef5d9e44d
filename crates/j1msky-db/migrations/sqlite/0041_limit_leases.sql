-- Slices of the hot shared limits held by one process (j1msky-gateway `leases`). Only
-- PostgreSQL deployments take them (SQLite holds its limits in one process's memory or in
-- short local transactions); the table exists here too so both engines share one schema.
CREATE TABLE limit_leases (
    id            TEXT PRIMARY KEY,
    kind          TEXT NOT NULL CHECK (kind IN ('cap', 'budget')),
    scope         TEXT NOT NULL,
    window_start  INTEGER NOT NULL,
    owner         TEXT NOT NULL,
    amount        INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL
);
CREATE INDEX limit_leases_owner ON limit_leases (owner);
CREATE INDEX limit_leases_expiry ON limit_leases (expires_at);
