// A test stops at the first surprise: unwrap and expect are its assertions.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

//! The board's numbers at scale (issue 14 §4): on a SQLite file written by
//! `insights_gen`, recomputes the rollups (`rollups::rebuild`, what `j1msky kpi rebuild`
//! runs) unless they are there already, then times `kpis::series` over the 12 months
//! ending with the generated world's last, every number of every month, and
//! `kpis::series_detailed` (what one render of `/admin` computes: every number for the
//! last two months, the others charted), without a filter, with a plan and with a team,
//! best of ROUNDS.
//!
//! board_bench DB_FILE [ROUNDS=3] [REBUILD=auto|yes|no] [FILTERS=all,plan,team]

use std::sync::Arc;
use std::time::Instant;

use j1msky_core::catalogue::{Catalogue, SHIPPED};
use j1msky_core::clock::ManualClock;
use j1msky_db::Db;
use j1msky_insights::kpis::{self, Filter};
use j1msky_insights::{mrr, people, rollups, usage, Ctx};

/// The generated world's end (2026-12-01T00:00Z): "now" is just before it, in November.
const NOW: i64 = 1_796_083_200_000_000 - 1;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let file = args.get(1).expect("usage: board_bench DB_FILE [ROUNDS] [REBUILD=auto|yes|no]");
    let rounds: usize = args.get(2).map_or(3, |s| s.parse().unwrap());
    let rebuild = args.get(3).map_or("auto", String::as_str);
    let wanted = args.get(4).map_or("all,plan,team", String::as_str);
    let db = Db::connect(&format!("sqlite://{file}")).await.unwrap();
    db.migrate().await.unwrap();
    let ctx = Ctx {
        db: db.clone(),
        catalogue: Arc::new(Catalogue::from_json_str(SHIPPED).unwrap()).into(),
        clock: Arc::new(ManualClock::new(NOW)),
    };
    let count = |sql: &'static str| {
        let db = db.clone();
        async move { sqlx::query_scalar::<_, i64>(sql).fetch_one(db.pool()).await.unwrap() }
    };
    let customers = count("SELECT COUNT(*) FROM customers").await;
    let tasks = count("SELECT COUNT(*) FROM tasks").await;
    let built = count("SELECT COUNT(*) FROM insights_tasks").await > 0;
    println!("{file}: {customers} customers, {tasks} tasks");
    if rebuild == "yes" || (rebuild == "auto" && !built) {
        let t = Instant::now();
        rollups::rebuild(&ctx).await.unwrap();
        println!("rollups::rebuild (kpi rebuild): {:.1} s", t.elapsed().as_secs_f64());
    }
    for table in ["insights_pieces", "insights_split", "insights_margins", "insights_mrr_months"] {
        let n: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}")).fetch_one(db.pool()).await.unwrap();
        println!("{table}: {n} rows");
    }
    let last = ctx.this_month();
    let mut first = last;
    for _ in 1..12 {
        first = first.prev();
    }
    let filters = [
        ("all", Filter::default()),
        ("plan=pro", Filter { plan: Some("pro".into()), team: None }),
        ("team=code", Filter { plan: None, team: Some("code".into()) }),
    ];
    // Where one month's time goes (the last month, no filter, best of ROUNDS).
    let all = Filter::default();
    let mut best = [f64::MAX; 5];
    for _ in 0..rounds {
        let t = Instant::now();
        let m = mrr::month(&ctx, last, &all).await.unwrap();
        let t1 = t.elapsed().as_secs_f64();
        let u = usage::totals(&ctx, last, &all).await.unwrap();
        let t2 = t.elapsed().as_secs_f64();
        usage::by_customer(&ctx, last, &all).await.unwrap();
        let t3 = t.elapsed().as_secs_f64();
        usage::completion(&ctx, last, &all).await.unwrap();
        let t4 = t.elapsed().as_secs_f64();
        people::month(&ctx, last, &all, &m, &u).await.unwrap();
        let t5 = t.elapsed().as_secs_f64();
        for (b, v) in best.iter_mut().zip([t1, t2 - t1, t3 - t2, t4 - t3, t5 - t4]) {
            *b = b.min(v * 1000.0);
        }
    }
    println!(
        "{last} alone, best of {rounds}: mrr::month {:.1} ms, usage totals {:.1} ms, 200 lowest margins {:.1} ms, \
         completion times {:.1} ms, people::month (with its 5 earlier months) {:.1} ms",
        best[0], best[1], best[2], best[3], best[4]
    );
    let filters = filters.into_iter().filter(|(l, _)| wanted.split(',').any(|w| l.starts_with(w)));
    for (label, filter, full) in filters.flat_map(|(l, f)| [(l, f.clone(), true), (l, f, false)]) {
        let what = if full { "kpis::series" } else { "kpis::series_detailed (the board)" };
        let mut times = Vec::new();
        let mut out = Vec::new();
        for _ in 0..rounds {
            let t = Instant::now();
            out = if full {
                kpis::series(&ctx, first, last, &filter).await.unwrap()
            } else {
                kpis::series_detailed(&ctx, first, last, &filter, last.prev()).await.unwrap()
            };
            times.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        times.sort_by(f64::total_cmp);
        let k = out.last().unwrap();
        println!(
            "{what} {first}..{last} ({label}): best {:.0} ms, median {:.0} ms of {rounds} \
             ({last}: MRR {} ¢ from {} paying, revenue {} µ$, margin {:?} bp, {} tasks, LTV {:?} ¢, {} customers listed)",
            times[0],
            times[times.len() / 2],
            k.mrr.ending_cents,
            k.mrr.paying_end,
            k.usage.revenue_micros,
            k.usage.gross_margin_bp,
            k.usage.tasks_completed,
            k.customers.ltv_cents,
            k.usage.by_customer.len(),
        );
    }
}
