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
-- and to no customer: `customer_id` becomes optional.
ALTER TABLE lifecycle_messages ALTER COLUMN customer_id DROP NOT NULL;
