-- Stripe's fees in the usage rollups (j1msky-insights): each customer month's fees from
-- billing's `stripe_fee` entries (cents, positive: what Stripe kept), and their shares on
-- the split's pieces and sums (micro-USD), shared among the customer's (team, model) pairs
-- by cost like refunds. Margins are after fees. Filled by `kpi rebuild` for the fees billing
-- has booked; none exist before this version.
ALTER TABLE insights_revenue ADD COLUMN fees_cents BIGINT NOT NULL DEFAULT 0;
ALTER TABLE insights_pieces ADD COLUMN fees_micros BIGINT NOT NULL DEFAULT 0;
ALTER TABLE insights_split ADD COLUMN fees_micros BIGINT NOT NULL DEFAULT 0;
