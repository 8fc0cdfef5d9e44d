-- The plan on each finished task's row (j1msky-insights `usage`): the plan key of its
-- customer now (`pay-per-task` without a plan, `unattributed` for no known customer), so
-- one plan's completion times are one index range, like all plans', instead of a join on
-- `customers` per task. Written by the consumer `insights.usage` and `kpi rebuild`, and
-- moved to the new plan on `customer.plan_changed`.
ALTER TABLE insights_tasks ADD COLUMN plan TEXT NOT NULL DEFAULT '';
UPDATE insights_tasks SET plan = COALESCE(
    (SELECT COALESCE(c.plan, 'pay-per-task') FROM customers c WHERE c.id = insights_tasks.customer_id),
    'unattributed');
CREATE INDEX insights_tasks_plan_times ON insights_tasks(month, plan, team, outcome, duration_ms);
-- A plan change moves the customer's rows.
CREATE INDEX insights_tasks_customer ON insights_tasks(customer_id);
