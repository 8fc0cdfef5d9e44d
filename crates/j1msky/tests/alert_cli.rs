// A test stops at the first surprise: unwrap and expect are its assertions.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

//! `j1msky alert list|ack|resolve` and `j1msky report morning|evening` on a real
//! database (SQLite, or PostgreSQL when the run asks for it).

use crate::common;

use common::{text, Cli};
use j1msky_db::Db;

#[tokio::test]
async fn the_operator_lists_acknowledges_and_resolves_alerts_and_prints_the_reviews() {
    let cli = Cli::new().await;
    assert!(cli.run(&["alert", "list"]).status.success());
    let db = Db::open(&cli.url).await.unwrap();
    let now = 1_780_000_000_000_000;
    j1msky_audit::alerts::raise(&db, "alr_1", "budget_level", "daily spend crossed 80%", &serde_json::json!({}), now)
        .await
        .unwrap();
    j1msky_audit::alerts::raise(&db, "alr_2", "queue_stuck", "the queue looks stuck", &serde_json::json!({}), now)
        .await
        .unwrap();

    let open = cli.json(&["alert", "list"]);
    assert_eq!(open.as_array().unwrap().len(), 2);
    let table = cli.run(&["alert", "list"]);
    assert!(text(&table.stdout).contains("daily spend crossed 80%"), "{}", text(&table.stdout));

    let acked = cli.json(&["alert", "ack", "alr_1"]);
    assert_eq!(acked["id"], "alr_1");
    assert!(acked["acknowledged_by"].as_str().unwrap().starts_with("cli:"), "{acked}");
    let resolved = cli.run(&["alert", "resolve", "alr_2"]);
    assert!(text(&resolved.stdout).contains("alert alr_2 is resolved"), "{}", text(&resolved.stdout));

    let open = cli.json(&["alert", "list"]);
    assert_eq!(open.as_array().unwrap().len(), 0);
    let acked = cli.json(&["alert", "list", "--status", "acknowledged"]);
    assert_eq!(acked[0]["id"], "alr_1");
    let all = cli.json(&["alert", "list", "--status", "all"]);
    assert_eq!(all.as_array().unwrap().len(), 2);
    let audit = j1msky_audit::audit::list(&db, None, 20).await.unwrap();
    assert!(audit.iter().any(|e| e.action == "alert.acknowledged" && e.subject == "alr_1"));
    assert!(audit.iter().any(|e| e.action == "alert.resolved" && e.subject == "alr_2"));

    let missing = cli.run(&["alert", "ack", "alr_nope"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(text(&missing.stderr).contains("no alert `alr_nope`"), "{}", text(&missing.stderr));
    let bad = cli.run(&["alert", "list", "--status", "later"]);
    assert_eq!(bad.status.code(), Some(2));

    let morning = cli.run(&["report", "morning"]);
    assert!(morning.status.success(), "{}", text(&morning.stderr));
    let out = text(&morning.stdout);
    assert!(out.starts_with("Morning review, "), "{out}");
    assert!(out.contains("Critical") && out.contains("For information"), "{out}");
    let evening = cli.run(&["report", "evening"]);
    assert!(evening.status.success(), "{}", text(&evening.stderr));
    assert!(text(&evening.stdout).contains("Spend by model"), "{}", text(&evening.stdout));
    let json = cli.json(&["report", "morning"]);
    assert!(json["title"].as_str().unwrap().starts_with("Morning review"), "{json}");
}
