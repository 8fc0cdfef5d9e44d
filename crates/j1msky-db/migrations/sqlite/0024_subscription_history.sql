-- Every subscription snapshot billing's applier saw, kept in Stripe's order: MRR at any
-- instant is read from here (j1msky-insights). Owned by j1msky-billing.
CREATE TABLE subscription_history (
    subscription_id       TEXT NOT NULL,
    -- `{created:012}:{event id}`, as `subscriptions.version`: the order of snapshots.
    version               TEXT NOT NULL,
    customer_id           TEXT,              -- ours once linked (joined later, as in subscriptions)
    stripe_customer_id    TEXT NOT NULL,
    status                TEXT NOT NULL,     -- Stripe's: trialing, active, past_due, canceled, ...
    plan                  TEXT,
    currency              TEXT NOT NULL,
    -- The recurring licensed items per month, before discount, in minor units
    -- (yearly prices ÷ 12; metered pay-per-task items excluded).
    amount_cents          BIGINT NOT NULL,
    quantity              BIGINT NOT NULL,
    discount_percent_bp   BIGINT,            -- 20 % off = 2000
    discount_amount_cents BIGINT,            -- per month
    discount_end          BIGINT,            -- unix micros; NULL: until removed
    effective_at          BIGINT NOT NULL,   -- Stripe's event `created`, unix micros
    recorded_at           BIGINT NOT NULL,
    PRIMARY KEY (subscription_id, version)
);
CREATE INDEX subscription_history_customer ON subscription_history(customer_id, effective_at);
CREATE INDEX subscription_history_time ON subscription_history(effective_at);
