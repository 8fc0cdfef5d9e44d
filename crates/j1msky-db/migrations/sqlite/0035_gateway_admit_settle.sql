-- PostgreSQL's 0035 adds server-side functions that admit and settle gateway calls in one
-- round trip each. SQLite needs none: one process holds the limits in memory, and shared
-- limits on a SQLite file run as short local transactions. Nothing to change here.
SELECT 1;
