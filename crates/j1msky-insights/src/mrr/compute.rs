//! The rules, without the database: one customer's MRR at any instant from its
//! subscriptions' history, and its month rows (start, end, movement). The rollups, the
//! property test and the fixtures all go through these functions.

use chrono_tz::Tz;

use crate::Month;

/// One row of `subscription_history`, as MRR needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snap {
    pub subscription: String,
    pub version: String,
    pub status: String,
    pub plan: Option<String>,
    pub currency: String,
    pub amount_cents: i64,
    pub discount_percent_bp: Option<i64>,
    pub discount_amount_cents: Option<i64>,
    pub discount_end: Option<i64>,
    pub effective_at: i64,
}

impl Snap {
    /// The MRR this snapshot says at instant `t` (which must be at or after it): only
    /// `active` and `past_due` pay; the discount is taken off until `discount_end`.
    pub fn value_at(&self, t: i64, currency: &str) -> i64 {
        if !matches!(self.status.as_str(), "active" | "past_due") || !self.currency.eq_ignore_ascii_case(currency) {
            return 0;
        }
        let mut net = self.amount_cents;
        if self.discount_end.is_none_or(|end| t < end) {
            if let Some(bp) = self.discount_percent_bp {
                // The discount rounded to the nearest cent, halves up (as Stripe's invoices).
                net -= (self.amount_cents.saturating_mul(bp.clamp(0, 10_000)) + 5_000) / 10_000;
            }
            if let Some(off) = self.discount_amount_cents {
                net -= off.max(0);
            }
        }
        net.max(0)
    }
}

/// What one customer's month looked like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonthRow {
    pub month: Month,
    pub plan: String,
    pub starting_cents: i64,
    pub ending_cents: i64,
    pub movement: &'static str,
}

/// One customer's snapshots, grouped by subscription in version order.
pub struct Customer {
    subs: Vec<Vec<Snap>>,
    currency: String,
}

impl Customer {
    /// Groups `snaps` (any order) by subscription.
    pub fn new(mut snaps: Vec<Snap>, currency: &str) -> Customer {
        snaps.sort_by(|a, b| (&a.subscription, &a.version).cmp(&(&b.subscription, &b.version)));
        let mut subs: Vec<Vec<Snap>> = Vec::new();
        for s in snaps {
            match subs.last_mut() {
                Some(group) if group[0].subscription == s.subscription => group.push(s),
                _ => subs.push(vec![s]),
            }
        }
        Customer { subs, currency: currency.to_ascii_lowercase() }
    }

    /// The first snapshot's time, if any.
    pub fn first_at(&self) -> Option<i64> {
        self.subs.iter().flat_map(|g| g.iter().map(|s| s.effective_at)).min()
    }

    /// The customer's MRR at `t` and the plan of its largest paying subscription.
    pub fn at(&self, t: i64) -> (i64, Option<&str>) {
        let (mut total, mut best): (i64, Option<(i64, &Snap)>) = (0, None);
        for group in &self.subs {
            // The latest snapshot at or before t (versions order them; equal times keep
            // the version order, which is Stripe's event order).
            let Some(snap) = group.iter().rev().find(|s| s.effective_at <= t) else { continue };
            let v = snap.value_at(t, &self.currency);
            total += v;
            if v > 0 && best.is_none_or(|(b, _)| v > b) {
                best = Some((v, snap));
            }
        }
        (total, best.and_then(|(_, s)| s.plan.as_deref()))
    }

    /// The first instant the customer paid (MRR above zero), if it ever did.
    pub fn first_paid_at(&self) -> Option<i64> {
        let mut first: Option<i64> = None;
        for group in &self.subs {
            for (i, snap) in group.iter().enumerate() {
                let until = group.get(i + 1).map(|n| n.effective_at).unwrap_or(i64::MAX);
                let candidate = if snap.value_at(snap.effective_at, &self.currency) > 0 {
                    Some(snap.effective_at)
                } else {
                    // A full discount that ends while this snapshot holds.
                    snap.discount_end
                        .filter(|end| *end > snap.effective_at && *end < until)
                        .filter(|end| snap.value_at(*end, &self.currency) > 0)
                };
                if let Some(c) = candidate {
                    first = Some(first.map_or(c, |f| f.min(c)));
                    break;
                }
            }
        }
        first
    }

    /// The month rows from the month of the first snapshot through `through` (rows where
    /// the customer paid nothing at start and end are left out). A month's start is the
    /// previous month's end: the instant just before the month's first instant.
    pub fn months(&self, tz: Tz, through: Month) -> Vec<MonthRow> {
        self.months_in(&mut Calendar::new(tz), through)
    }

    /// As [`Customer::months`], with the months' bounds from `cal` (shared by many customers).
    pub fn months_in(&self, cal: &mut Calendar, through: Month) -> Vec<MonthRow> {
        let Some(first) = self.first_at() else { return Vec::new() };
        let first_paid = self.first_paid_at();
        let mut out = Vec::new();
        let mut m = Month::of(cal.tz, first);
        let (start0, _) = cal.bounds(m);
        let mut before = self.at(start0 - 1);
        while m <= through {
            let (start, end) = cal.bounds(m);
            let after = self.at(end - 1);
            let (s, e) = (before.0, after.0);
            if s > 0 || e > 0 {
                let movement = classify(s, e, first_paid.is_some_and(|f| f < start));
                let plan = if e > 0 { after.1 } else { before.1 };
                out.push(MonthRow {
                    month: m,
                    plan: plan.unwrap_or_default().to_string(),
                    starting_cents: s,
                    ending_cents: e,
                    movement,
                });
            }
            before = after;
            m = m.next();
        }
        out
    }
}

