//! The customer numbers' arithmetic, apart from any storage so each formula is tested
//! on hand-computed inputs. Integers throughout: rates in basis points, money in cents;
//! every division rounds once, at the end, to the nearest unit (halves away from zero).

use crate::figures::{Mrr, Nps, Usage};

/// `num ÷ den` rounded to the nearest integer, halves away from zero; `None` when `den`
/// is zero. Saturates at the `i64` range.
pub fn div_round(num: i128, den: i128) -> Option<i64> {
    if den == 0 {
        return None;
    }
    let (num, den) = if den < 0 { (-num, -den) } else { (num, den) };
    let half = den / 2;
    let q = if num >= 0 { (num + half) / den } else { (num - half) / den };
    Some(i64::try_from(q).unwrap_or(if q > 0 { i64::MAX } else { i64::MIN }))
}

/// `num ÷ den` in basis points (1 % = 100 bp); `None` when `den` is zero.
pub fn bp(num: i64, den: i64) -> Option<i64> {
    div_round(i128::from(num) * 10_000, i128::from(den))
}

/// Customers who stopped paying in the month ÷ customers paying at its start.
pub fn customer_churn_bp(mrr: &Mrr) -> Option<i64> {
    bp(mrr.churned_customers, mrr.paying_start)
}

/// (churned + contracted MRR) ÷ starting MRR.
pub fn gross_revenue_churn_bp(mrr: &Mrr) -> Option<i64> {
    bp(mrr.churn_cents + mrr.contraction_cents, mrr.starting_cents)
}

/// (churned + contracted − expanded − reactivated MRR) ÷ starting MRR; below zero when
/// the customers kept grow more than the ones lost shrink.
pub fn net_revenue_churn_bp(mrr: &Mrr) -> Option<i64> {
    let lost = mrr.churn_cents + mrr.contraction_cents - mrr.expansion_cents - mrr.reactivation_cents;
    bp(lost, mrr.starting_cents)
}

/// Ending MRR ÷ customers paying at the month's end.
pub fn arpa_cents(mrr: &Mrr) -> Option<i64> {
    div_round(i128::from(mrr.ending_cents), i128::from(mrr.paying_end))
}

/// The sums over the trailing months that LTV is computed from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Trailing {
    /// Σ ending MRR (cents) and Σ paying customers at the months' ends: ARPA.
    pub ending_cents: i64,
    pub paying_end: i64,
    /// Σ gross margin and Σ revenue (micro-USD): gross margin %.
    pub margin_micros: i64,
    pub revenue_micros: i64,
    /// Σ customers who stopped paying and Σ paying at the months' starts: churn rate.
    pub churned: i64,
    pub paying_start: i64,
}

impl Trailing {
    /// Adds one month's sections.
    pub fn add(&mut self, mrr: &Mrr, usage: &Usage) {
        self.ending_cents += mrr.ending_cents;
        self.paying_end += mrr.paying_end;
        self.margin_micros += usage.gross_margin_micros;
        self.revenue_micros += usage.revenue_micros;
        self.churned += mrr.churned_customers;
        self.paying_start += mrr.paying_start;
    }

    /// ARPA × gross margin % ÷ monthly customer churn rate, each over the trailing months:
    /// `(Σending ÷ Σpaying_end) × (Σmargin ÷ Σrevenue) ÷ (Σchurned ÷ Σpaying_start)`,
    /// in cents. `None` when a denominator is zero (no churn: the lifetime is unbounded).
    pub fn ltv_cents(&self) -> Option<i64> {
        let num = i128::from(self.ending_cents) * i128::from(self.margin_micros) * i128::from(self.paying_start);
        let den = i128::from(self.paying_end) * i128::from(self.revenue_micros) * i128::from(self.churned);
        div_round(num, den)
    }
}

/// Acquisition spend ÷ new paying customers; `None` without spend or new customers.
pub fn cac_cents(spend_cents: Option<i64>, new_customers: i64) -> Option<i64> {
    div_round(i128::from(spend_cents?), i128::from(new_customers))
}

/// LTV ÷ CAC × 100 (250 reads 2.5:1); `None` when either is unknown or CAC is zero.
pub fn ltv_to_cac_x100(ltv_cents: Option<i64>, cac_cents: Option<i64>) -> Option<i64> {
    div_round(i128::from(ltv_cents?) * 100, i128::from(cac_cents?))
}

/// NPS of answers counted by score: promoters 9–10, passives 7–8, detractors 0–6;
/// `% promoters − % detractors`, rounded toward zero. `None` without answers.
pub fn nps(promoters: i64, passives: i64, detractors: i64) -> Option<Nps> {
    let responses = promoters + passives + detractors;
    if responses == 0 {
        return None;
    }
    Some(Nps { responses, promoters, passives, detractors, score: (promoters - detractors) * 100 / responses })
}

/// The median of `values` (the mean of the middle two for an even count, rounded).
pub fn median(values: &mut [i64]) -> Option<i64> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        Some(values[mid])
    } else {
        div_round(i128::from(values[mid - 1]) + i128::from(values[mid]), 2)
    }
}

