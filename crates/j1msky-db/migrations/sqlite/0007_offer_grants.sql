-- Every offer (a discount coupon, or the free trial) the server granted a customer, and
-- who or what granted it: a customer cannot name an offer themselves, and the record is
-- what makes "once per customer" (or a cool-down) checkable.
CREATE TABLE offer_grants (
    id               TEXT PRIMARY KEY,
    customer_id      TEXT NOT NULL REFERENCES customers(id),
    offer            TEXT NOT NULL,      -- a catalogue offer id, or `trial`
    granted_by       TEXT NOT NULL,      -- user:…, cli, system, retention:srv_…
    subscription_id  TEXT,               -- the subscription it was applied to, once it is
    checkout_session TEXT,               -- the checkout that carries it, until one is paid
    created_at       INTEGER NOT NULL
);
CREATE INDEX offer_grants_customer ON offer_grants(customer_id, offer);
