-- MRR rollups (owned by j1msky-insights; definitions in docs/KPIS.md), kept by the
-- consumer `insights.mrr` from billing's subscription_history and rebuilt by
-- `j1msky kpi rebuild`. Months are `YYYY-MM` in the business time zone.

-- A customer's MRR at the start and end of a month and the movement between them, for
-- the months where something happened: its first paying month, a movement, a change of
-- plan. A month without a row repeats the previous row's end (nothing if that was 0).
-- `customer_key` is our customer id, or `stripe:<Stripe customer id>` for a Stripe
-- customer not linked yet.
CREATE TABLE insights_mrr_customer_months (
    month           TEXT NOT NULL,
    customer_key    TEXT NOT NULL,
    customer_id     TEXT,
    plan            TEXT NOT NULL,      -- the plan at the end, or at the start if it ended at 0 ('' unknown)
    starting_cents  BIGINT NOT NULL,
    ending_cents    BIGINT NOT NULL,
    movement        TEXT NOT NULL,      -- new, expansion, contraction, churn, reactivation, none
    next_month      TEXT,               -- the customer's next row's month (NULL: this row holds on)
    PRIMARY KEY (customer_key, month)
);
CREATE INDEX insights_mrr_customer_months_movement ON insights_mrr_customer_months(month, movement, plan);

-- The month's sums of the rows above, per plan and for all plans (plan '').
CREATE TABLE insights_mrr_months (
    month                  TEXT NOT NULL,
    plan                   TEXT NOT NULL,
    starting_cents         BIGINT NOT NULL,
    new_cents              BIGINT NOT NULL,
    expansion_cents        BIGINT NOT NULL,
    contraction_cents      BIGINT NOT NULL,
    churn_cents            BIGINT NOT NULL,
    reactivation_cents     BIGINT NOT NULL,
    ending_cents           BIGINT NOT NULL,
    paying_start           BIGINT NOT NULL,
    paying_end             BIGINT NOT NULL,
    new_customers          BIGINT NOT NULL,
    churned_customers      BIGINT NOT NULL,
    reactivated_customers  BIGINT NOT NULL,
    PRIMARY KEY (month, plan)
);

-- The last month the rollups cover (one row, id 1). Every writer of the rollups updates
-- it first, which serialises them.
CREATE TABLE insights_mrr_state (
    id             BIGINT PRIMARY KEY,
    through_month  TEXT NOT NULL
);

-- Discounts that end make MRR move without an event: covering a new month finds them.
CREATE INDEX subscription_history_discount_end ON subscription_history(discount_end);
-- A Stripe customer's snapshots: joined to ours when linked, read again by the consumer.
CREATE INDEX subscription_history_stripe_customer ON subscription_history(stripe_customer_id);
