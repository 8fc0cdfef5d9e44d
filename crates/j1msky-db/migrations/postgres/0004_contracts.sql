-- Limits agreed per customer, for plans whose limits are set by contract (enterprise).
-- NULL means the plan's own limit.
ALTER TABLE customers ADD COLUMN contract_tasks_per_month BIGINT;
ALTER TABLE customers ADD COLUMN contract_calls_per_hour BIGINT;
ALTER TABLE customers ADD COLUMN contract_monthly_price_micros BIGINT;
