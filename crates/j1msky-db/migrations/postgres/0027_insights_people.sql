-- The customer numbers' rollups (j1msky-insights `people`). Kept by the consumer
-- `insights.people` and recomputed by `j1msky kpi rebuild`; owned by j1msky-insights.

-- One row per customer: its current plan, when it was created, when it first reached
-- each funnel stage (a skipped stage is reached at the instant of the later one) and
-- when it first succeeded at a task, if that was within 7 days of creation.
CREATE TABLE insights_people (
    customer_id  TEXT PRIMARY KEY,
    plan         TEXT,
    created_at   BIGINT NOT NULL,
    lead_at      BIGINT,
    qualified_at BIGINT,
    trial_at     BIGINT,
    paid_at      BIGINT,
    activated_at BIGINT
);
-- Covering indexes: each of the board's counts and medians is a range of one of them,
-- read without touching the rows.
CREATE INDEX insights_people_created ON insights_people(created_at, plan, activated_at);
CREATE INDEX insights_people_lead ON insights_people(lead_at, plan, qualified_at);
CREATE INDEX insights_people_qualified ON insights_people(qualified_at, plan, lead_at, trial_at);
CREATE INDEX insights_people_trial ON insights_people(trial_at, plan, qualified_at, paid_at);
CREATE INDEX insights_people_paid ON insights_people(paid_at, plan, trial_at);

-- Every NPS answer, by the time it was given (the month's NPS reads a range of it).
CREATE TABLE insights_nps (
    survey_id   TEXT PRIMARY KEY,
    customer_id TEXT NOT NULL,
    score       BIGINT NOT NULL,
    answered_at BIGINT NOT NULL
);
CREATE INDEX insights_nps_answered ON insights_nps(answered_at, score, customer_id);

-- Acquisition spend the operator entered per month (YYYY-MM in the business zone),
-- in the business currency's minor units; every change is in the audit log.
CREATE TABLE insights_spend (
    month      TEXT PRIMARY KEY,
    cents      BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    updated_by TEXT NOT NULL
);
