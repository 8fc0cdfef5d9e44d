-- Backups of the database (j1msky-ops `backup`): one row per attempt, whatever became of
-- it, so the operator sees failures beside the good ones. `kind` is hourly, daily or
-- manual; retention prunes the first two (status `pruned`, the file deleted).
CREATE TABLE ops_backups (
    id           TEXT PRIMARY KEY,
    engine       TEXT NOT NULL,
    kind         TEXT NOT NULL,
    status       TEXT NOT NULL,
    path         TEXT NOT NULL,
    size_bytes   BIGINT,
    sha256       TEXT,
    started_at   BIGINT NOT NULL,
    finished_at  BIGINT,
    error        TEXT,
    copied_to    TEXT
);
CREATE INDEX ops_backups_started ON ops_backups(started_at);

-- Restores into this database: written by `restore` into the database it restored, so
-- the first server started on it reconciles with Stripe (from the backup's time) before
-- any billing job runs, and marks it reconciled.
CREATE TABLE ops_restores (
    id                TEXT PRIMARY KEY,
    backup_id         TEXT,
    file              TEXT NOT NULL,
    sha256            TEXT NOT NULL,
    backup_started_at BIGINT NOT NULL,
    restored_at       BIGINT NOT NULL,
    reconciled_at     BIGINT,
    reconcile_note    TEXT
);
