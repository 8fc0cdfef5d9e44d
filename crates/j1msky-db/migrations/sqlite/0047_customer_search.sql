-- The operator finds a customer by the start of its name or contact email, in any case
-- (accounts `customers::search`): each is a range of one of these indexes, not a scan of
-- every customer. SQLite's lower() folds ASCII letters only; the search folds what it
-- looks for with the same function, so both sides agree.
CREATE INDEX customers_name_lower ON customers (lower(name));
CREATE INDEX customers_email_lower ON customers (lower(contact_email));
