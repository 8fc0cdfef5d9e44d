-- Browsers that logged in to an account before (j1msky-accounts `devices`): a random
-- token in a cookie, its digest here. A failed login from a known browser counts against
-- that browser alone, so failures sent from anywhere else (someone locking the account
-- on purpose) cannot keep its owner out.
CREATE TABLE known_devices (
    token_hash   TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL REFERENCES users(id),
    created_at   BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL
);
CREATE INDEX known_devices_user ON known_devices(user_id, last_seen_at);
