-- Alerts that reach people (issue 15 §3).

-- Who acknowledged an alert and when it was resolved (audit writes them).
ALTER TABLE alerts ADD COLUMN acknowledged_by TEXT;
ALTER TABLE alerts ADD COLUMN resolved_at BIGINT;
ALTER TABLE alerts ADD COLUMN resolved_by TEXT;
CREATE INDEX alerts_kind_created ON alerts(kind, created_at);

-- One delivery per (alert, channel): `mail` or `webhook`. `held` = over the per-kind
-- hourly limit, later counted in a digest (`summarised`); `sent`, `failed`.
CREATE TABLE ops_alert_deliveries (
    alert_id    TEXT NOT NULL,
    channel     TEXT NOT NULL,
    kind        TEXT NOT NULL,
    state       TEXT NOT NULL,
    attempts    BIGINT NOT NULL DEFAULT 0,
    last_error  TEXT,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (alert_id, channel)
);
CREATE INDEX ops_alert_deliveries_kind ON ops_alert_deliveries(channel, kind, created_at);
CREATE INDEX ops_alert_deliveries_state ON ops_alert_deliveries(state, created_at);

-- Operator mail goes through the same queue as customer mail, addressed to `recipient` (migration 0034; `to_addr` keeps where it was sent)
-- and to no customer: `customer_id` becomes optional. SQLite cannot drop NOT NULL in
-- place, so the table is rebuilt with the same columns and indexes.
CREATE TABLE lifecycle_messages_new (
    id TEXT PRIMARY KEY,
    customer_id TEXT REFERENCES customers(id),
    source TEXT NOT NULL,
    step TEXT NOT NULL,
    occurrence BIGINT NOT NULL,
    category TEXT NOT NULL,
    template TEXT NOT NULL,
    subject TEXT NOT NULL,
    body_text TEXT NOT NULL,
    body_html TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'queued',
    not_before BIGINT NOT NULL,
    stale_at BIGINT,
    attempts BIGINT NOT NULL DEFAULT 0,
    lease_owner TEXT,
    lease_until BIGINT,
    message_id TEXT NOT NULL,
    to_addr TEXT,
    sent_at BIGINT,
    last_error TEXT,
    created_at BIGINT NOT NULL,
    attempt_at BIGINT,
    UNIQUE (source, step, occurrence)
);
INSERT INTO lifecycle_messages_new (id, customer_id, source, step, occurrence, category, template, subject,
    body_text, body_html, state, not_before, stale_at, attempts, lease_owner, lease_until, message_id, to_addr,
    sent_at, last_error, created_at, attempt_at)
SELECT id, customer_id, source, step, occurrence, category, template, subject,
    body_text, body_html, state, not_before, stale_at, attempts, lease_owner, lease_until, message_id, to_addr,
    sent_at, last_error, created_at, attempt_at FROM lifecycle_messages;
DROP TABLE lifecycle_messages;
ALTER TABLE lifecycle_messages_new RENAME TO lifecycle_messages;
CREATE INDEX lifecycle_messages_due ON lifecycle_messages(state, not_before);
CREATE INDEX lifecycle_messages_customer ON lifecycle_messages(customer_id, created_at);
CREATE INDEX lifecycle_messages_lease ON lifecycle_messages(state, lease_until);
CREATE INDEX lifecycle_messages_sent ON lifecycle_messages(customer_id, sent_at);
