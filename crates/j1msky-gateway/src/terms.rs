//! A customer's terms as admission reads them, from its row: read by the gateway's short
//! cache for every call and by the customer's view of its limits (`limits`), so both
//! decide from the same facts.

use j1msky_accounts::access::Standing;
use j1msky_accounts::trials::TrialDates;
use j1msky_core::Money;
use j1msky_db::{Db, DbError};

/// A customer's terms (what admission reads, monthly budget, contract calls per hour, the trial whose direct
/// calls share one budget: a granted trial's, else one started at Checkout; the paid
/// period the monthly budget also holds over, as `TrialDates` of its start and end, with
/// the budget that period paid for when billing told it).
pub(crate) type Terms = (Standing, Option<Money>, Option<i64>, Option<TrialDates>, Option<(TrialDates, Option<Money>)>);

type TermsRow = (
    Option<String>,
    Option<i64>,
    Option<i64>,
    String,
    Option<String>,
    Option<i64>,
    i64,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
);

/// A customer's terms as admission reads them, from its row (see [`Terms`]): the
/// gateway's cache and the customer's view of its budget and day share
/// (`limits::customer_month`, `limits::customer_day`) both read them here.
pub(crate) async fn read_terms(db: &Db, id: &str) -> Result<Terms, DbError> {
    let row: Option<TermsRow> = sqlx::query_as(
        "SELECT c.plan, c.monthly_budget_micros, c.contract_calls_per_hour, c.stage, c.billing_status,
                c.billing_status_since, c.payment_method_on_file, t.started_at, t.ends_at,
                c.stripe_trial_started_at, c.stripe_trial_ends_at, c.disputed_since,
                c.paid_period_start, c.paid_period_end, c.paid_period_budget_micros
         FROM customers c LEFT JOIN account_trials t ON t.customer_id = c.id WHERE c.id = $1",
    )
    .bind(id)
    .fetch_optional(db.pool())
    .await?;
    // An unknown customer has no standing: admission refuses it.
    let terms = row.map_or(
        (Standing::default(), None, None, None, None),
        |(plan, budget, calls, stage, status, since, pm, t0, t1, s0, s1, disputed, p0, p1, pb)| {
            let dates = |a: Option<i64>, b: Option<i64>| {
                a.zip(b).map(|(started_at, ends_at)| TrialDates { started_at, ends_at })
            };
            // Only a granted trial ends access at its end; Stripe ends a Checkout
            // trial itself (the subscription moves on, or is cancelled).
            let granted = dates(t0, t1);
            let standing = Standing {
                stage: stage.parse().ok(),
                plan,
                billing_status: status,
                billing_status_since: since,
                payment_method_on_file: pm != 0,
                trial: granted,
                disputed_since: disputed,
            };
            (
                standing,
                budget.map(Money::from_micros),
                calls,
                granted.or(dates(s0, s1)),
                dates(p0, p1).map(|p| (p, pb.map(Money::from_micros))),
            )
        },
    );
    Ok(terms)
}
