-- SQLite's migration 0046 stores the per-customer-month insights rollups as WITHOUT ROWID
-- tables; a PostgreSQL table has no rowid, so nothing changes here (the numbers stay in
-- step across the two engines).
SELECT 1;
