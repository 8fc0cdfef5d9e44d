-- Claiming walks one of these and stops at its first row (see the worker's claim).
CREATE INDEX tasks_queued_order ON tasks(state, priority DESC, not_before, queued_at, id);
CREATE INDEX tasks_lease ON tasks(state, lease_until);
