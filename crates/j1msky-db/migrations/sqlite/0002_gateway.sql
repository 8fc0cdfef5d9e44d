-- Model gateway (sqlite). Keep in step with the other engine's 0002_gateway.sql.

-- Optional monthly spending cap per customer, micro-USD (NULL: none).
ALTER TABLE customers ADD COLUMN monthly_budget_micros INTEGER;

-- Hourly request counters, one row per (scope, clock hour). A request is admitted by a
-- conditional increment (used < cap), so concurrent admissions can never exceed a cap.
CREATE TABLE usage_counters (
    scope        TEXT NOT NULL,
    window_start INTEGER NOT NULL,
    used         INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (scope, window_start)
);

-- Spending windows (the business day, a customer's month): reserved before a call at its
-- maximum cost, settled to the actual cost after. reserved + spent never exceeds cap_micros.
CREATE TABLE budget_windows (
    scope          TEXT NOT NULL,
    window_start   INTEGER NOT NULL,
    cap_micros     INTEGER NOT NULL,
    reserved_micros INTEGER NOT NULL DEFAULT 0,
    spent_micros   INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (scope, window_start)
);

-- The cost ledger: one row per upstream attempt.
CREATE TABLE llm_calls (
    id              TEXT PRIMARY KEY,
    request_id      TEXT NOT NULL,
    attempt         INTEGER NOT NULL,
    customer_id     TEXT REFERENCES customers(id),
    task_id         TEXT,
    team            TEXT,
    role            TEXT,
    category        TEXT,
    provider        TEXT NOT NULL,
    model_requested TEXT NOT NULL,
    model_used      TEXT NOT NULL,
    input_tokens    INTEGER NOT NULL DEFAULT 0,
    output_tokens   INTEGER NOT NULL DEFAULT 0,
    cost_micros     INTEGER NOT NULL DEFAULT 0,
    latency_micros  INTEGER NOT NULL DEFAULT 0,
    outcome         TEXT NOT NULL,
    fallback_reason TEXT,
    created_at      INTEGER NOT NULL,
    UNIQUE (request_id, attempt)
);
CREATE INDEX llm_calls_created ON llm_calls(created_at);
CREATE INDEX llm_calls_customer ON llm_calls(customer_id, created_at);

-- Things the operator must see (budget levels crossed, provider auth failures...).
CREATE TABLE alerts (
    id              TEXT PRIMARY KEY,
    kind            TEXT NOT NULL,
    message         TEXT NOT NULL,
    detail          TEXT NOT NULL DEFAULT '{}',
    created_at      INTEGER NOT NULL,
    acknowledged_at INTEGER
);
CREATE INDEX alerts_created ON alerts(created_at);
