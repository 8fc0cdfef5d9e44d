-- Which Stripe invoice billed a pay-per-task charge and what became of it (open, paid,
-- void, uncollectible): usage is revenue only once paid, and a charge not yet on an
-- invoice is what the monthly pay-per-task invoice must include.
ALTER TABLE usage_charges ADD COLUMN stripe_invoice_id TEXT;
ALTER TABLE usage_charges ADD COLUMN invoice_status TEXT;
