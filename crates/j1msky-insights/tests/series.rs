// A test stops at the first surprise: unwrap and expect are its assertions.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

//! `kpis::series` (what the board renders: each month's MRR and usage read once, LTV's
//! trailing months slid along) gives every month exactly what `people::month` computes
//! for that month on its own (reading its five earlier months itself), on whichever engine
//! `J1MSKY_TEST_BACKEND` names. The rollups are written directly: this checks how the
//! sections are put together, not how the rollups are kept.
//!
//! Every month from 2025-11 to 2026-11 (business zone UTC): MRR $1,000.00 at the end
//! from 10 paying customers (10 at the start), revenue $1,000 and model cost $300 (70 %
//! margin); one customer churned each month except November 2026, and three in 2026-04
//! (outside November's window, inside May's to September's).
//! November 2026's LTV, over June to November: ARPA 600,000 ÷ 60 = $100; margin 70 %;
//! churn 5 ÷ 60: $100 × 0.7 × 60 ÷ 5 = $840.00.

use std::sync::Arc;

use j1msky_core::catalogue::{Catalogue, SHIPPED};
use j1msky_core::clock::ManualClock;
use j1msky_db::testing::TestDb;
use j1msky_insights::kpis::{self, Filter};
use j1msky_insights::{people, Ctx, Month};

const NOV: Month = Month { year: 2026, month: 11 };

#[tokio::test]
async fn the_series_computes_each_month_once_and_agrees_with_each_month_alone() {
    let t = TestDb::new().await;
    let now = chrono::NaiveDate::from_ymd_opt(2026, 11, 20).unwrap().and_hms_opt(12, 0, 0).unwrap();
    let clock = Arc::new(ManualClock::new(now.and_utc().timestamp_micros()));
    let ctx = Ctx { db: t.db.clone(), catalogue: Arc::new(Catalogue::from_json_str(SHIPPED).unwrap()).into(), clock };
    let pool = ctx.db.pool();
    sqlx::query("INSERT INTO insights_mrr_state (id, through_month) VALUES (1, $1)")
        .bind(NOV.to_string())
        .execute(pool)
        .await
        .unwrap();
    let first = Month { year: 2025, month: 11 };
    for m in first.through(NOV) {
        let churned = match (m.year, m.month) {
            (2026, 11) => 0,
            (2026, 4) => 3,
            _ => 1,
        };
        sqlx::query(
            "INSERT INTO insights_mrr_months (month, plan, starting_cents, new_cents, expansion_cents,
                 contraction_cents, churn_cents, reactivation_cents, ending_cents, paying_start, paying_end,
                 new_customers, churned_customers, reactivated_customers)
             VALUES ($1, '', 100000, $2, 0, 0, $2, 0, 100000, 10, 10, $3, $3, 0)",
        )
        .bind(m.to_string())
        .bind(churned * 10_000)
        .bind(churned)
        .execute(pool)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO insights_split (month, team, model, plan, pieces, subscription_micros, refunds_micros,
                 charge_micros, cost_micros, calls, completed, failed)
             VALUES ($1, 'code', 'kimi-k2.5', 'pro', 10, 1000000000, 0, 0, 300000000, 40, 20, 1)",
        )
        .bind(m.to_string())
        .execute(pool)
        .await
        .unwrap();
    }
    let all = Filter::default();
    let from = Month { year: 2025, month: 12 };
    let series = kpis::series(&ctx, from, NOV, &all).await.unwrap();
    assert_eq!(series.iter().map(|k| k.month).collect::<Vec<_>>(), from.through(NOV));
    for k in &series {
        let alone = people::month(&ctx, k.month, &all, &k.mrr, &k.usage).await.unwrap();
        assert_eq!(k.customers, alone, "{}", k.month);
        let one = kpis::for_month(&ctx, k.month, &all).await.unwrap();
        assert_eq!(serde_json::to_value(&one).unwrap(), serde_json::to_value(k).unwrap(), "{}", k.month);
    }
    // The board's call: every number of the last two months; the others charted, with
    // the same MRR, usage totals and LTV.
    let board = kpis::series_detailed(&ctx, from, NOV, &all, NOV.prev()).await.unwrap();
    assert_eq!(board.len(), series.len());
    for (b, k) in board.iter().zip(&series) {
        if b.month >= NOV.prev() {
            assert_eq!(serde_json::to_value(b).unwrap(), serde_json::to_value(k).unwrap(), "{}", b.month);
        } else {
            assert_eq!(
                (&b.mrr, b.usage.revenue_micros, b.usage.gross_margin_micros),
                (&k.mrr, k.usage.revenue_micros, k.usage.gross_margin_micros)
            );
            assert_eq!(
                (b.customers.ltv_cents, b.customers.churn_rate_bp),
                (k.customers.ltv_cents, k.customers.churn_rate_bp)
            );
            assert!(b.customers.activation.is_empty() && b.usage.completion.is_empty(), "{} is only charted", b.month);
        }
    }
    let last = series.last().unwrap();
    assert_eq!(last.usage.gross_margin_bp, Some(7_000));
    assert_eq!(last.customers.ltv_cents, Some(84_000));
    // May's window (December to May) holds April's three: churn 8 ÷ 60 → $100 × 0.7 × 60 ÷ 8.
    let may = series.iter().find(|k| k.month == Month { year: 2026, month: 5 }).unwrap();
    assert_eq!(may.customers.ltv_cents, Some(52_500));
    // The first month's window reaches back before the series (July 2025 on: months
    // without rows count nothing): December 2025 alone has rows with November 2025.
    assert_eq!(series[0].customers.ltv_cents, Some(70_000));
}
