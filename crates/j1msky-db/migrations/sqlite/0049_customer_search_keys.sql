-- The start of a customer's name or email in any case and with or without accents
-- (accounts `customers::search`). 0047 indexed lower(name), but SQLite's lower() folds
-- ASCII letters only: `élodie` did not find `Élodie`. The keys are now folded in Rust
-- (accounts `customers::search_key`: accents dropped, Unicode lower case) and stored
-- beside the name, written with every customer. Names and emails in ASCII alone fold
-- the same way in SQL and are filled here; any other customer keeps NULL keys, which
-- `customers::fill_search_keys` (run by the binary after the migrations) fills.
ALTER TABLE customers ADD COLUMN search_name TEXT;
ALTER TABLE customers ADD COLUMN search_email TEXT;
UPDATE customers SET search_name = lower(name), search_email = lower(contact_email)
WHERE length(CAST(name AS BLOB)) = length(name)
  AND (contact_email IS NULL OR length(CAST(contact_email AS BLOB)) = length(contact_email));
DROP INDEX customers_name_lower;
DROP INDEX customers_email_lower;
CREATE INDEX customers_search_name ON customers (search_name);
CREATE INDEX customers_search_email ON customers (search_email);
