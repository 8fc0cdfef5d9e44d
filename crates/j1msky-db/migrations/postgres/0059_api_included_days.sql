-- Days of direct API calls (`/v1/*`) a customer's plan paid for (j1msky-tasks
-- `api_usage`): no charge, but their model cost is the business's all the same, and the
-- insights count it (team `api`). A day is metered once, as a charge (`usage_charges`,
-- pay-per-task calls) or as one of these, never both: a customer who leaves its plan is
-- not charged afterwards for the days the plan paid for.
CREATE TABLE api_included_days (
    customer_id TEXT NOT NULL REFERENCES customers(id),
    api_day     TEXT NOT NULL,
    cost_micros BIGINT NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (customer_id, api_day)
);
