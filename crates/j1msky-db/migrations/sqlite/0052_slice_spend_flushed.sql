-- PostgreSQL's 0052 writes what calls spend from a process's budget slices a few times a
-- second instead of with every settlement batch. SQLite has no slices: nothing to change.
SELECT 1;
