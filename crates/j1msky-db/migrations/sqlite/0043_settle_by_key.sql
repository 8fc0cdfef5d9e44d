-- PostgreSQL's 0043 settles a batch of gateway calls by primary key, from sums the
-- gateway computes. SQLite settles in a local transaction (or in memory). Nothing to
-- change here.
SELECT 1;
