-- When a customer without a plan got one (accounts: the subscription state billing
-- derives, or a trial granted). Direct API calls made before it were admitted as
-- pay-per-task and are charged as such (j1msky-tasks `api_usage::meter_api_calls`); the
-- meter used to read the plan only as it is when a day is metered, so a plan started
-- before then left the day's calls unbilled. NULL: the customer never went without a plan
-- since this column exists (calls of a customer with a plan are the plan's).
ALTER TABLE customers ADD COLUMN plan_since BIGINT;
