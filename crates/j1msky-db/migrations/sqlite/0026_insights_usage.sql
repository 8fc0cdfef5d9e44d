-- Revenue, model cost, margins and task times per month (j1msky-insights `usage`).
-- Months are `YYYY-MM` in the business time zone. Kept by the consumer `insights.usage`
-- and rebuilt from tasks, llm_calls, revenue_entries and usage charges by `kpi rebuild`.

-- Each finished task's contribution, so a task counted once (and retried later) can be
-- taken back exactly, and completion-time percentiles are read exactly from the index.
CREATE TABLE insights_tasks (
    task_id        TEXT PRIMARY KEY,
    month          TEXT NOT NULL,
    customer_id    TEXT NOT NULL,
    team           TEXT NOT NULL,
    outcome        TEXT NOT NULL,             -- succeeded, failed, cancelled
    duration_ms    BIGINT NOT NULL,           -- queued -> finished
    cost_micros    BIGINT NOT NULL,           -- its ledger rows
    charge_micros  BIGINT NOT NULL,           -- pay-per-task charge (0 on a plan)
    -- The newest ledger row counted: its rows up to here are what it added per model.
    ledger_until   BIGINT NOT NULL
);
CREATE INDEX insights_tasks_times ON insights_tasks(month, team, outcome, duration_ms);

-- Tasks, cost and pay-per-task revenue per month, customer and team (`api`: direct API days).
CREATE TABLE insights_usage (
    month            TEXT NOT NULL,
    customer_id      TEXT NOT NULL,
    team             TEXT NOT NULL,
    tasks_completed  BIGINT NOT NULL DEFAULT 0,
    tasks_failed     BIGINT NOT NULL DEFAULT 0,
    cost_micros      BIGINT NOT NULL DEFAULT 0,
    charge_micros    BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (month, customer_id, team)
);

-- The ledger per month, customer, team and model: what the what-if reprices.
CREATE TABLE insights_model_cost (
    month          TEXT NOT NULL,
    customer_id    TEXT NOT NULL,
    team           TEXT NOT NULL,
    model          TEXT NOT NULL,
    calls          BIGINT NOT NULL DEFAULT 0,
    input_tokens   BIGINT NOT NULL DEFAULT 0,
    output_tokens  BIGINT NOT NULL DEFAULT 0,
    cost_micros    BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (month, customer_id, team, model)
);

-- Subscription revenue and refunds per month, customer ('' until billing links one) and
-- plan ('' for refunds), in minor units.
CREATE TABLE insights_revenue (
    month               TEXT NOT NULL,
    customer_id         TEXT NOT NULL,
    plan                TEXT NOT NULL,
    subscription_cents  BIGINT NOT NULL DEFAULT 0,
    refunds_cents       BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (month, customer_id, plan)
);

-- Which revenue entry (or API day) is counted where, so a refund that grows, or an
-- entry linked to its customer later, moves instead of counting twice.
CREATE TABLE insights_revenue_seen (
    source_id     TEXT PRIMARY KEY,
    kind          TEXT NOT NULL,             -- invoice_paid, refund
    month         TEXT NOT NULL,
    customer_id   TEXT NOT NULL,
    plan          TEXT NOT NULL,
    amount_cents  BIGINT NOT NULL
);

-- The consumer reads a finished task's ledger rows.
CREATE INDEX llm_calls_task ON llm_calls(task_id);
