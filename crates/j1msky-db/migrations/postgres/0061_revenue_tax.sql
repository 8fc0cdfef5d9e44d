-- Tax is not revenue (j1msky-billing). `amount_cents` of a revenue entry is now net of tax;
-- `tax_cents` is the tax within the money the entry records (same sign), so the money Stripe
-- moved is `amount_cents + tax_cents`. An `invoice_paid` entry keeps its invoice's
-- `amount_paid` in `paid_cents`: a refund or a dispute on the invoice's charge is booked
-- net of the same share of tax (tax × money ÷ paid). Entries booked before stay as they
-- were (tax 0). Refunds now name their charge in `charge_id` like the other entries do.
ALTER TABLE revenue_entries ADD COLUMN tax_cents BIGINT NOT NULL DEFAULT 0;
ALTER TABLE revenue_entries ADD COLUMN paid_cents BIGINT;
