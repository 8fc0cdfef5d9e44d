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

-- Filled from the rollups already there (what `usage::split::rebuild` runs), so a
-- database upgraded with its rollups shows the same months before any `kpi rebuild`.
INSERT INTO insights_pieces (month, customer_id, team, model, plan, subscription_micros, refunds_micros,
    charge_micros, cost_micros, calls, completed, failed)
WITH mc AS (SELECT month, customer_id, team, model, cost_micros AS cost, calls FROM insights_model_cost
            WHERE 1 = 1 AND cost_micros > 0),
rv AS (SELECT month, customer_id, CAST(SUM(subscription_cents) AS BIGINT) AS s,
              CAST(SUM(refunds_cents) AS BIGINT) AS f
       FROM insights_revenue WHERE 1 = 1 GROUP BY month, customer_id),
us AS (SELECT month, customer_id, team, charge_micros AS ch, tasks_completed AS done, tasks_failed AS failed
       FROM insights_usage WHERE 1 = 1),
w AS (SELECT mc.month, mc.customer_id, mc.team, mc.model, mc.cost, mc.calls, COALESCE(rv.s, 0) AS s,
             COALESCE(rv.f, 0) AS f, COALESCE(us.ch, 0) / 10000 AS chc,
             COALESCE(us.ch, 0) - COALESCE(us.ch, 0) / 10000 * 10000 AS rem,
             CAST(SUM(mc.cost) OVER (PARTITION BY mc.month, mc.customer_id ORDER BY mc.team, mc.model
                                     ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS BIGINT) AS cc,
             CAST(SUM(mc.cost) OVER (PARTITION BY mc.month, mc.customer_id) AS BIGINT) AS tc,
             CAST(SUM(mc.cost) OVER (PARTITION BY mc.month, mc.customer_id, mc.team ORDER BY mc.model
                                     ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS BIGINT) AS ct,
             CAST(SUM(mc.cost) OVER (PARTITION BY mc.month, mc.customer_id, mc.team) AS BIGINT) AS tt
      FROM mc LEFT JOIN rv ON rv.month = mc.month AND rv.customer_id = mc.customer_id
              LEFT JOIN us ON us.month = mc.month AND us.customer_id = mc.customer_id AND us.team = mc.team),
p AS (SELECT month, customer_id, team, model, cost, calls,
             (s * cc / tc - s * (cc - cost) / tc) * 10000 AS sub,
             (f * cc / tc - f * (cc - cost) / tc) * 10000 AS ref,
             (chc * ct / tt - chc * (ct - cost) / tt) * 10000 + CASE WHEN ct = tt THEN rem ELSE 0 END AS chg,
             CAST(0 AS BIGINT) AS done, CAST(0 AS BIGINT) AS failed
      FROM w
      UNION ALL
      SELECT month, customer_id, 'unattributed', 'unattributed', 0, 0, s * 10000, f * 10000, 0, 0, 0 FROM rv
      WHERE (s <> 0 OR f <> 0)
        AND NOT EXISTS (SELECT 1 FROM mc x WHERE x.month = rv.month AND x.customer_id = rv.customer_id)
      UNION ALL
      SELECT month, customer_id, team, 'unattributed', 0, 0, 0, 0, ch, 0, 0 FROM us
      WHERE ch <> 0 AND NOT EXISTS (SELECT 1 FROM mc x WHERE x.month = us.month
                                    AND x.customer_id = us.customer_id AND x.team = us.team)
      UNION ALL
      SELECT month, customer_id, team, '', 0, 0, 0, 0, 0, done, failed FROM us WHERE done <> 0 OR failed <> 0)
SELECT p.month, p.customer_id, p.team, p.model,
       CASE WHEN c.id IS NULL THEN 'unattributed' WHEN c.plan IS NULL THEN 'pay-per-task' ELSE c.plan END,
       CAST(SUM(p.sub) AS BIGINT), CAST(SUM(p.ref) AS BIGINT), CAST(SUM(p.chg) AS BIGINT),
       CAST(SUM(p.cost) AS BIGINT), CAST(SUM(p.calls) AS BIGINT), CAST(SUM(p.done) AS BIGINT),
       CAST(SUM(p.failed) AS BIGINT)
FROM p LEFT JOIN customers c ON c.id = p.customer_id
GROUP BY p.month, p.customer_id, p.team, p.model, c.id, c.plan;
INSERT INTO insights_split (month, team, model, plan, pieces, subscription_micros, refunds_micros,
    charge_micros, cost_micros, calls, completed, failed)
SELECT month, team, model, plan, COUNT(*), CAST(SUM(subscription_micros) AS BIGINT),
       CAST(SUM(refunds_micros) AS BIGINT), CAST(SUM(charge_micros) AS BIGINT),
       CAST(SUM(cost_micros) AS BIGINT), CAST(SUM(calls) AS BIGINT), CAST(SUM(completed) AS BIGINT),
       CAST(SUM(failed) AS BIGINT)
FROM insights_pieces GROUP BY month, team, model, plan;
INSERT INTO insights_margins (month, customer_id, team, plan, revenue_micros, cost_micros, margin_micros, completed)
SELECT month, customer_id, team, MAX(plan), CAST(SUM(subscription_micros - refunds_micros + charge_micros) AS BIGINT),
       CAST(SUM(cost_micros) AS BIGINT),
       CAST(SUM(subscription_micros - refunds_micros + charge_micros - cost_micros) AS BIGINT),
       CAST(SUM(completed) AS BIGINT)
FROM insights_pieces WHERE 1 = 1 GROUP BY month, customer_id, team
UNION ALL
SELECT month, customer_id, '', MAX(plan), CAST(SUM(subscription_micros - refunds_micros + charge_micros) AS BIGINT),
       CAST(SUM(cost_micros) AS BIGINT),
       CAST(SUM(subscription_micros - refunds_micros + charge_micros - cost_micros) AS BIGINT),
       CAST(SUM(completed) AS BIGINT)
FROM insights_pieces WHERE 1 = 1 GROUP BY month, customer_id;
