-- PostgreSQL's 0036 numbers events by transaction so writers need no global lock. SQLite
-- has one writer at a time, so its `seq` is already commit order. Nothing to change here.
SELECT 1;
