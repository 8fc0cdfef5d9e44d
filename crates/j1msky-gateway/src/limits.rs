//! Hourly request caps and spending budgets, exact under concurrency and across
//! processes: every admission is a conditional increment in the database
//! (`used < cap`, `reserved + spent + amount <= cap`) that takes all of a request's
//! scopes or none: on SQLite one transaction, on PostgreSQL one statement
//! ([`crate::roundtrip`]).
//!
//! Each reservation is also a row naming its owner (the gateway instance) and an expiry:
//! a lease that a live owner keeps renewing ([`renew`], from its sweeper), so one held by
//! a process that died stops being renewed and is released by [`release_expired`] within
//! one lease, rather than blocking the budget until the window ends.

use j1msky_core::clock::SECOND;
use j1msky_core::Money;
use j1msky_db::{Backend, Db, DbError, Tx};

pub use crate::admission::{Budget, Cap, LimitError, Reservation, HOUR, RESERVATION_RENEW_EVERY, RESERVATION_TTL};
use crate::leases::{LeaseKind, Leased, Leases};
use crate::roundtrip::{self, Refusal};

/// Counts one request against every cap and reserves `amount` in every budget, or
/// nothing at all; `owner` names the process holding the reservation.
pub async fn admit(
    db: &Db,
    caps: &[Cap],
    budgets: &[Budget],
    amount: Money,
    now: i64,
    owner: &str,
) -> Result<Reservation, LimitError> {
    admit_leased(db, None, caps, budgets, amount, now, owner).await
}