/// Microseconds to whole hours, rounded to the nearest.
pub fn hours(micros: i64) -> i64 {
    div_round(i128::from(micros), 3_600_000_000).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mrr(starting: i64, new: i64, exp: i64, contr: i64, churn: i64, react: i64) -> Mrr {
        Mrr {
            starting_cents: starting,
            new_cents: new,
            expansion_cents: exp,
            contraction_cents: contr,
            churn_cents: churn,
            reactivation_cents: react,
            ending_cents: starting + new + exp + react - contr - churn,
            ..Mrr::default()
        }
    }

    #[test]
    fn rounding_is_to_the_nearest_and_halves_go_away_from_zero() {
        assert_eq!(div_round(5, 2), Some(3));
        assert_eq!(div_round(-5, 2), Some(-3));
        assert_eq!(div_round(4, 3), Some(1));
        assert_eq!(div_round(5, 3), Some(2));
        assert_eq!(div_round(1, 0), None);
        assert_eq!(div_round(i128::MAX / 2, 1), Some(i64::MAX));
        // 1 of 3 = 33.33 % = 3333 bp; 2 of 3 = 6666.67 → 6667 bp.
        assert_eq!(bp(1, 3), Some(3_333));
        assert_eq!(bp(2, 3), Some(6_667));
    }

    #[test]
    fn churn_rates_from_the_mrr_section() {
        // Start: 10 paying customers, $1,000.00 MRR. Movements: +$99 new, +$50 expansion,
        // −$20 contraction, −$49 churn (1 customer), +$30 reactivation.
        let mut m = mrr(100_000, 9_900, 5_000, 2_000, 4_900, 3_000);
        m.paying_start = 10;
        m.churned_customers = 1;
        m.paying_end = 11;
        assert_eq!(m.ending_cents, 111_000);
        // 1 ÷ 10 = 10 %.
        assert_eq!(customer_churn_bp(&m), Some(1_000));
        // (4,900 + 2,000) ÷ 100,000 = 6.9 %.
        assert_eq!(gross_revenue_churn_bp(&m), Some(690));
        // (4,900 + 2,000 − 5,000 − 3,000) ÷ 100,000 = −1.1 %: the base grew.
        assert_eq!(net_revenue_churn_bp(&m), Some(-110));
        // 111,000 ÷ 11 = 10,090.9 → $100.91.
        assert_eq!(arpa_cents(&m), Some(10_091));
        let empty = Mrr::default();
        assert_eq!(customer_churn_bp(&empty), None);
        assert_eq!(gross_revenue_churn_bp(&empty), None);
        assert_eq!(arpa_cents(&empty), None);
    }

    #[test]
    fn ltv_over_trailing_months() {
        let mut t = Trailing::default();
        // Month 1: 10 → 10 paying, MRR $1,000 at the end, 1 churned; revenue $1,000,
        // margin $600.
        let mut m1 = mrr(100_000, 4_900, 0, 0, 4_900, 0);
        m1.paying_start = 10;
        m1.paying_end = 10;
        m1.churned_customers = 1;
        let u1 = Usage { revenue_micros: 1_000_000_000, gross_margin_micros: 600_000_000, ..Usage::default() };
        // Month 2: 10 → 10 paying, MRR $1,000, nobody churned; revenue $1,000, margin $800.
        let mut m2 = mrr(100_000, 0, 0, 0, 0, 0);
        m2.paying_start = 10;
        m2.paying_end = 10;
        let u2 = Usage { revenue_micros: 1_000_000_000, gross_margin_micros: 800_000_000, ..Usage::default() };
        t.add(&m1, &u1);
        t.add(&m2, &u2);
        // ARPA = 200,000 ÷ 20 = $100; margin = 1,400 ÷ 2,000 = 70 %; churn = 1 ÷ 20 = 5 %.
        // LTV = $100 × 0.7 ÷ 0.05 = $1,400.
        assert_eq!(t.ltv_cents(), Some(140_000));
        // No churn at all: no finite lifetime, no LTV.
        let mut none = Trailing::default();
        none.add(&m2, &u2);
        assert_eq!(none.ltv_cents(), None);
        // No revenue: no margin %, no LTV.
        let mut no_rev = Trailing::default();
        no_rev.add(&m1, &Usage::default());
        assert_eq!(no_rev.ltv_cents(), None);
    }

    #[test]
    fn cac_and_ltv_to_cac() {
        // $1,500 spent, 3 new paying customers: $500 each.
        assert_eq!(cac_cents(Some(150_000), 3), Some(50_000));
        // Zero new customers: no CAC, not a division by zero.
        assert_eq!(cac_cents(Some(150_000), 0), None);
        assert_eq!(cac_cents(None, 3), None);
        // LTV $1,400 ÷ CAC $500 = 2.8:1.
        assert_eq!(ltv_to_cac_x100(Some(140_000), Some(50_000)), Some(280));
        assert_eq!(ltv_to_cac_x100(Some(140_000), Some(0)), None);
        assert_eq!(ltv_to_cac_x100(None, Some(50_000)), None);
    }

    #[test]
    fn nps_groups_and_score() {
        // 5 promoters, 3 passives, 2 detractors: 50 % − 20 % = 30.
        let n = nps(5, 3, 2).unwrap();
        assert_eq!((n.responses, n.score), (10, 30));
        // 1 promoter, 0 passives, 2 detractors: 33.3 % − 66.7 % = −33.3 → −33 (toward zero).
        assert_eq!(nps(1, 0, 2).unwrap().score, -33);
        assert_eq!(nps(0, 0, 0), None);
    }

    #[test]
    fn medians_and_hours() {
        assert_eq!(median(&mut [5, 1, 3]), Some(3));
        assert_eq!(median(&mut [4, 1, 3, 2]), Some(3)); // (2 + 3) ÷ 2 = 2.5 → 3
        assert_eq!(median(&mut []), None);
        assert_eq!(hours(90 * 60_000_000), 2); // 1.5 h → 2
        assert_eq!(hours(89 * 60_000_000), 1);
    }
}
