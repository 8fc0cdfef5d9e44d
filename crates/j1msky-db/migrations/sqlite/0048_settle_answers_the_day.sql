-- PostgreSQL's 0048 lets a settlement batch answer only the budget window its caller
-- reads. SQLite settles without server-side functions: nothing to change here.
SELECT 1;