/// As [`admit`]; on PostgreSQL with `leases`, the scopes every call shares are taken from
/// this process's slices ([`crate::leases`]) and only the rest go to the database.
pub(crate) async fn admit_leased(
    db: &Db,
    leases: Option<&Leases>,
    caps: &[Cap],
    budgets: &[Budget],
    amount: Money,
    now: i64,
    owner: &str,
) -> Result<Reservation, LimitError> {
    let (window, window_end) = j1msky_core::windows::hour(now);
    let mut caps: Vec<&Cap> = caps.iter().collect();
    // A fixed order of row locks, so two admissions never wait on each other in a cycle;
    // the rows every call shares (the global cap, then the budgets) come last, so they
    // are held only for the last statements before the commit.
    caps.sort_by(|a, b| (a.scope == "global", &a.scope).cmp(&(b.scope == "global", &b.scope)));
    let mut budgets: Vec<&Budget> = budgets.iter().collect();
    budgets.sort_by(|a, b| a.scope.cmp(&b.scope));
    let retry_after_secs = ((window_end - now).max(0) as u64).div_ceil(SECOND as u64);
    if let Some(cap) = caps.iter().find(|c| c.cap <= 0) {
        return Err(LimitError::Cap { scope: cap.scope.clone(), cap: cap.cap, retry_after_secs });
    }
    let id = j1msky_core::ids::new_id("rsv");
    let held = |budgets: &[&Budget], leased: Vec<Leased>| Reservation {
        id: id.clone(),
        budgets: budgets.iter().map(|b| (b.scope.clone(), b.window_start)).collect(),
        amount,
        leased,
    };
    if db.backend() == Backend::Postgres {
        let (caps, budgets, taken) = match leases {
            Some(leases) => match take_slices(db, leases, &caps, window, &budgets, amount, now).await {
                Ok(split) => split,
                Err(e) => return Err(e.into()),
            },
            None => (caps, budgets, Vec::new()),
        };
        if caps.is_empty() && budgets.is_empty() {
            return Ok(held(&budgets, taken));
        }
        let expires_at = now.saturating_add(RESERVATION_TTL);
        let answer = roundtrip::admit(db, &caps, window, &budgets, amount, &id, owner, expires_at).await;
        if !matches!(answer, Ok(None)) {
            if let Some(leases) = leases {
                leases.untake(&taken).await;
            }
        }
        return match answer? {
            None => Ok(held(&budgets, taken)),
            Some(Refusal::Cap(i)) => {
                let cap = caps.get(i).ok_or_else(|| DbError::Corrupt(format!("no cap number {i}")))?;
                Err(LimitError::Cap { scope: cap.scope.clone(), cap: cap.cap, retry_after_secs })
            }
            Some(Refusal::Budget(i, committed)) => {
                let b = budgets.get(i).ok_or_else(|| DbError::Corrupt(format!("no budget number {i}")))?;
                Err(refused(b, committed, amount, now))
            }
        };
    }
    let mut tx = db.begin().await?;
    for cap in caps {
        // One statement: the first call of the hour makes the row, later ones count
        // while under the cap; no row changed means the cap is reached.
        let done = sqlx::query(
            "INSERT INTO usage_counters (scope, window_start, used) VALUES ($1, $2, 1)
             ON CONFLICT (scope, window_start) DO UPDATE SET used = usage_counters.used + 1
             WHERE usage_counters.used < $3",
        )
        .bind(&cap.scope)
        .bind(window)
        .bind(cap.cap)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            tx.rollback().await?;
            return Err(LimitError::Cap { scope: cap.scope.clone(), cap: cap.cap, retry_after_secs });
        }
    }
    for b in &budgets {
        reserve(&mut tx, b, amount, now).await?;
        sqlx::query(
            "INSERT INTO budget_reservations (id, scope, window_start, owner, amount_micros, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&id)
        .bind(&b.scope)
        .bind(b.window_start)
        .bind(owner)
        .bind(amount.micros())
        .bind(now.saturating_add(RESERVATION_TTL))
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(held(&budgets, Vec::new()))
}

/// The caps and budgets left to admit per call (still in lock order) once the shared
/// scopes were taken from this process's slices, and what was taken.
type Split<'a> = (Vec<&'a Cap>, Vec<&'a Budget>, Vec<Leased>);

async fn take_slices<'a>(
    db: &Db,
    leases: &Leases,
    caps: &[&'a Cap],
    window: i64,
    budgets: &[&'a Budget],
    amount: Money,
    now: i64,
) -> Result<Split<'a>, DbError> {
    let (mut per_call_caps, mut per_call_budgets, mut taken) = (Vec::new(), Vec::new(), Vec::new());
    let wanted = caps.iter().map(|c| (LeaseKind::Cap, c.scope.as_str(), window, c.cap, 1, Either::Cap(c))).chain(
        budgets.iter().map(|b| {
            (LeaseKind::Budget, b.scope.as_str(), b.window_start, b.cap.micros(), amount.micros(), Either::Budget(b))
        }),
    );
    for (kind, scope, window_start, cap, need, limit) in wanted {
        let slice = match leases.wants_slice(kind, scope, window_start, now) {
            true => match leases.take(db, kind, scope, window_start, cap, need, now).await {
                Ok(slice) => slice,
                Err(e) => {
                    leases.untake(&taken).await;
                    return Err(e);
                }
            },
            false => None,
        };
        match (slice, limit) {
            (Some(t), _) => taken.push(t),
            (None, Either::Cap(c)) => per_call_caps.push(c),
            (None, Either::Budget(b)) => per_call_budgets.push(b),
        }
    }
    Ok((per_call_caps, per_call_budgets, taken))
}

enum Either<'a> {
    Cap(&'a Cap),
    Budget(&'a Budget),
}

async fn reserve(tx: &mut Tx, b: &Budget, amount: Money, now: i64) -> Result<(), LimitError> {
    // One statement: the window's first reservation makes the row (if it fits at all),
    // later ones add to it while reserved + spent stay within the cap. The cap is
    // refreshed on every reservation so an operator's change applies at once.
    let done = sqlx::query(
        "INSERT INTO budget_windows (scope, window_start, cap_micros, reserved_micros, spent_micros)
         SELECT $1, $2, $3, $4, 0 WHERE $4 <= $3
         ON CONFLICT (scope, window_start) DO UPDATE SET cap_micros = $3,
             reserved_micros = budget_windows.reserved_micros + $4
         WHERE budget_windows.reserved_micros + budget_windows.spent_micros + $4 <= $3",
    )
    .bind(&b.scope)
    .bind(b.window_start)
    .bind(b.cap.micros())
    .bind(amount.micros())
    .execute(&mut **tx)
    .await?;
    if done.rows_affected() == 1 {
        return Ok(());
    }
    // Refused: say how much is committed (nothing when even the first reservation is too big).
    let row: (i64, i64) = sqlx::query_as(
        "SELECT reserved_micros, spent_micros FROM budget_windows WHERE scope = $1 AND window_start = $2",
    )
    .bind(&b.scope)
    .bind(b.window_start)
    .fetch_optional(&mut **tx)
    .await?
    .unwrap_or((0, 0));
    Err(refused(b, row.0 + row.1, amount, now))
}

fn refused(b: &Budget, committed: i64, asked: Money, now: i64) -> LimitError {
    LimitError::Budget {
        scope: b.scope.clone(),
        cap: b.cap,
        committed: Money::from_micros(committed),
        asked,
        retry_after_secs: ((b.window_end - now).max(0) as u64).div_ceil(SECOND as u64),
    }
}

/// Turns a reservation into the actual spend, inside the caller's transaction. A
/// reservation already released by [`release_expired`] only adds its spend.
pub async fn settle(tx: &mut Tx, r: &Reservation, actual: Money) -> Result<(), DbError> {
    for (scope, window_start) in &r.budgets {
        let held = sqlx::query("DELETE FROM budget_reservations WHERE id = $1 AND scope = $2 AND window_start = $3")
            .bind(&r.id)
            .bind(scope)
            .bind(window_start)
            .execute(&mut **tx)
            .await?;
        let release = if held.rows_affected() == 1 { r.amount.micros() } else { 0 };
        sqlx::query(
            "UPDATE budget_windows SET reserved_micros = reserved_micros - $3, spent_micros = spent_micros + $4
             WHERE scope = $1 AND window_start = $2",
        )
        .bind(scope)
        .bind(window_start)
        .bind(release)
        .bind(actual.micros())
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// Extends the leases of every reservation `owner` (a live process) holds to a full
/// [`RESERVATION_TTL`] from `now`; returns how many were renewed.
pub async fn renew(db: &Db, owner: &str, now: i64) -> Result<u64, DbError> {
    let done = sqlx::query("UPDATE budget_reservations SET expires_at = $1 WHERE owner = $2")
        .bind(now.saturating_add(RESERVATION_TTL))
        .bind(owner)
        .execute(db.pool())
        .await?;
    Ok(done.rows_affected())
}

/// Releases every reservation whose expiry has passed (its process died while holding
/// it); returns how many budget rows were released.
pub async fn release_expired(db: &Db, now: i64) -> Result<u64, DbError> {
    let mut tx = db.begin().await?;
    // (scope, window, reserved to release, spend to move from a slice to the window).
    let mut rows: Vec<(String, i64, i64, i64)> = sqlx::query_as(
        "DELETE FROM budget_reservations WHERE expires_at < $1 RETURNING scope, window_start, amount_micros, CAST(0 AS BIGINT)",
    )
    .bind(now)
    .fetch_all(&mut *tx)
    .await?;
    // Slices of shared limits (migration 0041): a cap's calls stay counted, since nobody
    // knows how many of them the dead process admitted; a budget slice counts as spent in
    // full (what the row holds, its flushed spend included, moves to the window's spend),
    // since what the dead process's calls spent after its last flush (0052) is in the
    // ledger but not on the row, and giving back the rest could let the budget be spent
    // twice. The cost of a crash is the rest of the dead process's slices until their
    // windows end, as a crashed SQLite process's reservations count as spent.
    let slices: Vec<(String, String, i64, i64, i64)> = sqlx::query_as(
        "DELETE FROM limit_leases WHERE expires_at < $1 RETURNING kind, scope, window_start, amount, spent",
    )
    .bind(now)
    .fetch_all(&mut *tx)
    .await?;
    rows.extend(
        slices
            .into_iter()
            .filter(|s| s.0 == "budget" && (s.3 > 0 || s.4 != 0))
            // The shared row holds the slice's whole take (`amount + spent`); what its
            // calls spent beyond it (`amount` below zero) is spend as well.
            .map(|(_, s, w, a, spent)| (s, w, a + spent, spent + a.max(0))),
    );
    // The order admissions lock budget rows in, so a sweep never deadlocks with them.
    rows.sort();
    for (scope, window_start, release, spent) in &rows {
        sqlx::query(
            "UPDATE budget_windows SET reserved_micros = reserved_micros - $3, spent_micros = spent_micros + $4
             WHERE scope = $1 AND window_start = $2",
        )
        .bind(scope)
        .bind(window_start)
        .bind(release)
        .bind(spent)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    if !rows.is_empty() {
        tracing::warn!(reservations = rows.len(), "released budget reservations of a process that died");
    }
    Ok(rows.len() as u64)
}

/// Requests counted this hour in `scope`.
pub async fn used_this_hour(db: &Db, scope: &str, now: i64) -> Result<i64, DbError> {
    let (window, _) = j1msky_core::windows::hour(now);
    let row: Option<(i64,)> = sqlx::query_as("SELECT used FROM usage_counters WHERE scope = $1 AND window_start = $2")
        .bind(scope)
        .bind(window)
        .fetch_optional(db.pool())
        .await?;
    Ok(row.map_or(0, |r| r.0))
}

/// The budget scope of a customer's monthly spending budget.
pub fn customer_month_scope(customer_id: &str) -> String {
    format!("customer:{customer_id}:month")
}

/// The budget scope of a customer's monthly spending budget over the period its last
/// invoice paid for (beside the calendar month's).
pub fn customer_period_scope(customer_id: &str) -> String {
    format!("customer:{customer_id}:period")
}

/// The budget scope of what a customer spends in its grace after a failed payment
/// (`Gateway::admit`: the grace days' share of its monthly budget).
pub fn customer_grace_scope(customer_id: &str) -> String {
    format!("customer:{customer_id}:grace")
}

/// The budget scope of a customer's share of the business's day
/// (`routing.customer_daily_share_percent`).
pub fn customer_day_scope(customer_id: &str) -> String {
    format!("customer:{customer_id}:day")
}

/// A customer's share of the business's day budget `daily` (the one in force), or `None`
/// when the catalogue has no share or the customer's plan is held to a contract
/// (`custom_limits`). What admission reserves against and what the customer is shown.
pub fn customer_day_cap(
    catalogue: &j1msky_core::catalogue::Catalogue,
    plan: Option<&j1msky_core::catalogue::Plan>,
    daily: Money,
) -> Option<Money> {
    let percent = catalogue.routing.customer_daily_share_percent?;
    if plan.is_some_and(|p| p.custom_limits) {
        return None;
    }
    Some(Money::from_micros(daily.micros() / 100 * i64::from(percent)))
}

/// A customer's share of the business's day against its use: `(share, spent, reserved)`
/// in the business day containing `now` (`None` when it has no share, see
/// [`customer_day_cap`], or may not use the service now).
pub async fn customer_day(
    db: &Db,
    catalogue: &j1msky_core::catalogue::Catalogue,
    customer_id: &str,
    now: i64,
) -> Result<Option<(Money, Money, Money)>, DbError> {
    Ok(customer_view(db, catalogue, customer_id, now).await?.day)
}

/// What decides the windows that hold a customer's model spend, as admission reads it.
pub(crate) struct CustomerBudget<'a> {
    pub customer_id: &'a str,
    /// The operator's budget for the customer: it holds over every window (while paused,
    /// no more than the pause plan's).
    pub operator: Option<Money>,
    /// The monthly budget of the plan in force (admission's: the pause plan's while paused).
    pub plan: Option<Money>,
    /// The period the last invoice paid for, and the budget it bought (billing's).
    pub paid_period: Option<(j1msky_accounts::trials::TrialDates, Option<Money>)>,
    /// After a failed payment: since when, and when its grace ends.
    pub grace: Option<(i64, i64)>,
}

impl<'a> CustomerBudget<'a> {
    /// From a customer's terms as admission reads them ([`crate::terms::read_terms`]:
    /// its standing, the operator's budget, the paid period) and the plan admission found
    /// in force. While paused the customer pays the pause plan's price, so an operator's
    /// budget (set for the plan it paused) holds no more than the pause plan's.
    pub(crate) fn of(
        catalogue: &j1msky_core::catalogue::Catalogue,
        customer_id: &'a str,
        standing: &j1msky_accounts::access::Standing,
        operator: Option<Money>,
        plan_in_force: Option<&str>,
        paid_period: Option<(j1msky_accounts::trials::TrialDates, Option<Money>)>,
    ) -> CustomerBudget<'a> {
        let plan = plan_in_force.and_then(|p| catalogue.plans.get(p)).and_then(|p| p.monthly_model_budget);
        let paused = standing.stage == Some(j1msky_core::vocab::Stage::Paused);
        let operator = match (operator, plan) {
            (Some(own), Some(pause)) if paused => Some(own.min(pause)),
            (own, _) => own,
        };
        let grace = standing.billing_status_since.zip(j1msky_accounts::access::grace_until(catalogue, standing));
        CustomerBudget { customer_id, operator, plan, paid_period, grace }
    }
}

/// The budget windows that hold a customer's model spend at `now`: the business month;
/// the period its last invoice paid for, when that is not the month (one payment buys one
/// month's budget, however its period falls across months; a period already over holds
/// nothing, the calendar month still does; a period that starts a moment after our clock
/// holds already, Stripe's clock not being ours); in the grace after a failed payment,
/// the grace days' share of the month's budget, counted from the failure. Empty without a
/// budget. Admission reserves in each; the customer's view shows the one with least left.
pub(crate) fn customer_budgets(
    catalogue: &j1msky_core::catalogue::Catalogue,
    tz: chrono_tz::Tz,
    b: &CustomerBudget<'_>,
    now: i64,
) -> Vec<Budget> {
    let Some(cap) = b.operator.or(b.plan) else { return Vec::new() };
    let (m_start, m_end) = j1msky_core::windows::month(tz, now);
    let mut budgets =
        vec![Budget { scope: customer_month_scope(b.customer_id), window_start: m_start, window_end: m_end, cap }];
    if let Some((p, paid)) = b.paid_period.filter(|(p, _)| now < p.ends_at) {
        if (p.started_at, p.ends_at) != (m_start, m_end) {
            budgets.push(Budget {
                scope: customer_period_scope(b.customer_id),
                window_start: p.started_at,
                window_end: p.ends_at,
                cap: b.operator.or(paid).unwrap_or(cap),
            });
        }
    }
    if let Some((since, ends)) = b.grace {
        budgets.push(Budget {
            scope: customer_grace_scope(b.customer_id),
            window_start: since,
            window_end: ends,
            cap: grace_cap(catalogue, cap),
        });
    }
    budgets
}

/// The budget a trial's direct calls share over the whole trial (`dates`, on `plan`):
/// [`j1msky_accounts::trials::direct_call_budget`] in the window `customer:<id>:trial`.
pub(crate) fn customer_trial_budget(
    catalogue: &j1msky_core::catalogue::Catalogue,
    customer_id: &str,
    plan: &str,
    dates: j1msky_accounts::trials::TrialDates,
) -> Option<Budget> {
    let cap = j1msky_accounts::trials::direct_call_budget(catalogue, plan, dates)?;
    Some(Budget {
        scope: customer_trial_scope(customer_id),
        window_start: dates.started_at,
        window_end: dates.ends_at,
        cap,
    })
}

/// The scope of a trial's budget for its direct calls.
pub fn customer_trial_scope(customer_id: &str) -> String {
    format!("customer:{customer_id}:trial")
}

/// What a customer is shown of its limits at `now`, decided from one read of the terms
/// admission reads ([`crate::terms::read_terms`]) and the plan it finds in force.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CustomerView {
    /// The plan in force (`access::admit`'s: the pause plan's while paused); `None` for
    /// pay-per-task or a refused customer.
    pub plan: Option<String>,
    /// Why the customer may not use the service now (admission's own words).
    pub refused: Option<String>,
    /// [`customer_month`].
    pub month: Option<(Money, Money, Money)>,
    /// [`customer_day`].
    pub day: Option<(Money, Money, Money)>,
}

/// The customer's view of its limits (see [`CustomerView`]): what the customer's home
/// shows, from the rules admission holds it to.
pub async fn customer_view(
    db: &Db,
    catalogue: &j1msky_core::catalogue::Catalogue,
    customer_id: &str,
    now: i64,
) -> Result<CustomerView, DbError> {
    let (standing, operator, _, trial, paid_period) = crate::terms::read_terms(db, customer_id).await?;
    let plan = match j1msky_accounts::access::admit(catalogue, &standing, now) {
        Ok(admitted) => admitted.plan().map(str::to_string),
        Err(refused) => return Ok(CustomerView { refused: Some(refused.0), ..CustomerView::default() }),
    };
    let tz = catalogue.business.time_zone.parse().unwrap_or(chrono_tz::UTC);
    // The month: the window admission holds a direct call in with the least left.
    let terms = CustomerBudget::of(catalogue, customer_id, &standing, operator, plan.as_deref(), paid_period);
    let mut windows = customer_budgets(catalogue, tz, &terms, now);
    let in_trial = standing.stage == Some(j1msky_core::vocab::Stage::Trial);
    if let (Some(dates), Some(plan), true) = (trial, plan.as_deref(), in_trial) {
        windows.extend(customer_trial_budget(catalogue, customer_id, plan, dates));
    }
    let mut month: Option<(Money, Money, Money)> = None;
    for b in windows {
        let (spent, reserved) = budget_state(db, &b.scope, b.window_start).await?;
        let left = |(cap, spent, reserved): (Money, Money, Money)| cap.micros() - spent.micros() - reserved.micros();
        if month.is_none_or(|m| left((b.cap, spent, reserved)) < left(m)) {
            month = Some((b.cap, spent, reserved));
        }
    }
    // The day: the plan in force's share of the business's day.
    let entry = plan.as_deref().and_then(|p| catalogue.plans.get(p));
    let daily = crate::controls::load(db).await?.daily_budget(catalogue);
    let day = match customer_day_cap(catalogue, entry, daily) {
        Some(cap) => {
            let (start, _) = j1msky_core::windows::day(tz, now);
            let (spent, reserved) = budget_state(db, &customer_day_scope(customer_id), start).await?;
            Some((cap, spent, reserved))
        }
        None => None,
    };
    Ok(CustomerView { plan, refused: None, month, day })
}

/// Why the customer may not use the service at `now` (admission's own words), or `None`
/// when it may: what the customer's home shows instead of a budget.
pub async fn customer_refused(
    db: &Db,
    catalogue: &j1msky_core::catalogue::Catalogue,
    customer_id: &str,
    now: i64,
) -> Result<Option<String>, DbError> {
    Ok(customer_view(db, catalogue, customer_id, now).await?.refused)
}

/// A customer's model budget against what its direct calls use: `(budget, spent,
/// reserved)` in the window with the least left (the month's when several have as much)
/// of those admission holds such a call in: [`customer_budgets`], and the trial's
/// ([`customer_trial_budget`]) while the customer is in one. `None` when no budget holds
/// the customer, or when it may not use the service now ([`customer_refused`] says why).
pub async fn customer_month(
    db: &Db,
    catalogue: &j1msky_core::catalogue::Catalogue,
    customer_id: &str,
    now: i64,
) -> Result<Option<(Money, Money, Money)>, DbError> {
    Ok(customer_view(db, catalogue, customer_id, now).await?.month)
}

/// What a customer may spend in its grace after a failed payment: the grace days' share of
/// its monthly budget `month` (a month counted as 30 days), rounded down.
pub fn grace_cap(catalogue: &j1msky_core::catalogue::Catalogue, month: Money) -> Money {
    let days = i128::from(catalogue.stripe.past_due_grace_days);
    Money::from_micros(i64::try_from(i128::from(month.micros()) * days / 30).unwrap_or(0))
}

/// Spent and reserved in a budget window. What calls spent from processes' slices of it is
/// spent, though the window's row counts it as reserved until the slice is topped up or
/// given back (migration 0043).
pub async fn budget_state(db: &Db, scope: &str, window_start: i64) -> Result<(Money, Money), DbError> {
    let row: Option<(i64, i64)> = sqlx::query_as(
        "SELECT b.spent_micros + s.spent, b.reserved_micros - s.spent
         FROM budget_windows b,
              (SELECT CAST(COALESCE(SUM(spent), 0) AS BIGINT) AS spent FROM limit_leases
               WHERE kind = 'budget' AND scope = $1 AND window_start = $2) s
         WHERE b.scope = $1 AND b.window_start = $2",
    )
    .bind(scope)
    .bind(window_start)
    .fetch_optional(db.pool())
    .await?;
    Ok(row.map_or((Money::ZERO, Money::ZERO), |(s, r)| (Money::from_micros(s), Money::from_micros(r))))
}
