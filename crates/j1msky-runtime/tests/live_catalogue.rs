//! A running process follows `config apply` without a restart: the runtime's catalogue
//! follower swaps the handle every part reads, so the gateway's provider clients move to
//! a new endpoint (a call already under way finishes on the old one), and the alert
//! consumer, the lifecycle sender and the insights' context use the new alert limit,
//! recipients, sender address and time zone. Both engines.
// A test (or bench) stops at the first surprise: panicking shortcuts, the wall clock
// and untracked tasks are fine here (see [workspace.lints] in Cargo.toml).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use j1msky_audit::Actor;
use j1msky_core::catalogue::{LiveCatalogue, SHIPPED};
use j1msky_core::clock::ManualClock;
use j1msky_db::testing::TestDb;
use j1msky_db::Db;
use j1msky_gateway::chat::{ChatRequest, Speaker, Turn};
use j1msky_gateway::{CallContext, Gateway};
use j1msky_lifecycle::transport::Recording;
use j1msky_ops::config_history as ch;
use j1msky_runtime::{Mail, Role, Runtime, Settings};

/// 2026-03-02 10:00:00 UTC: daytime, away from quiet hours and month ends.
const T0: i64 = 1_772_445_600_000_000;
/// The variable the test catalogue names for provider keys (the simulator takes any).
const KEY_ENV: &str = "J1MSKY_LIVECFG_TEST_KEY";

fn repo() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The shipped catalogue, edited.
fn catalogue(edit: impl FnOnce(&mut serde_json::Value)) -> String {
    let mut c: serde_json::Value = serde_json::from_str(SHIPPED).unwrap();
    edit(&mut c);
    serde_json::to_string_pretty(&c).unwrap()
}

/// Every provider of `c` at the simulator `sim`, its key in [`KEY_ENV`].
fn providers_at(c: &mut serde_json::Value, sim: &j1msky_sim::Running) {
    for (_, p) in c["providers"].as_object_mut().unwrap() {
        let base = if p["kind"] == "anthropic" { sim.anthropic_base() } else { sim.openai_base() };
        p["base_url"] = base.into();
        p["api_key_env"] = KEY_ENV.into();
    }
}

/// Stores `text` as version 1 (as a first start does) and returns the live handle on it.
async fn first_start(db: &Db, text: &str) -> LiveCatalogue {
    let (c, version) = ch::startup(db, &Actor::cli(), text, "test.json", T0).await.unwrap();
    LiveCatalogue::new(c, Some(version))
}

async fn start(db: &Db, live: &LiveCatalogue, clock: &ManualClock, roles: &[Role], mail: Option<Mail>) -> Runtime {
    let gateway = Gateway::builder(db.clone(), live.clone()).clock(Arc::new(clock.clone())).build().unwrap();
    let settings =
        Settings { roles: BTreeSet::from_iter(roles.iter().copied()), workers: 0, mail, ..Settings::default() };
    Runtime::start(Arc::new(gateway), settings).await.unwrap()
}

/// Applies `text` as the operator's CLI does and waits (real time, at most 20 s) for
/// the runtime's follower to serve it.
async fn apply_and_follow(db: &Db, rt: &Runtime, text: &str, reason: &str) -> i64 {
    let applied = ch::apply(db, &Actor::cli(), text, "next.json", reason, None, T0 + 1).await.unwrap();
    assert!(!applied.unchanged);
    eventually("the follower serves the applied version", || async {
        rt.catalogue().version() == Some(applied.version)
    })
    .await;
    applied.version
}

/// Polls `check` every 50 ms for up to 20 s (the loops under test poll each second).
async fn eventually<F, Fut>(what: &str, check: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..400 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting until {what}");
}

async fn sim_requests(sim: &j1msky_sim::Running) -> u64 {
    let url = format!("http://{}/_sim/stats", sim.addr);
    let stats: j1msky_sim::Stats = reqwest::get(url).await.unwrap().json().await.unwrap();
    stats.requests
}

fn request() -> ChatRequest {
    ChatRequest {
        system: None,
        turns: vec![Turn { speaker: Speaker::User, text: "Summarise the week".into() }],
        max_tokens: 50,
        temperature: None,
        stop: vec![],
    }
}

fn call(id: &str) -> CallContext {
    CallContext { request_id: id.into(), category: "general".into(), ..Default::default() }
}

