// A benchmark stops at the first surprise: unwrap and expect are its assertions.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

//! Where `kpi rebuild`'s time goes (issue 14 §4): runs `rollups::rebuild` (or, with
//! MODULES=1, the three modules' own rebuilds in its order) on a SQLite file (e.g. one
//! written by `insights_gen`), and prints the wall time and the process's CPU time (user
//! and system, from `/proc/self/stat`) spent in each. The machine's load inflates the wall
//! times; the CPU times are the steadier figure.
//!
//! [MODULES=1] rebuild_bench DB_FILE [ROUNDS=1]

use std::sync::Arc;
use std::time::Instant;

use j1msky_core::catalogue::{Catalogue, SHIPPED};
use j1msky_core::clock::SystemClock;
use j1msky_db::Db;
use j1msky_insights::{mrr, people, rollups, usage, Ctx};

/// This process's user + system CPU seconds so far (Linux; threads included).
fn cpu_s() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // The fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the file, 12 and 13 here; in clock ticks (100 Hz).
    (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) / 100.0
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let file = args.get(1).expect("usage: rebuild_bench DB_FILE [ROUNDS]");
    let rounds: usize = args.get(2).map_or(1, |s| s.parse().unwrap());
    // MODULES=1: the three modules' own rebuilds one after another, each timed (MRR and
    // people then go through sqlx); otherwise `rollups::rebuild`, as `kpi rebuild` runs.
    let modules = std::env::var("MODULES").is_ok_and(|v| v == "1");
    let db = Db::connect(&format!("sqlite://{file}")).await.unwrap();
    db.migrate().await.unwrap();
    // The real clock, as `j1msky kpi rebuild` has: the same months, the same rows.
    let ctx = Ctx {
        db,
        catalogue: Arc::new(Catalogue::from_json_str(SHIPPED).unwrap()).into(),
        clock: Arc::new(SystemClock),
    };
    for round in 1..=rounds {
        let (w0, c0) = (Instant::now(), cpu_s());
        if modules {
            let mut line = format!("round {round}:");
            let mut step = |name: &str, w: &mut Instant, c: &mut f64| {
                let (wn, cn) = (Instant::now(), cpu_s());
                line.push_str(&format!(" {name} {:.2}s wall {:.2}s cpu;", (wn - *w).as_secs_f64(), cn - *c));
                (*w, *c) = (wn, cn);
            };
            let (mut w, mut c) = (w0, c0);
            mrr::rebuild(&ctx).await.unwrap();
            step("mrr", &mut w, &mut c);
            usage::rebuild(&ctx).await.unwrap();
            step("usage", &mut w, &mut c);
            people::rebuild(&ctx).await.unwrap();
            step("people", &mut w, &mut c);
            println!("{line} total {:.2}s wall {:.2}s cpu", w0.elapsed().as_secs_f64(), cpu_s() - c0);
        } else {
            let changes = rollups::rebuild(&ctx).await.unwrap();
            let all: j1msky_insights::Changes = changes.iter().map(|(_, c)| *c).sum();
            let (written, kept) = (all.written(), all.kept);
            println!(
                "round {round}: rollups::rebuild {:.2}s wall {:.2}s cpu; usage rollups {written} rows written, {kept} kept",
                w0.elapsed().as_secs_f64(),
                cpu_s() - c0
            );
        }
    }
}
