//! The evening review (spend by model, team and customer; margin per customer with the
//! loss-makers first) and the what-if: the month's ledger repriced under another routing
//! or price list. (Being built: stub.)
