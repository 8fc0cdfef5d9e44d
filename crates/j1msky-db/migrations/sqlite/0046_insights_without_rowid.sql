-- The per-customer-month insights rollups as WITHOUT ROWID tables (j1msky-insights
-- `usage`): each is read and written by its primary key, and `kpi rebuild` fills it in
-- that key's order. A rowid table kept every row twice, by rowid and again in the primary
-- key's index; here the key's B-tree holds the row, so the rebuild writes one B-tree per
-- table instead of two. Same columns, keys and indexes; the rows are copied across.
CREATE TABLE insights_usage_new (
    month            TEXT NOT NULL,
    customer_id      TEXT NOT NULL,
    team             TEXT NOT NULL,
    tasks_completed  BIGINT NOT NULL DEFAULT 0,
    tasks_failed     BIGINT NOT NULL DEFAULT 0,
    cost_micros      BIGINT NOT NULL DEFAULT 0,
    charge_micros    BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (month, customer_id, team)
) WITHOUT ROWID;
INSERT INTO insights_usage_new (month, customer_id, team, tasks_completed, tasks_failed, cost_micros, charge_micros) SELECT month, customer_id, team, tasks_completed, tasks_failed, cost_micros, charge_micros FROM insights_usage;
DROP TABLE insights_usage;
ALTER TABLE insights_usage_new RENAME TO insights_usage;

CREATE TABLE insights_model_cost_new (
    month          TEXT NOT NULL,
    customer_id    TEXT NOT NULL,
    team           TEXT NOT NULL,
    model          TEXT NOT NULL,
    calls          BIGINT NOT NULL DEFAULT 0,
    input_tokens   BIGINT NOT NULL DEFAULT 0,
    output_tokens  BIGINT NOT NULL DEFAULT 0,
    cost_micros    BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (month, customer_id, team, model)
) WITHOUT ROWID;
INSERT INTO insights_model_cost_new (month, customer_id, team, model, calls, input_tokens, output_tokens, cost_micros) SELECT month, customer_id, team, model, calls, input_tokens, output_tokens, cost_micros FROM insights_model_cost;
DROP TABLE insights_model_cost;
ALTER TABLE insights_model_cost_new RENAME TO insights_model_cost;

CREATE TABLE insights_pieces_new (
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
) WITHOUT ROWID;
INSERT INTO insights_pieces_new (month, customer_id, team, model, plan, subscription_micros, refunds_micros, charge_micros, cost_micros, calls, completed, failed) SELECT month, customer_id, team, model, plan, subscription_micros, refunds_micros, charge_micros, cost_micros, calls, completed, failed FROM insights_pieces;
DROP TABLE insights_pieces;
ALTER TABLE insights_pieces_new RENAME TO insights_pieces;
CREATE INDEX insights_pieces_customer ON insights_pieces(customer_id, month);

CREATE TABLE insights_split_new (
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
) WITHOUT ROWID;
INSERT INTO insights_split_new (month, team, model, plan, pieces, subscription_micros, refunds_micros, charge_micros, cost_micros, calls, completed, failed) SELECT month, team, model, plan, pieces, subscription_micros, refunds_micros, charge_micros, cost_micros, calls, completed, failed FROM insights_split;
DROP TABLE insights_split;
ALTER TABLE insights_split_new RENAME TO insights_split;

CREATE TABLE insights_margins_new (
    month           TEXT NOT NULL,
    customer_id     TEXT NOT NULL,
    team            TEXT NOT NULL,
    plan            TEXT NOT NULL,
    revenue_micros  BIGINT NOT NULL,
    cost_micros     BIGINT NOT NULL,
    margin_micros   BIGINT NOT NULL,
    completed       BIGINT NOT NULL,
    PRIMARY KEY (month, customer_id, team)
) WITHOUT ROWID;
INSERT INTO insights_margins_new (month, customer_id, team, plan, revenue_micros, cost_micros, margin_micros, completed) SELECT month, customer_id, team, plan, revenue_micros, cost_micros, margin_micros, completed FROM insights_margins;
DROP TABLE insights_margins;
ALTER TABLE insights_margins_new RENAME TO insights_margins;
CREATE INDEX insights_margins_lowest ON insights_margins(month, team, margin_micros, customer_id, plan);

