-- A plan's SLA priority becomes the major part of a task's rank (j1msky_tasks::Priority):
-- rank = sla × 10,000 + band (high 2000, normal 1000, low 0), where it was band + sla, so
-- a Starter task marked high no longer goes before an Enterprise task. Tasks still queued
-- under an SLA take the new rank; finished ones keep theirs (below 10,000 they read as
-- their band either way).
UPDATE tasks
   SET priority = (priority % 1000) * 10000 + (priority / 1000) * 1000
 WHERE state = 'queued' AND priority < 10000 AND priority % 1000 > 0;
