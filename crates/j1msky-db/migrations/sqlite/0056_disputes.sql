-- Disputed charges (j1msky-billing `disputes`): a customer's bank taking a payment back.
--
-- Stripe's dispute object names the charge, not the customer, so a paid invoice's
-- revenue entry now keeps its charge (`charge_id`), filled here for the invoices paid
-- before from their stored `invoice.paid` events.
ALTER TABLE revenue_entries ADD COLUMN charge_id TEXT;
UPDATE revenue_entries SET charge_id = (
    SELECT json_extract(e.payload, '$.data.object.charge') FROM stripe_events e
    WHERE e.type = 'invoice.paid' AND e.object_id = revenue_entries.source_id
      AND json_valid(e.payload) AND json_type(e.payload, '$.data.object.charge') = 'text'
    ORDER BY e.created DESC LIMIT 1)
WHERE kind = 'invoice_paid';
CREATE INDEX revenue_entries_charge ON revenue_entries(charge_id) WHERE charge_id IS NOT NULL;

-- Each dispute as its newest Stripe snapshot says (`version`: the event's created time
-- and id, as `subscriptions.version`). `customer_id` is NULL when the charge is not one
-- of ours. Amounts in Stripe's minor units; times in unix microseconds.
CREATE TABLE disputes (
    id                 TEXT PRIMARY KEY,      -- du_… (dp_… for older ones)
    charge_id          TEXT NOT NULL,
    customer_id        TEXT REFERENCES customers(id),
    stripe_customer_id TEXT,
    amount_cents       INTEGER NOT NULL,
    currency           TEXT NOT NULL,
    reason             TEXT NOT NULL,
    status             TEXT NOT NULL,          -- Stripe's: needs_response, under_review, won, lost, warning_…
    evidence_due_by    INTEGER,
    opened_at          INTEGER NOT NULL,       -- the dispute's `created`
    -- The operator let the customer use the service again despite it (who and when).
    released_at        INTEGER,
    released_by        TEXT,
    version            TEXT NOT NULL,
    updated_at         INTEGER NOT NULL
);
CREATE INDEX disputes_customer ON disputes(customer_id);
CREATE INDEX disputes_status ON disputes(status, evidence_due_by);

-- While a dispute of theirs is open or lost (and not released by the operator), a
-- customer may not use the service: since when (j1msky-accounts `access`).
ALTER TABLE customers ADD COLUMN disputed_since INTEGER;
