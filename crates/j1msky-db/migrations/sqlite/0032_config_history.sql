-- Configuration history (j1msky-ops `config_history`).

-- Every catalogue that was in force, append-only: the newest version is the one every
-- process serves (a rollback appends a copy of an older one). `body` is the JSON text
-- as applied, `sha256` its digest, `source` where it came from (a file, a rollback).
CREATE TABLE ops_catalogue_versions (
    version     BIGINT PRIMARY KEY,
    sha256      TEXT NOT NULL,
    body        TEXT NOT NULL,
    source      TEXT NOT NULL,
    reason      TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    created_by  TEXT NOT NULL
);
CREATE INDEX ops_catalogue_versions_created ON ops_catalogue_versions(created_at);

-- Why an operator setting was changed (NULL for changes made before it was asked).
ALTER TABLE settings_history ADD COLUMN reason TEXT;
-- The merged history reads every key's changes newest first.
CREATE INDEX settings_history_changed ON settings_history(changed_at);
