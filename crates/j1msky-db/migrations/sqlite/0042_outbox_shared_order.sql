-- PostgreSQL's 0042 lets outbox writers run side by side and gives readers a safe mark.
-- SQLite has one writer at a time, so its numbers already commit in order. Nothing to
-- change here.
SELECT 1;
