//! Pay-per-task pricing tiers, decided from what the task actually took:
//!
//! - **complex**: a reviewer sent the work back, or the pipeline ran 4 steps or more, or
//!   the steps used more than 6,000 tokens in all, or their model time (how long the
//!   answers that became steps took) exceeded 120 s;
//! - **simple**: at most 2 steps and at most 1,500 tokens in all;
//! - **medium**: everything between.
//!
//! Only the task's own work counts: time it spent queued behind a cap, a budget, a
//! provider's rate limit, a back-off or a dead worker's lease is ours, not the customer's.
//!
//! The prices are the catalogue's `pay_per_task` table (`simple`, `medium`, `complex`).

use j1msky_core::catalogue::Catalogue;
use j1msky_core::clock::SECOND;
use j1msky_core::Money;

/// What the tier is decided from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Effort {
    pub steps: usize,
    pub tokens: i64,
    pub sent_back: bool,
    /// Model time of the stored steps: the latency of each step's answering call.
    pub model_micros: i64,
}

/// The tier name for `effort`.
pub fn tier(effort: Effort) -> &'static str {
    if effort.sent_back || effort.steps >= 4 || effort.tokens > 6_000 || effort.model_micros > 120 * SECOND {
        "complex"
    } else if effort.steps <= 2 && effort.tokens <= 1_500 {
        "simple"
    } else {
        "medium"
    }
}

/// The price of a tier from the catalogue (zero when the catalogue has none).
pub fn price(catalogue: &Catalogue, tier: &str) -> Money {
    catalogue.pay_per_task.get(tier).copied().unwrap_or(Money::ZERO)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(steps: usize, tokens: i64, sent_back: bool, secs: i64) -> Effort {
        Effort { steps, tokens, sent_back, model_micros: secs * SECOND }
    }

    #[test]
    fn tiers_follow_the_documented_rule() {
        assert_eq!(tier(e(2, 1_500, false, 10)), "simple");
        assert_eq!(tier(e(2, 1_501, false, 10)), "medium");
        assert_eq!(tier(e(3, 100, false, 10)), "medium");
        assert_eq!(tier(e(2, 6_001, false, 10)), "complex");
        assert_eq!(tier(e(4, 100, false, 10)), "complex");
        assert_eq!(tier(e(2, 100, true, 10)), "complex");
        assert_eq!(tier(e(1, 100, false, 120)), "simple");
        assert_eq!(tier(e(1, 100, false, 121)), "complex");
    }

    #[test]
    fn prices_come_from_the_catalogue() {
        let c = Catalogue::from_json_str(j1msky_core::catalogue::SHIPPED).expect("catalogue");
        assert_eq!(price(&c, "simple"), Money::from_micros(500_000));
        assert_eq!(price(&c, "medium"), Money::from_micros(2_000_000));
        assert_eq!(price(&c, "complex"), Money::from_micros(5_000_000));
    }
}
