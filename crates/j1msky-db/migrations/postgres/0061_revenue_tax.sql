-- Tax is not revenue (j1msky-billing). `amount_cents` of a revenue entry is now net of tax;
-- `tax_cents` is the tax within the money the entry records (same sign), so the money Stripe
-- moved is `amount_cents + tax_cents`. An `invoice_paid` entry keeps its invoice's
-- `amount_paid` in `paid_cents`: a refund or a dispute on the invoice's charge is booked
-- net of the same share of tax (tax × money ÷ paid). Entries booked before stay as they
-- were (tax 0). Refunds now name their charge in `charge_id` like the other entries do.
ALTER TABLE revenue_entries ADD COLUMN tax_cents BIGINT NOT NULL DEFAULT 0;
ALTER TABLE revenue_entries ADD COLUMN paid_cents BIGINT;

-- Stripe's fees (j1msky-billing::fees): entries of kind `stripe_fee`, one per balance
-- transaction (`source_id` its `txn_…` id), `amount_cents` the fee as revenue sees it
-- (negative: money Stripe kept). A paid invoice's processing fee is read from Stripe by a
-- billing timer; `fee_fetched_at` marks the `invoice_paid` entries it has read (those
-- booked before this migration are marked 0: their fees are not fetched).
ALTER TABLE revenue_entries ADD COLUMN fee_fetched_at BIGINT;
UPDATE revenue_entries SET fee_fetched_at = 0 WHERE kind = 'invoice_paid';
CREATE INDEX revenue_entries_fee_due ON revenue_entries(occurred_at)
    WHERE kind = 'invoice_paid' AND charge_id IS NOT NULL AND fee_fetched_at IS NULL;
