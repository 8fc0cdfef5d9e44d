-- The split of subscription revenue across teams and models (docs/KPIS.md), kept as
-- rollups so the board reads a few hundred rows instead of every active customer's
-- (j1msky-insights `usage::split`). The consumer `insights.usage` recomputes a
-- customer's month when its usage, revenue or plan changes; `kpi rebuild` recomputes all.

-- Each customer's month after the split: one row per (team, model) piece, with the
-- customer's plan key (`pay-per-task`, `unattributed`) when it was computed. Model ''
-- carries a team's task counts; team and model `unattributed` revenue without cost.
CREATE TABLE insights_pieces (
    month                TEXT NOT NULL,
    customer_id          TEXT NOT NULL,
    team                 TEXT NOT NULL,
    model                TEXT NOT NULL,
    plan                 TEXT NOT NULL,
    subscription_micros  BIGINT NOT NULL,
    refunds_micros       BIGINT NOT NULL,
    charge_micros        BIGINT NOT NULL,
    cost_micros          BIGINT NOT NULL,
    calls                BIGINT NOT NULL,
    completed            BIGINT NOT NULL,
    failed               BIGINT NOT NULL,
    PRIMARY KEY (month, customer_id, team, model)
);
-- A plan change recomputes the customer's months.
CREATE INDEX insights_pieces_customer ON insights_pieces(customer_id, month);

-- The pieces summed per month, team, model and plan (`pieces` counts them: a row with
-- none left is no row; the rebuild drops it). The board's totals, teams, models and plans.
CREATE TABLE insights_split (
    month                TEXT NOT NULL,
    team                 TEXT NOT NULL,
    model                TEXT NOT NULL,
    plan                 TEXT NOT NULL,
    pieces               BIGINT NOT NULL,
    subscription_micros  BIGINT NOT NULL,
    refunds_micros       BIGINT NOT NULL,
    charge_micros        BIGINT NOT NULL,
    cost_micros          BIGINT NOT NULL,
    calls                BIGINT NOT NULL,
    completed            BIGINT NOT NULL,
    failed               BIGINT NOT NULL,
    PRIMARY KEY (month, team, model, plan)
);

-- Each customer's margin in the month, per team and over all teams (team ''): the
-- lowest margins are the first rows of an index range.
CREATE TABLE insights_margins (
    month           TEXT NOT NULL,
    customer_id     TEXT NOT NULL,
    team            TEXT NOT NULL,
    plan            TEXT NOT NULL,
    revenue_micros  BIGINT NOT NULL,
    cost_micros     BIGINT NOT NULL,
    margin_micros   BIGINT NOT NULL,
    completed       BIGINT NOT NULL,
    PRIMARY KEY (month, customer_id, team)
);
CREATE INDEX insights_margins_lowest ON insights_margins(month, team, margin_micros, customer_id);
CREATE INDEX insights_margins_plan_lowest ON insights_margins(month, team, plan, margin_micros, customer_id);
