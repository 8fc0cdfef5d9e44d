-- When an operator last queued a failed or cancelled task again (j1msky_tasks::retry):
-- its wait in the queue, for the SLA check and the queue's oldest wait, counts from then
-- rather than from when the customer first queued it. NULL: never retried.
ALTER TABLE tasks ADD COLUMN requeued_at INTEGER;
