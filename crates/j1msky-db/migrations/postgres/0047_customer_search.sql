-- The operator finds a customer by the start of its name or contact email, in any case
-- (accounts `customers::search`): each is a range of one of these indexes, not a scan of
-- every customer. Compared byte by byte (COLLATE "C"), so that every name starting with
-- what was typed lies between it and it followed by the last code point, whatever the
-- database's collation.
CREATE INDEX customers_name_lower ON customers ((lower(name) COLLATE "C"));
CREATE INDEX customers_email_lower ON customers ((lower(contact_email) COLLATE "C"));
