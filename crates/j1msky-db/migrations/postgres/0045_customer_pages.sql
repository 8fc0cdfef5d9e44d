-- The operator's customer list pages newest first, whole or one stage, at any number of
-- customers (accounts `customers::list_after`, a cursor of creation time and id): each
-- page is a range of one index instead of a sort of every customer. The stage index takes
-- the list's order after the stage, and still serves counting by stage.
DROP INDEX customers_stage;
CREATE INDEX customers_stage ON customers (stage, created_at, id);
CREATE INDEX customers_created ON customers (created_at, id);
