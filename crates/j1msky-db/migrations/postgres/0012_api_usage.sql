-- Pay-per-task customers' direct API calls are charged like tasks: one charge per
-- customer and UTC day (`api_day`, YYYY-MM-DD) of calls made outside any task. Such a
-- charge has no task, so `task_id` becomes optional; exactly one of the two is set.
ALTER TABLE usage_charges ALTER COLUMN task_id DROP NOT NULL;
ALTER TABLE usage_charges ADD COLUMN api_day TEXT;
ALTER TABLE usage_charges ADD CONSTRAINT usage_charges_task_or_day CHECK ((task_id IS NULL) <> (api_day IS NULL));
CREATE UNIQUE INDEX usage_charges_api_day ON usage_charges(customer_id, api_day);