#[tokio::test]
async fn the_gateway_moves_to_the_new_provider_endpoint_and_a_call_under_way_finishes() {
    std::env::set_var(KEY_ENV, "sim-key");
    // The first provider answers slowly, so a call is still under way at the swap.
    let slow = j1msky_sim::SimConfig { latency: Duration::from_secs(3), ..Default::default() };
    let first = j1msky_sim::spawn(slow).await.unwrap();
    let second = j1msky_sim::spawn(j1msky_sim::SimConfig::default()).await.unwrap();
    let t = TestDb::new().await;
    let clock = ManualClock::new(T0);
    let live = first_start(&t.db, &catalogue(|c| providers_at(c, &first))).await;
    let rt = start(&t.db, &live, &clock, &[], None).await;
    let gateway = rt.gateway().clone();

    let under_way = {
        let gw = gateway.clone();
        tokio::spawn(async move { gw.complete(&call("req_old"), None, &request()).await })
    };
    eventually("the first provider has the call", || async { sim_requests(&first).await == 1 }).await;

    let moved = catalogue(|c| providers_at(c, &second));
    assert_eq!(apply_and_follow(&t.db, &rt, &moved, "providers move to the second region").await, 2);
    let after = gateway.complete(&call("req_new"), None, &request()).await.unwrap();
    assert_eq!(sim_requests(&second).await, 1, "the call after the swap goes to the new endpoint");

    let old = under_way.await.unwrap().expect("the call under way finishes on the client it started with");
    assert_eq!(old.attempts.len(), 1, "{:?}", old.attempts);
    assert_eq!(after.attempts.len(), 1, "{:?}", after.attempts);
    assert_eq!(sim_requests(&first).await, 1, "nothing more reached the old endpoint");
    rt.shutdown().await;
}

#[tokio::test]
async fn alerts_mail_and_insights_follow_an_applied_version() {
    let t = TestDb::new().await;
    let clock = ManualClock::new(T0);
    let v1 = catalogue(|c| {
        c["alerts"] = serde_json::json!({"recipients": ["first@ops.test"], "max_per_kind_per_hour": 1});
    });
    let live = first_start(&t.db, &v1).await;
    let recording = Arc::new(Recording::default());
    let mail = Mail {
        transport: recording.clone(),
        base_url: "https://app.example.test".into(),
        templates_dir: repo().join("config/templates"),
    };
    let rt = start(&t.db, &live, &clock, &[Role::Reactions], Some(mail)).await;
    let insights = rt.insights();
    let zone_before = insights.tz();

    // Version 1: one mail per kind and hour; the second alert is held for the digest.
    for id in ["alt_1", "alt_2"] {
        j1msky_audit::alerts::raise(&t.db, id, "queue.stuck", "tasks wait", &serde_json::json!({}), T0).await.unwrap();
    }
    eventually("both alerts are handled", || async { states(&t.db).await.len() == 2 }).await;
    assert_eq!(states(&t.db).await, [("alt_1".into(), "sent_or_queued"), ("alt_2".into(), "held")]);
    eventually("the first alert's mail left", || async { recording.sent().len() == 1 }).await;
    let sent = recording.sent();
    assert_eq!(sent[0].to, "first@ops.test");
    assert!(String::from_utf8_lossy(&sent[0].raw).contains("hello@j1msky.example"));

    let v2 = catalogue(|c| {
        c["alerts"] = serde_json::json!({"recipients": ["second@ops.test"], "max_per_kind_per_hour": 3});
        c["lifecycle"]["delivery"]["from_address"] = "alerts@moved.example".into();
        c["business"]["time_zone"] = "Asia/Tokyo".into();
    });
    apply_and_follow(&t.db, &rt, &v2, "more alerts per hour, a new sender").await;

    // Same hour, same kind: under the new limit the third alert goes out, to the new
    // recipient, from the new sender address.
    j1msky_audit::alerts::raise(&t.db, "alt_3", "queue.stuck", "still waiting", &serde_json::json!({}), T0 + 2)
        .await
        .unwrap();
    eventually("the third alert is handled", || async { states(&t.db).await.len() == 3 }).await;
    assert_eq!(states(&t.db).await[2], ("alt_3".into(), "sent_or_queued"));
    eventually("the third alert's mail left", || async { recording.sent().len() == 2 }).await;
    let sent = recording.sent();
    assert_eq!(sent[1].to, "second@ops.test");
    let raw = String::from_utf8_lossy(&sent[1].raw).to_string();
    assert!(raw.contains("alerts@moved.example") && !raw.contains("hello@j1msky.example"), "{raw}");

    // The insights' context handed out at start reads the new time zone.
    assert_ne!(zone_before, chrono_tz::Asia::Tokyo);
    assert_eq!(insights.tz(), chrono_tz::Asia::Tokyo);
    rt.shutdown().await;
}

/// Each alert's mail delivery state, `queued` and `sent` read as one.
async fn states(db: &Db) -> Vec<(String, &'static str)> {
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT alert_id, state FROM ops_alert_deliveries WHERE channel = 'mail' ORDER BY alert_id")
            .fetch_all(db.pool())
            .await
            .unwrap();
    rows.into_iter()
        .map(|(id, s)| {
            let s = match s.as_str() {
                "queued" | "sent" => "sent_or_queued",
                "held" => "held",
                _ => "other",
            };
            (id, s)
        })
        .collect()
}
