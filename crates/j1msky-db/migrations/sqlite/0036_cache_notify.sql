-- PostgreSQL's 0036 announces revoked keys and customer changes to other processes.
-- SQLite has no other server process to tell. Nothing to change here.
SELECT 1;
