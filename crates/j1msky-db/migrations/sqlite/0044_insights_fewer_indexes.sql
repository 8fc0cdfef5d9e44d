-- Fewer secondary indexes on the two largest rollups (j1msky-insights `usage`): `kpi
-- rebuild` builds each one by sorting every row, and at a million customers those sorts
-- were most of its time. One index per table now serves both the all-plans and the
-- one-plan reads: the plan rides at the end of each entry, so a plan's completion times
-- and lowest margins are read by walking the all-plans range and skipping other plans'
-- entries inside the index, without a row lookup.
DROP INDEX insights_tasks_plan_times;
DROP INDEX insights_tasks_times;
CREATE INDEX insights_tasks_times ON insights_tasks(month, team, outcome, duration_ms, plan);
DROP INDEX insights_margins_plan_lowest;
DROP INDEX insights_margins_lowest;
CREATE INDEX insights_margins_lowest ON insights_margins(month, team, margin_micros, customer_id, plan);
