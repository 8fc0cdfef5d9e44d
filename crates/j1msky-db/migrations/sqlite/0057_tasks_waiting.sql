-- Each customer's waiting and running tasks, counted at every submit (j1msky-tasks
-- `submit`: at most the catalogue's max_waiting_tasks_per_customer). Only those rows are in it, so it
-- stays small however many tasks a customer has run.
CREATE INDEX tasks_waiting_customer ON tasks(customer_id) WHERE state IN ('queued', 'running');
