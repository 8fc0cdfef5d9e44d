-- The free trial a customer started through Checkout (its Stripe subscription trialing),
-- as billing reported it: when it started and ends, in unix microseconds. The gateway
-- holds the trial's direct API calls to the same budget as a granted trial's (the plan's
-- price for the trial's share of a month). NULL: not on a Stripe trial.
ALTER TABLE customers ADD COLUMN stripe_trial_started_at BIGINT;
ALTER TABLE customers ADD COLUMN stripe_trial_ends_at BIGINT;
