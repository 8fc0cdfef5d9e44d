-- PostgreSQL's 0036 numbers events by transaction so writers need no global lock, and announces
-- revoked keys and customer changes to other processes. SQLite has one writer at a time,
-- so its `seq` is already commit order, and no other server process to tell.
-- Nothing to change here.
SELECT 1;
