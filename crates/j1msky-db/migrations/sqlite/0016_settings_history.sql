-- Every change of an operator setting, with the value it replaced and who changed it
-- (`previous_value` / `value` are NULL when the setting was absent / removed).
CREATE TABLE settings_history (
    id             TEXT PRIMARY KEY,
    key            TEXT NOT NULL,
    previous_value TEXT,
    value          TEXT,
    changed_at     INTEGER NOT NULL,
    changed_by     TEXT NOT NULL
);
CREATE INDEX settings_history_key ON settings_history(key, changed_at);
