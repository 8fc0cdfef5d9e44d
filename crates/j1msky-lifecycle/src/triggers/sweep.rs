//! The time-driven triggers, run by the hourly sweep (and `j1msky lifecycle sweep`).
//!
//! Inactivity reads the `lifecycle_activity` read model through its
//! `(inactive_level, last_active_at)` index: each pass reads only the customers whose
//! quiet spell just crossed the next threshold, never the whole customer base. A firing
//! raises the customer's level; any activity resets it (`super::touch`).
//!
//! The churn spike compares the customers churned in the last 7 days with the weekly
//! average of the weeks before. At risk (who gets the offer) means: on a trial or paid
//! plan, and inactive at least `at_risk_inactive_days` days or with an open low-success
//! firing.

use serde::Serialize;
use sqlx::Row;

use super::{fire_journeys, fire_todo, Fired, BUSINESS, DAY};
use crate::{Ctx, LifecycleError};

/// Candidates handled per transaction.
const BATCH: i64 = 500;
/// The stages inactivity matters for; other customers' spells are passed over.
const ELIGIBLE: &[&str] = &["trial", "active"];
const WEEK: i64 = 7 * DAY;

/// Runs the time-driven triggers at `now`; returns what fired. `dry_run` writes nothing
/// and returns what would fire.
pub async fn sweep(ctx: &Ctx, now: i64, dry_run: bool) -> Result<Vec<Fired>, LifecycleError> {
    let t = &ctx.catalogue.lifecycle.triggers;
    let mut fired = Vec::new();
    let levels = [
        (1, t.inactive_days, "inactive"),
        (2, t.outreach_days, "inactive_outreach"),
        (3, t.offer_days, "inactive_offer"),
    ];
    for (level, days, trigger) in levels {
        let cut = now - i64::from(days) * DAY;
        if dry_run {
            fired.extend(inactive_dry(ctx, level, cut, days, trigger).await?);
            continue;
        }
        loop {
            let (n, batch) = inactive_batch(ctx, level, cut, days, trigger, now).await?;
            fired.extend(batch);
            if n < BATCH {
                break;
            }
        }
    }
    fired.extend(churn_spike(ctx, now, dry_run).await?);
    Ok(fired)
}

fn outreach_reason(days: u32) -> String {
    format!("Personal outreach: no login, API call or task for {days} days")
}

/// One batch of customers whose spell crossed `level`'s threshold, in one transaction;
/// returns how many candidates it read and what fired.
async fn inactive_batch(
    ctx: &Ctx,
    level: i64,
    cut: i64,
    days: u32,
    trigger: &str,
    now: i64,
) -> Result<(i64, Vec<Fired>), LifecycleError> {
    let backend = ctx.db.backend();
    let mut tx = ctx.db.begin().await?;
    let rows = sqlx::query(
        "SELECT a.customer_id, a.last_active_at, c.stage FROM lifecycle_activity a
         LEFT JOIN customers c ON c.id = a.customer_id
         WHERE a.inactive_level = $1 AND a.last_active_at <= $2
         ORDER BY a.last_active_at, a.customer_id LIMIT $3",
    )
    .bind(level - 1)
    .bind(cut)
    .bind(BATCH)
    .fetch_all(&mut *tx)
    .await?;
    let mut fired = Vec::new();
    for r in &rows {
        let customer: String = r.try_get(0)?;
        let since: i64 = r.try_get(1)?;
        let stage: Option<String> = r.try_get(2)?;
        let eligible = stage.as_deref().is_some_and(|s| ELIGIBLE.contains(&s));
        // An ineligible customer's spell is passed over entirely (to the last level).
        let new_level = if eligible { level } else { 3 };
        sqlx::query("UPDATE lifecycle_activity SET inactive_level = $1 WHERE customer_id = $2 AND last_active_at = $3")
            .bind(new_level)
            .bind(&customer)
            .bind(since)
            .execute(&mut *tx)
            .await?;
        if !eligible {
            continue;
        }
        let occurrence = since.to_string();
        let f = if level == 2 {
            fire_todo(&mut tx, ctx, trigger, &customer, &occurrence, &outreach_reason(days), now).await?
        } else {
            fire_journeys(&mut tx, backend, ctx, trigger, &customer, &occurrence, now).await?
        };
        fired.extend(f);
    }
    tx.commit().await?;
    Ok((rows.len() as i64, fired))
}

/// What `inactive_batch` would fire, without writing.
async fn inactive_dry(ctx: &Ctx, level: i64, cut: i64, days: u32, trigger: &str) -> Result<Vec<Fired>, LifecycleError> {
    let lower: Vec<String> = (0..level).map(|l| l.to_string()).collect();
    let rows = sqlx::query(&format!(
        "SELECT a.customer_id, a.last_active_at FROM lifecycle_activity a JOIN customers c ON c.id = a.customer_id
         WHERE a.inactive_level IN ({}) AND a.last_active_at <= $1 AND c.stage IN ('trial', 'active')
         ORDER BY a.last_active_at, a.customer_id",
        lower.join(", ")
    ))
    .bind(cut)
    .fetch_all(ctx.db.pool())
    .await?;
    let action = if level == 2 {
        format!("todo:{}", outreach_reason(days))
    } else {
        super::journeys_of(ctx, trigger).iter().map(|j| format!("journey:{j}")).collect::<Vec<_>>().join(", ")
    };
    rows.iter()
        .map(|r| {
            let since: i64 = r.try_get(1)?;
            Ok(Fired {
                trigger: trigger.into(),
                customer_id: r.try_get(0)?,
                occurrence: since.to_string(),
                action: action.clone(),
            })
        })
        .collect()
}