/// Months' bounds in a zone, each computed once.
pub struct Calendar {
    pub tz: Tz,
    known: std::collections::HashMap<Month, (i64, i64)>,
}

impl Calendar {
    pub fn new(tz: Tz) -> Calendar {
        Calendar { tz, known: std::collections::HashMap::new() }
    }

    /// `[start, end)` of `m` in unix micros.
    pub fn bounds(&mut self, m: Month) -> (i64, i64) {
        let tz = self.tz;
        *self.known.entry(m).or_insert_with(|| m.bounds(tz))
    }
}

/// The movement from `start` to `end` MRR; `paid_before`: the customer paid at some
/// instant before the month began.
pub fn classify(start: i64, end: i64, paid_before: bool) -> &'static str {
    match (start, end) {
        (0, 0) => "none",
        (0, _) if paid_before => "reactivation",
        (0, _) => "new",
        (_, 0) => "churn",
        (s, e) if e > s => "expansion",
        (s, e) if e < s => "contraction",
        _ => "none",
    }
}

/// A month's sums, in the order of `insights_mrr_months`' columns after `plan`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals(pub [i64; 12]);

/// The columns of [`Totals`].
pub const TOTAL_COLUMNS: [&str; 12] = [
    "starting_cents",
    "new_cents",
    "expansion_cents",
    "contraction_cents",
    "churn_cents",
    "reactivation_cents",
    "ending_cents",
    "paying_start",
    "paying_end",
    "new_customers",
    "churned_customers",
    "reactivated_customers",
];

impl Totals {
    /// One customer's month as sums.
    pub fn of(starting: i64, ending: i64, movement: &str) -> Totals {
        let (s, e) = (starting, ending);
        let is = |m: &str| i64::from(movement == m);
        Totals([
            s,
            if movement == "new" { e } else { 0 },
            if movement == "expansion" { e - s } else { 0 },
            if movement == "contraction" { s - e } else { 0 },
            if movement == "churn" { s } else { 0 },
            if movement == "reactivation" { e } else { 0 },
            e,
            i64::from(s > 0),
            i64::from(e > 0),
            is("new"),
            is("churn"),
            is("reactivation"),
        ])
    }

    pub fn add(&mut self, other: &Totals, sign: i64) {
        for (a, b) in self.0.iter_mut().zip(other.0.iter()) {
            *a += sign * b;
        }
    }

    pub fn is_zero(&self) -> bool {
        self.0.iter().all(|v| *v == 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(sub: &str, at: i64, status: &str, amount: i64) -> Snap {
        Snap {
            subscription: sub.into(),
            version: format!("{at:020}"),
            status: status.into(),
            plan: Some("pro".into()),
            currency: "usd".into(),
            amount_cents: amount,
            discount_percent_bp: None,
            discount_amount_cents: None,
            discount_end: None,
            effective_at: at,
        }
    }

    #[test]
    fn only_active_and_past_due_pay_and_the_discount_ends() {
        let mut s = snap("sub_a", 0, "active", 9900);
        s.discount_percent_bp = Some(4000);
        s.discount_end = Some(100);
        // 40 % off 99.00 is 39.60: 59.40 until the end, 99.00 from it.
        assert_eq!(s.value_at(99, "usd"), 5940);
        assert_eq!(s.value_at(100, "usd"), 9900);
        assert_eq!(s.value_at(100, "eur"), 0);
        for status in ["trialing", "incomplete", "incomplete_expired", "unpaid", "canceled", "paused"] {
            assert_eq!(snap("sub_a", 0, status, 9900).value_at(1, "usd"), 0, "{status}");
        }
        assert_eq!(snap("sub_a", 0, "past_due", 9900).value_at(1, "usd"), 9900);
    }

    #[test]
    fn movements() {
        assert_eq!(classify(0, 10, false), "new");
        assert_eq!(classify(0, 10, true), "reactivation");
        assert_eq!(classify(10, 20, true), "expansion");
        assert_eq!(classify(20, 10, true), "contraction");
        assert_eq!(classify(20, 0, true), "churn");
        assert_eq!(classify(20, 20, true), "none");
    }

    #[test]
    fn a_free_start_pays_from_the_discount_end() {
        let mut s = snap("sub_a", 10, "active", 2900);
        s.discount_percent_bp = Some(10_000);
        s.discount_end = Some(50);
        let c = Customer::new(vec![s, snap("sub_a", 80, "canceled", 2900)], "USD");
        assert_eq!(c.first_paid_at(), Some(50));
        assert_eq!(c.at(49).0, 0);
        assert_eq!(c.at(50), (2900, Some("pro")));
        assert_eq!(c.at(80).0, 0);
    }
}
