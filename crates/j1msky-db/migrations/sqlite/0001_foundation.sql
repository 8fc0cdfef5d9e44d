-- Foundation schema (SQLite). Keep in step with migrations/postgres/0001_foundation.sql.
-- Money: INTEGER micro-USD. Time: INTEGER unix microseconds, UTC. Ids: prefixed ULIDs.

CREATE TABLE customers (
    id                     TEXT PRIMARY KEY,
    name                   TEXT NOT NULL,
    contact_email          TEXT,
    stage                  TEXT NOT NULL,
    use_case               TEXT,
    plan                   TEXT,
    chosen_teams           TEXT NOT NULL DEFAULT '[]',
    expected_monthly_tasks INTEGER,
    time_zone              TEXT NOT NULL DEFAULT 'UTC',
    created_at             INTEGER NOT NULL,
    updated_at             INTEGER NOT NULL,
    stage_changed_at       INTEGER NOT NULL
);
CREATE INDEX customers_stage ON customers(stage);

CREATE TABLE customer_stage_changes (
    id          TEXT PRIMARY KEY,
    customer_id TEXT NOT NULL REFERENCES customers(id),
    from_stage  TEXT,
    to_stage    TEXT NOT NULL,
    actor       TEXT NOT NULL,
    at          INTEGER NOT NULL
);
CREATE INDEX customer_stage_changes_customer ON customer_stage_changes(customer_id, at);

CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    email         TEXT NOT NULL,
    email_lower   TEXT NOT NULL UNIQUE,
    display_name  TEXT NOT NULL DEFAULT '',
    password_hash TEXT NOT NULL,
    role          TEXT NOT NULL,
    customer_id   TEXT REFERENCES customers(id),
    created_at    INTEGER NOT NULL,
    last_login_at INTEGER,
    disabled_at   INTEGER
);
CREATE INDEX users_customer ON users(customer_id);

CREATE TABLE sessions (
    token_hash   TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL REFERENCES users(id),
    csrf_token   TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    last_seen_at INTEGER NOT NULL,
    ip           TEXT
);
CREATE INDEX sessions_user ON sessions(user_id);

CREATE TABLE api_keys (
    id           TEXT PRIMARY KEY,
    customer_id  TEXT NOT NULL REFERENCES customers(id),
    created_by   TEXT,
    name         TEXT NOT NULL,
    prefix       TEXT NOT NULL,
    key_hash     TEXT NOT NULL UNIQUE,
    created_at   INTEGER NOT NULL,
    last_used_at INTEGER,
    revoked_at   INTEGER
);
CREATE INDEX api_keys_customer ON api_keys(customer_id);

CREATE TABLE login_failures (
    scope         TEXT PRIMARY KEY,
    failures      INTEGER NOT NULL,
    window_start  INTEGER NOT NULL,
    locked_until  INTEGER
);

CREATE TABLE audit_log (
    id          TEXT PRIMARY KEY,
    at          INTEGER NOT NULL,
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    subject     TEXT NOT NULL,
    customer_id TEXT,
    detail      TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_log_at ON audit_log(at);
CREATE INDEX audit_log_customer ON audit_log(customer_id, at);

-- The outbox: seq order is commit order (SQLite has one writer at a time).
CREATE TABLE events (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    id          TEXT NOT NULL UNIQUE,
    kind        TEXT NOT NULL,
    customer_id TEXT,
    payload     TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);
CREATE INDEX events_kind ON events(kind, seq);

CREATE TABLE consumer_cursors (
    consumer   TEXT PRIMARY KEY,
    last_seq   INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

CREATE TABLE jobs (
    id              TEXT PRIMARY KEY,
    queue           TEXT NOT NULL,
    payload         TEXT NOT NULL,
    priority        INTEGER NOT NULL DEFAULT 0,
    run_at          INTEGER NOT NULL,
    state           TEXT NOT NULL,
    lease_owner     TEXT,
    lease_until     INTEGER,
    attempts        INTEGER NOT NULL DEFAULT 0,
    max_attempts    INTEGER NOT NULL,
    last_error      TEXT,
    idempotency_key TEXT UNIQUE,
    created_at      INTEGER NOT NULL,
    finished_at     INTEGER
);
CREATE INDEX jobs_claim ON jobs(queue, state, priority, run_at);

CREATE TABLE settings (
    key        TEXT PRIMARY KEY,
    value      TEXT NOT NULL,
    updated_at INTEGER NOT NULL,
    updated_by TEXT NOT NULL
);
