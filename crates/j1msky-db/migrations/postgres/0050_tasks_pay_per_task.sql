-- Whether a task was admitted as pay-per-task (j1msky-tasks `submit`): its steps' outputs
-- are delivered only once it succeeded, and so was charged (`submit::withhold_unpaid_work`).
-- That was decided by the customer's plan when the task was read, so a customer who
-- started a plan (a trial is enough) saw the outputs of every pay-per-task task that had
-- failed or been cancelled, unpaid. Tasks stored before this column are taken as the
-- customer's plan says now, as before.
ALTER TABLE tasks ADD COLUMN pay_per_task BIGINT NOT NULL DEFAULT 0;
UPDATE tasks SET pay_per_task = 1
WHERE customer_id IN (SELECT id FROM customers WHERE plan IS NULL);