/// The churn figures the spike rule compares.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChurnNumbers {
    /// Customers churned in the last 7 days, and who they are.
    pub last_week: Vec<String>,
    /// Customers churned in each of the trailing weeks before, most recent first.
    pub trailing: Vec<i64>,
    /// Whether it is a spike: `last_week > factor × average(trailing)` and at least `min_churned`.
    pub spike: bool,
}

/// Counts churn (a customer moving to stage `churned`, from accounts' stage history)
/// in the trailing weeks up to `now`: only that window's rows are read.
pub async fn churn_numbers(ctx: &Ctx, now: i64) -> Result<ChurnNumbers, LifecycleError> {
    let cfg = &ctx.catalogue.lifecycle.triggers.churn_spike;
    let weeks = i64::from(cfg.trailing_weeks);
    let since = now - (weeks + 1) * WEEK;
    let churned = j1msky_accounts::customers::churned_between(&ctx.db, since, now).await?;
    let mut last_week = Vec::new();
    let mut trailing = vec![0i64; usize::try_from(weeks).unwrap_or_default()];
    for (customer, at) in churned {
        let week = (now - at) / WEEK; // 0: the last 7 days
        if week == 0 {
            if !last_week.contains(&customer) {
                last_week.push(customer);
            }
        } else if let Some(n) = usize::try_from(week - 1).ok().and_then(|w| trailing.get_mut(w)) {
            *n += 1;
        }
    }
    last_week.sort();
    let n = last_week.len() as i64;
    let total: i64 = trailing.iter().sum();
    // n > (factor / 100) × (total / weeks), in integers.
    let spike = n >= i64::from(cfg.min_churned) && n * 100 * weeks > i64::from(cfg.factor_percent) * total;
    Ok(ChurnNumbers { last_week, trailing, spike })
}

/// The churn spike: once per week, an alert, the exit survey to the week's cancellers
/// and the offer to at-risk customers.
async fn churn_spike(ctx: &Ctx, now: i64, dry_run: bool) -> Result<Vec<Fired>, LifecycleError> {
    let numbers = churn_numbers(ctx, now).await?;
    if !numbers.spike {
        return Ok(Vec::new());
    }
    let cfg = &ctx.catalogue.lifecycle.triggers.churn_spike;
    let occurrence = format!("week-{}", now.div_euclid(WEEK));
    let at_risk_cut = now - i64::from(cfg.at_risk_inactive_days) * DAY;
    let at_risk: Vec<(String,)> = sqlx::query_as(
        "SELECT c.id FROM customers c
         WHERE c.stage IN ('trial', 'active') AND (
             EXISTS (SELECT 1 FROM lifecycle_activity a WHERE a.customer_id = c.id AND a.last_active_at <= $1)
             OR EXISTS (SELECT 1 FROM lifecycle_trigger_firings f WHERE f.customer_id = c.id
                        AND f.trigger_id = 'low_success' AND f.cleared_at IS NULL))
         ORDER BY c.id",
    )
    .bind(at_risk_cut)
    .fetch_all(ctx.db.pool())
    .await?;
    let message = format!(
        "Churn spike: {} customers churned in the last 7 days (weekly counts before: {:?})",
        numbers.last_week.len(),
        numbers.trailing
    );
    let spike = Fired {
        trigger: "churn_spike".into(),
        customer_id: BUSINESS.into(),
        occurrence: occurrence.clone(),
        action: format!(
            "alert; exit survey to {} cancellers; offer to {} at-risk customers",
            numbers.last_week.len(),
            at_risk.len()
        ),
    };
    if dry_run {
        let seen: Option<(String,)> = sqlx::query_as(
            "SELECT id FROM lifecycle_trigger_firings WHERE trigger_id = 'churn_spike' AND customer_id = $1
             AND occurrence = $2",
        )
        .bind(BUSINESS)
        .bind(&occurrence)
        .fetch_optional(ctx.db.pool())
        .await?;
        return Ok(if seen.is_none() { vec![spike] } else { Vec::new() });
    }
    let backend = ctx.db.backend();
    let mut tx = ctx.db.begin().await?;
    if !super::record(&mut tx, &spike, now).await? {
        return Ok(Vec::new());
    }
    let detail = serde_json::json!({"last_week": numbers.last_week, "trailing": numbers.trailing,
        "factor_percent": cfg.factor_percent, "at_risk": at_risk.len()});
    j1msky_audit::alerts::record(&mut tx, &format!("churn_spike:{occurrence}"), "churn_spike", &message, &detail, now)
        .await?;
    let mut fired = vec![spike];
    for c in &numbers.last_week {
        fired.extend(fire_journeys(&mut tx, backend, ctx, "churn_spike_canceller", c, &occurrence, now).await?);
    }
    for (c,) in &at_risk {
        fired.extend(fire_journeys(&mut tx, backend, ctx, "churn_spike_at_risk", c, &occurrence, now).await?);
    }
    tx.commit().await?;
    Ok(fired)
}
