-- The period a subscription's last invoice paid for (j1msky-billing's mirror of Stripe's
-- `current_period_start`, unix seconds), and on the customer the deciding subscription's
-- paid period as billing reported it (j1msky-accounts, unix microseconds; NULL when not
-- on a paid period: no plan, a trial, a pause). The gateway holds a plan's monthly model
-- budget to that period as well as to the calendar month, so a subscriber whose period
-- spans two months never spends two months' budgets on one payment. With it, the budget
-- that period paid for (micro-USD; an upgrade mid-period buys its share of the new plan's).
ALTER TABLE subscriptions ADD COLUMN current_period_start BIGINT;
ALTER TABLE customers ADD COLUMN paid_period_start BIGINT;
ALTER TABLE customers ADD COLUMN paid_period_end BIGINT;
ALTER TABLE customers ADD COLUMN paid_period_budget_micros BIGINT;
