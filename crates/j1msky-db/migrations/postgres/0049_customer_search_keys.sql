-- The start of a customer's name or email in any case and with or without accents
-- (accounts `customers::search`). 0047 indexed lower(name), which folds letters beyond
-- ASCII only as the database's locale says, and SQLite's not at all. The keys are now
-- folded in Rust (accounts `customers::search_key`: accents dropped, Unicode lower case),
-- the same on both engines, and stored beside the name, written with every customer;
-- compared byte by byte (COLLATE "C"), so every key starting with what was typed lies
-- between it and it followed by the last code point. Names and emails in ASCII alone
-- fold the same way in SQL and are filled here; any other customer keeps NULL keys,
-- which `customers::fill_search_keys` (run by the binary after the migrations) fills.
ALTER TABLE customers ADD COLUMN search_name TEXT COLLATE "C";
ALTER TABLE customers ADD COLUMN search_email TEXT COLLATE "C";
UPDATE customers SET search_name = lower(name), search_email = lower(contact_email)
WHERE octet_length(name) = char_length(name)
  AND (contact_email IS NULL OR octet_length(contact_email) = char_length(contact_email));
DROP INDEX customers_name_lower;
DROP INDEX customers_email_lower;
CREATE INDEX customers_search_name ON customers (search_name);
CREATE INDEX customers_search_email ON customers (search_email);
