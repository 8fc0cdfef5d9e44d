-- What decides whether a customer may use the service, beyond its stage and plan: a
-- failed payment (Stripe's `past_due` or `unpaid`, and since when, for the grace
-- period), whether the restriction after the grace period was announced, and whether
-- a payment method is on file (pay-per-task customers without a plan need one).
ALTER TABLE customers ADD COLUMN billing_status TEXT;
ALTER TABLE customers ADD COLUMN billing_status_since BIGINT;
ALTER TABLE customers ADD COLUMN access_restricted_at BIGINT;
ALTER TABLE customers ADD COLUMN payment_method_on_file BIGINT NOT NULL DEFAULT 0;
CREATE INDEX customers_billing_status ON customers(billing_status);
