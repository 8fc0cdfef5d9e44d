-- Stripe billing: the link to Stripe's customer, the objects `stripe sync` made, every
-- webhook event received (the id is Stripe's, so a redelivery is a no-op), a mirror of
-- each subscription as of its newest event, and the revenue ledger.
ALTER TABLE customers ADD COLUMN stripe_customer_id TEXT;
CREATE UNIQUE INDEX customers_stripe_customer ON customers(stripe_customer_id);
ALTER TABLE usage_charges ADD COLUMN stripe_item_id TEXT;

CREATE TABLE stripe_objects (
    key         TEXT PRIMARY KEY,   -- product:starter, price:starter, coupon:win_back
    stripe_id   TEXT NOT NULL,
    fingerprint TEXT NOT NULL,      -- what we asked for; a change means a new object
    updated_at  INTEGER NOT NULL
);

CREATE TABLE stripe_events (
    id           TEXT PRIMARY KEY,
    type         TEXT NOT NULL,
    object_id    TEXT,
    created      INTEGER NOT NULL,  -- Stripe's `created`, unix seconds
    livemode     INTEGER NOT NULL,
    payload      TEXT NOT NULL,
    received_at  INTEGER NOT NULL,
    state        TEXT NOT NULL,     -- pending, applied, failed
    attempts     INTEGER NOT NULL DEFAULT 0,
    lease_until  INTEGER,
    applied_at   INTEGER,
    error        TEXT
);
CREATE INDEX stripe_events_pending ON stripe_events(state, received_at);

CREATE TABLE subscriptions (
    id                   TEXT PRIMARY KEY,   -- Stripe's sub_…
    customer_id          TEXT REFERENCES customers(id),
    stripe_customer_id   TEXT NOT NULL,
    status               TEXT NOT NULL,
    plan                 TEXT,
    price_id             TEXT,
    current_period_end   INTEGER,
    cancel_at_period_end INTEGER NOT NULL,
    trial_end            INTEGER,
    discount_coupon      TEXT,
    paused_from_plan     TEXT,
    resume_at            INTEGER,
    pending_plan         TEXT,              -- a downgrade waiting for the period end
    schedule_id          TEXT,
    created              INTEGER NOT NULL,
    -- The event the mirror is from, as `{created:012}:{event id}`: a later event wins,
    -- ties broken by id, so any delivery order ends in the same state.
    version              TEXT NOT NULL,
    discount_version     TEXT NOT NULL DEFAULT '',
    updated_at           INTEGER NOT NULL
);
CREATE INDEX subscriptions_customer ON subscriptions(customer_id);
CREATE INDEX subscriptions_stripe_customer ON subscriptions(stripe_customer_id);

CREATE TABLE revenue_entries (
    id           TEXT PRIMARY KEY,
    source_id    TEXT NOT NULL UNIQUE,   -- in_…, ch_…:refunded, uch_…
    kind         TEXT NOT NULL,          -- invoice_paid, refund, usage_charge
    customer_id  TEXT REFERENCES customers(id),
    stripe_customer_id TEXT,             -- to attach entries that arrived before the link
    subscription_id TEXT,
    plan         TEXT,
    amount_cents INTEGER NOT NULL,       -- Stripe minor units; refunds negative
    currency     TEXT NOT NULL,
    period_start INTEGER,
    period_end   INTEGER,
    occurred_at  INTEGER NOT NULL,       -- unix microseconds
    recorded_at  INTEGER NOT NULL
);
CREATE INDEX revenue_entries_customer ON revenue_entries(customer_id, occurred_at);
CREATE INDEX revenue_entries_time ON revenue_entries(occurred_at);
CREATE INDEX revenue_entries_stripe_customer ON revenue_entries(stripe_customer_id);

CREATE TABLE exit_surveys (
    id           TEXT PRIMARY KEY,
    customer_id  TEXT NOT NULL REFERENCES customers(id),
    reason       TEXT NOT NULL,
    comment      TEXT NOT NULL DEFAULT '',
    offer        TEXT,                   -- pause, downgrade, win_back
    outcome      TEXT NOT NULL,          -- open, accepted_offer, cancelled
    created_at   INTEGER NOT NULL,
    decided_at   INTEGER
);
CREATE INDEX exit_surveys_customer ON exit_surveys(customer_id, created_at);
