//! Acquisition spend per month (what CAC divides), entered by the operator on
//! `/admin/spend` or with `j1msky kpi spend`; every change is audited with the figure
//! it replaced.

use j1msky_audit::Actor;
use j1msky_db::DbError;
use sqlx::Row;

use crate::{Ctx, InsightsError, Month};

/// The largest monthly figure accepted: $100,000,000.00. Anything above is a typo
/// (an extra digit or two), not a marketing budget this system will meet.
pub const MAX_CENTS: i64 = 10_000_000_000;

/// Parses an amount in the currency's major units (`1500`, `1,500.50`, `$1500.5`) into
/// cents; the error names the field `amount` and what was wrong.
pub fn parse_amount(text: &str) -> Result<i64, InsightsError> {
    let shown: String = text.trim().chars().take(40).collect();
    let bad = |why: &str| InsightsError::invalid("amount", format!("`{shown}` {why}"));
    let t: String = text.trim().trim_start_matches('$').chars().filter(|c| *c != ',' && *c != '_').collect();
    if t.is_empty() {
        return Err(InsightsError::invalid("amount", "is required (e.g. 1500 or 1500.50)"));
    }
    if t.starts_with('-') {
        return Err(bad("is negative: spend is zero or more"));
    }
    let (whole, frac) = t.split_once('.').unwrap_or((&t, ""));
    let digits = |s: &str| s.chars().all(|c| c.is_ascii_digit());
    if whole.is_empty() || !digits(whole) || !digits(frac) {
        return Err(bad("is not an amount: use digits and at most one decimal point, e.g. 1500.50"));
    }
    if frac.len() > 2 {
        return Err(bad("has more than two decimals"));
    }
    let too_big = || bad("is too large: at most 100000000.00 a month");
    if whole.len() > 9 {
        return Err(too_big());
    }
    let whole: i64 = whole.parse().map_err(|_| too_big())?;
    let cents: i64 = format!("{frac:0<2}").parse().map_err(|_| bad("is not an amount"))?;
    Ok(whole * 100 + cents)
}

fn check(ctx: &Ctx, month: Month, cents: i64) -> Result<(), InsightsError> {
    if cents < 0 {
        return Err(InsightsError::invalid("amount", format!("{cents} cents is negative: spend is zero or more")));
    }
    if cents > MAX_CENTS {
        return Err(InsightsError::invalid(
            "amount",
            format!("{cents} cents is too large: at most 100000000.00 a month"),
        ));
    }
    let now = ctx.this_month();
    if month > now {
        return Err(InsightsError::invalid("month", format!("{month} has not begun yet (this month is {now})")));
    }
    Ok(())
}

/// Records `month`'s spend, replacing an earlier figure, audited with the old value.
pub async fn set(ctx: &Ctx, month: Month, cents: i64, actor: &Actor) -> Result<(), InsightsError> {
    check(ctx, month, cents)?;
    let now = ctx.clock.now_micros();
    let key = month.to_string();
    let mut tx = ctx.db.begin().await?;
    let old: Option<i64> = sqlx::query("SELECT cents FROM insights_spend WHERE month = $1")
        .bind(&key)
        .fetch_optional(&mut *tx)
        .await?
        .map(|r| r.try_get(0))
        .transpose()?;
    sqlx::query(
        "INSERT INTO insights_spend (month, cents, updated_at, updated_by) VALUES ($1, $2, $3, $4)
         ON CONFLICT (month) DO UPDATE SET cents = excluded.cents, updated_at = excluded.updated_at,
             updated_by = excluded.updated_by",
    )
    .bind(&key)
    .bind(cents)
    .bind(now)
    .bind(actor.as_str())
    .execute(&mut *tx)
    .await?;
    let detail = serde_json::json!({"month": key, "from_cents": old, "to_cents": cents});
    j1msky_audit::audit::record(&mut tx, actor, "insights.spend_set", &key, None, detail, now).await?;
    tx.commit().await.map_err(DbError::from)?;
    Ok(())
}

/// One month's entered spend, if any.
pub async fn of(ctx: &Ctx, month: Month) -> Result<Option<i64>, InsightsError> {
    let row = sqlx::query("SELECT cents FROM insights_spend WHERE month = $1")
        .bind(month.to_string())
        .fetch_optional(ctx.db.pool())
        .await?;
    Ok(row.map(|r| r.try_get(0)).transpose()?)
}

/// Every month's spend, newest first.
pub async fn all(ctx: &Ctx) -> Result<Vec<(Month, i64)>, InsightsError> {
    let rows =
        sqlx::query("SELECT month, cents FROM insights_spend ORDER BY month DESC").fetch_all(ctx.db.pool()).await?;
    rows.iter()
        .map(|r| {
            let month: String = r.try_get(0)?;
            let month = Month::parse(&month)
                .map_err(|_| InsightsError::Db(DbError::Corrupt(format!("insights_spend month `{month}`"))))?;
            Ok((month, r.try_get(1)?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_parse_to_cents_or_name_the_field() {
        assert_eq!(parse_amount("1500").unwrap(), 150_000);
        assert_eq!(parse_amount(" $1,500.5 ").unwrap(), 150_050);
        assert_eq!(parse_amount("0.07").unwrap(), 7);
        assert_eq!(parse_amount("100000000.00").unwrap(), MAX_CENTS);
        let long = parse_amount(&"9".repeat(10_000)).unwrap_err().to_string();
        assert!(long.len() < 200, "the error quotes a bounded excerpt: {long}");
        for bad in ["", "-5", "12.345", "1e6", "abc", ".5", "1.2.3", "9999999999", "١٢"] {
            let e = parse_amount(bad).unwrap_err().to_string();
            assert!(e.starts_with("amount:"), "{bad}: {e}");
        }
    }
}
