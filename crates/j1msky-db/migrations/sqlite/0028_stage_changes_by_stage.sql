-- The churn-spike count reads the churned moves of a few weeks; without this index it
-- read every stage change (or, before, every customer.stage_changed event) ever written.
CREATE INDEX customer_stage_changes_to_stage ON customer_stage_changes(to_stage, at);
