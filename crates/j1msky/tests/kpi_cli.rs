// A test stops at the first surprise: unwrap and expect are its assertions.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]
//! `j1msky kpi …` as the operator runs it: the real binary on a real database (SQLite,
//! or PostgreSQL when the run asks for it), with the server down.

use std::collections::HashMap;
use std::sync::Arc;

use j1msky_core::catalogue::Catalogue;
use j1msky_core::vocab::{Stage, UseCase};
use j1msky_core::{Clock, ManualClock};
use j1msky_db::Db;
use j1msky_insights::kpis::{self, Filter};
use j1msky_insights::{Ctx, Month};
use serde_json::{json, Value};

use crate::common;
// The insights crate's hand-computed MRR story, shown here through the command.
use crate::mrr_support;
// And its hand-computed month of revenue, cost and margins.
use crate::usage_support;

use common::{repo_file, text, Cli, BIN};

/// 2026-10-12 10:00 UTC: inside October in the business zone, whatever it is.
const OCT_12: i64 = 1_791_799_200_000_000;

/// A customer paying for Pro since `OCT_12` (checkout at the fake Stripe, applied by the
/// real applier) with two tasks run through its teams on the simulated provider (ledger
/// rows, task outcomes and events at `OCT_12`).
async fn seeded(cli: &Cli) -> (Db, Arc<Catalogue>, ManualClock) {
    let db = Db::open(&cli.url).await.expect("db");
    let catalogue = Arc::new(Catalogue::load(&repo_file("config/business.json")).expect("catalogue"));
    let clock = ManualClock::new(OCT_12);
    let input = j1msky_accounts::customers::NewCustomer {
        name: "Meadow, Lark & Co".into(),
        contact_email: Some("owner@meadow.test".into()),
        stage: Some(Stage::Active),
        use_case: Some(UseCase::Code),
        plan: Some("pro".into()),
        chosen_teams: vec![],
        expected_monthly_tasks: Some(50),
        time_zone: Some("Europe/Berlin".into()),
    };
    let actor = j1msky_audit::Actor::system();
    let (customer, _) = j1msky_accounts::customers::create_with_owner(&db, &catalogue, &actor, input, None, OCT_12)
        .await
        .expect("customer");
    let sim = j1msky_sim::spawn(j1msky_sim::SimConfig::default()).await.expect("sim");
    let overrides =
        j1msky_gateway::ProviderOverride::all_to(&catalogue, &sim.openai_base(), &sim.anthropic_base(), "simulated");
    let gateway = j1msky_gateway::Gateway::builder(db.clone(), catalogue.clone())
        .overrides(overrides)
        .clock(Arc::new(clock.clone()))
        .build()
        .expect("gateway");
    let gateway = Arc::new(gateway);
    let fake = common::subscribe(&db, &catalogue, &customer.id, "pro", OCT_12).await;
    drop(fake);
    for team in ["code", "content"] {
        let task = j1msky_tasks::NewTask {
            team: team.into(),
            prompt: Some(format!("A {team} task")),
            ..j1msky_tasks::NewTask::default()
        };
        j1msky_tasks::submit(&db, &catalogue, &customer.id, &task, None, clock.now_micros()).await.expect("submit");
    }
    let worker = j1msky_tasks::Worker::new(
        db.clone(),
        catalogue.clone(),
        gateway.clone(),
        Arc::new(clock.clone()),
        "kpi-test",
        j1msky_tasks::WorkerConfig::default(),
    );
    while let Some((_, outcome)) = worker.run_once().await.expect("run") {
        assert_eq!(outcome, j1msky_tasks::worker::Outcome::Succeeded);
        clock.advance_secs(60);
    }
    gateway.flush().await;
    (db, catalogue, clock)
}

fn ctx(db: &Db, catalogue: &Arc<Catalogue>, clock: &ManualClock) -> Ctx {
    Ctx { db: db.clone(), catalogue: catalogue.clone().into(), clock: Arc::new(clock.clone()) }
}

/// Parses `section,field,value` rows up to the blank line, and the margin table after it.
fn parse_csv(out: &str) -> (HashMap<(String, String), String>, Vec<String>) {
    let (numbers, margins) = out.split_once("\n\n").expect("a blank line before the margin tables");
    let mut lines = numbers.lines();
    assert_eq!(lines.next(), Some("section,field,value"));
    let mut map = HashMap::new();
    for line in lines {
        let parts: Vec<&str> = line.split(',').collect();
        assert_eq!(parts.len(), 3, "one section,field,value per line: {line}");
        map.insert((parts[0].to_string(), parts[1].to_string()), parts[2].to_string());
    }
    (map, margins.lines().map(str::to_string).collect())
}

#[tokio::test]
async fn kpi_prints_what_for_month_computes_as_json_csv_and_tables() {
    let cli = Cli::new().await;
    let (db, catalogue, clock) = seeded(&cli).await;
    let ctx = ctx(&db, &catalogue, &clock);
    let october = Month::parse("2026-10").unwrap();
    let live: Vec<(String, String)> =
        sqlx::query_as("SELECT status, plan FROM subscriptions").fetch_all(db.pool()).await.unwrap();
    assert_eq!(live, [("active".to_string(), "pro".to_string())], "the fixture's subscription is applied");

    // --json is the `Kpis` struct, unchanged.
    let printed = cli.json(&["kpi", "--month", "2026-10"]);
    let computed = serde_json::to_value(kpis::for_month(&ctx, october, &Filter::default()).await.unwrap()).unwrap();
    assert_eq!(printed, computed);
    assert_eq!(printed["month"], "2026-10");
    assert_eq!(printed["filter"], serde_json::json!({"plan": null, "team": null}));

    // The filters reach the library as given.
    let filtered = cli.json(&["kpi", "--month", "2026-10", "--plan", "pro", "--team", "code"]);
    let filter = Filter { plan: Some("pro".into()), team: Some("code".into()) };
    let expected = serde_json::to_value(kpis::for_month(&ctx, october, &filter).await.unwrap()).unwrap();
    assert_eq!(filtered, expected);
    assert_eq!(filtered["filter"]["team"], "code");
    // Customers without a plan and direct API calls are filters too, as on the board.
    let filtered = cli.json(&["kpi", "--month", "2026-10", "--plan", "pay-per-task", "--team", "api"]);
    let filter = Filter { plan: Some("pay-per-task".into()), team: Some("api".into()) };
    let expected = serde_json::to_value(kpis::for_month(&ctx, october, &filter).await.unwrap()).unwrap();
    assert_eq!(filtered, expected);

    // --csv: every scalar of every section is one row holding the JSON's value.
    let out = cli.run(&["kpi", "--month", "2026-10", "--csv"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let (rows, margins) = parse_csv(&text(&out.stdout));
    let mut checked = 0;
    for section in ["mrr", "customers", "usage"] {
        for (field, value) in printed[section].as_object().unwrap() {
            let Some(cell) = rows.get(&(section.to_string(), field.clone())) else {
                assert!(!(value.is_i64() || value.is_null()), "{section}.{field} missing from the CSV");
                continue;
            };
            let want = if value.is_null() { String::new() } else { value.to_string() };
            assert_eq!(cell, &want, "{section}.{field}");
            checked += 1;
        }
    }
    assert!(checked >= 30, "only {checked} numbers in the CSV");
    // Lists are rows by their key: the ending MRR of each plan.
    for plan in printed["mrr"]["by_plan"].as_array().unwrap() {
        let field = format!("by_plan.{}.cents", plan["plan"].as_str().unwrap());
        assert_eq!(rows.get(&("mrr".to_string(), field.clone())), Some(&plan["cents"].to_string()), "{field}");
    }
    assert_eq!(margins[0], "table,key,label,revenue_micros,cost_micros,margin_micros,margin_bp,tasks");
    let margin_rows: usize = ["by_customer", "by_plan", "by_team", "by_model"]
        .iter()
        .map(|t| printed["usage"][t].as_array().map_or(0, Vec::len))
        .sum();
    assert_eq!(margins.len() - 1, margin_rows, "one CSV row per margin row");

    // The human tables: the month and filter, then every number.
    let out = cli.run(&["kpi", "--month", "2026-10", "--team", "code"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert!(shown.starts_with("KPIs for 2026-10 (plan: all, team: code)"), "{shown}");
    for number in ["starting_cents", "ending_cents", "churn_rate_bp", "tasks_completed", "gross_margin_micros"] {
        assert!(shown.contains(number), "{number} missing: {shown}");
    }
    let starting = shown.find("starting_cents").unwrap();
    assert!(
        starting < shown.find("new_cents").unwrap()
            && shown.find("new_cents").unwrap() < shown.find("ending_cents").unwrap()
    );
}

#[tokio::test]
async fn bad_input_names_its_flag_and_exits_2_without_touching_the_database() {
    let cli = Cli::new().await;
    let cases: &[(&[&str], &str)] = &[
        (&["kpi", "--month", "2026-13"], "--month"),
        (&["kpi", "--month", "October"], "--month"),
        (&["kpi", "--plan", "platinum"], "--plan"),
        (&["kpi", "--team", "legal"], "--team"),
        (&["--json", "kpi", "--csv"], "--json and --csv"),
        (&["kpi", "spend", "set", "--month", "2026-10", "--cents", "-100"], "--cents"),
        (&["kpi", "spend", "set", "--month", "10-2026", "--cents", "100"], "--month"),
    ];
    for (args, flag) in cases {
        let out = cli.run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out.stderr));
        let err = text(&out.stderr);
        assert!(err.contains(flag), "{args:?} should name {flag}: {err}");
        assert!(out.stdout.is_empty(), "{args:?} printed {}", text(&out.stdout));
    }
    // A flag clap does not know is refused by clap (also exit 2).
    let out = cli.run(&["kpi", "--months", "2026-10"]);
    assert_eq!(out.status.code(), Some(2));
    let out = cli.run(&["kpi", "spend", "list"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[tokio::test]
async fn rebuild_reports_what_it_did_and_leaves_the_numbers_as_the_consumers_had_them() {
    let cli = Cli::new().await;
    let (db, catalogue, clock) = seeded(&cli).await;
    // The rollups as the `reactions` role's consumers keep them.
    let ctx = ctx(&db, &catalogue, &clock);
    common::catch_up_insights(&ctx).await;
    let before = cli.json(&["kpi", "--month", "2026-10"]);
    let out = cli.run(&["kpi", "rebuild"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let said = text(&out.stdout);
    assert!(said.contains("rebuilt") && said.contains(" ms"), "{said}");
    let report = cli.json(&["kpi", "rebuild"]);
    assert_eq!(report["rebuilt"], serde_json::json!(["mrr", "usage", "people"]));
    assert!(report["millis"].as_i64().is_some_and(|ms| ms >= 0));
    let changes = report["changes"].as_object().expect("changes by table");
    if db.backend() == j1msky_db::Backend::Sqlite {
        // On a file the usage rollups are merged: the consumers had every row right, so
        // the rebuild wrote none and says so.
        assert!(said.contains("usage rollups: 0 rows written"), "{said} {}", cli.json(&["kpi", "rebuild"]));
        assert_eq!(changes.len(), 6, "{changes:?}");
        // Asked for, it says on stderr how long each step took, through the commit.
        let out = cli.command(&["kpi", "rebuild"]).env("RUST_LOG", "j1msky_insights=debug").output().expect("run");
        let log = text(&out.stderr);
        for step in ["tasks, ledger and API days summed", "usage rollups written", "committed"] {
            assert!(log.contains(step), "no step {step:?} in {log}");
        }
        for (table, c) in changes {
            assert_eq!((&c["inserted"], &c["updated"], &c["deleted"]), (&json!(0), &json!(0), &json!(0)), "{table}");
            assert!(c["kept"].as_u64().is_some_and(|n| n > 0), "{table}: {c}");
        }
    } else {
        assert!(changes.is_empty(), "PostgreSQL rewrites every row: {changes:?}");
    }
    // Rebuilding twice changes nothing: the numbers come from the source tables.
    let after = cli.json(&["kpi", "--month", "2026-10"]);
    assert_eq!(before["usage"], after["usage"]);
    assert_eq!(before["mrr"], after["mrr"]);
    let direct = kpis::for_month(&ctx, Month::parse("2026-10").unwrap(), &Filter::default()).await.unwrap();
    assert_eq!(serde_json::to_value(direct).unwrap(), after);
}

/// The month's acquisition spend, set twice (the second replaces the first) and listed.
#[tokio::test]
async fn spend_is_set_listed_and_counted_in_the_month() {
    let cli = Cli::new().await;
    let out = cli.run(&["kpi", "spend", "set", "--month", "2026-10", "--cents", "125000"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("1,250.00"), "{}", text(&out.stdout));
    let out = cli.run(&["kpi", "spend", "set", "--month", "2026-10", "--cents", "150000"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    cli.json(&["kpi", "spend", "set", "--month", "2026-09", "--cents", "0"]);
    let listed = cli.json(&["kpi", "spend", "list"]);
    assert_eq!(
        listed,
        serde_json::json!([{"month": "2026-10", "cents": 150000}, {"month": "2026-09", "cents": 0}]),
        "newest first, the replaced figure gone"
    );
    let k = cli.json(&["kpi", "--month", "2026-10"]);
    assert_eq!(k["customers"]["acquisition_spend_cents"], 150000);
}

/// The demo's seeding alone (no server) leaves numbers on the board: paying customers'
/// subscriptions applied from the fake Stripe's events, paid invoices, and tasks in more
/// than one month: the source rows, and the numbers the insights compute from them.
#[tokio::test]
async fn the_demo_seeds_a_board_with_real_numbers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("demo");
    let out = std::process::Command::new(BIN)
        .args(["demo", "--seed-only", "--data-dir"])
        .arg(&data)
        .current_dir(dir.path())
        .env_remove("J1MSKY_DATABASE_URL")
        .env_remove("J1MSKY_CONFIG")
        .env("RUST_LOG", "warn")
        .output()
        .expect("demo");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let url = format!("sqlite://{}", data.join("j1msky.db").display());
    let db = Db::open(&url).await.expect("demo db");
    let count = |sql: &'static str| {
        let db = db.clone();
        async move { sqlx::query_scalar::<_, i64>(sql).fetch_one(db.pool()).await.expect(sql) }
    };
    assert!(count("SELECT COUNT(*) FROM subscriptions WHERE status = 'active'").await >= 1);
    assert_eq!(count("SELECT COUNT(*) FROM stripe_events WHERE state <> 'applied'").await, 0, "every event applied");
    assert!(count("SELECT COUNT(*) FROM revenue_entries").await >= 3, "paid invoices booked");
    let months = count(
        "SELECT COUNT(DISTINCT finished_at / 2592000000000) FROM tasks WHERE state = 'succeeded' AND finished_at IS NOT NULL",
    )
    .await;
    assert!(months >= 2, "tasks in more than one month ({months} thirty-day spans)");

    let shipped = Catalogue::from_json_str(j1msky_core::catalogue::SHIPPED).expect("shipped catalogue");
    let tz: chrono_tz::Tz = shipped.business.time_zone.parse().expect("zone");
    let now = Month::of(tz, j1msky_core::SystemClock.now_micros());
    let run = |month: String| {
        let out = std::process::Command::new(BIN)
            .args(["--json", "--database-url", &url, "kpi", "--month", &month])
            .env_remove("J1MSKY_CONFIG")
            .current_dir(dir.path())
            .output()
            .expect("kpi");
        assert!(out.status.success(), "{}", text(&out.stderr));
        serde_json::from_slice::<Value>(&out.stdout).expect("json")
    };
    let this = run(now.to_string());
    let last = run(now.prev().to_string());
    assert!(this["mrr"]["ending_cents"].as_i64().unwrap_or(0) > 0, "MRR: {}", this["mrr"]);
    assert!(last["mrr"]["ending_cents"].as_i64().unwrap_or(0) > 0, "last month's MRR: {}", last["mrr"]);
    assert!(last["usage"]["tasks_completed"].as_i64().unwrap_or(0) > 0, "last month's tasks: {}", last["usage"]);
    assert!(last["usage"]["model_cost_micros"].as_i64().unwrap_or(0) > 0);
    assert!(last["usage"]["subscription_revenue_cents"].as_i64().unwrap_or(0) > 0, "{}", last["usage"]);
    // Northwind signed up 80 days ago and ran its first task 3 days later: its signup
    // month's cohort is activated (whichever months the board lists with it).
    let signup = run(Month::of(tz, j1msky_core::SystemClock.now_micros() - 80 * 86_400_000_000).to_string());
    let activated: i64 = [&this, &last, &signup]
        .iter()
        .flat_map(|k| k["customers"]["activation"].as_array().cloned().unwrap_or_default())
        .filter_map(|c| c["activated"].as_i64())
        .sum();
    assert!(activated > 0, "activation: {}", signup["customers"]["activation"]);
    // The two paying customers answered the NPS survey 3 and 18 days ago (this month or
    // the last): one promoter, one detractor.
    let answers =
        |field: &str| -> i64 { [&this, &last].iter().filter_map(|k| k["customers"]["nps"][field].as_i64()).sum() };
    assert_eq!(
        (answers("responses"), answers("promoters"), answers("detractors")),
        (2, 1, 1),
        "{} {}",
        this["customers"]["nps"],
        last["customers"]["nps"]
    );
    // The acquisition spend of the month Northwind started paying (78 days ago) gives
    // that month a CAC: the spend over its new paying customers.
    let started = run(Month::of(tz, j1msky_core::SystemClock.now_micros() - 78 * 86_400_000_000).to_string());
    assert_eq!(started["customers"]["acquisition_spend_cents"], 45_000, "{}", started["customers"]);
    let new = started["mrr"]["new_customers"].as_i64().unwrap_or(0);
    assert!(new >= 1, "Northwind started paying that month: {}", started["mrr"]);
    assert_eq!(started["customers"]["cac_cents"].as_i64(), Some((45_000 + new / 2) / new), "{}", started["customers"]);

    // A second demo run plays no history again: nothing booked or run twice.
    let (revenue, tasks) =
        (count("SELECT COUNT(*) FROM revenue_entries").await, count("SELECT COUNT(*) FROM tasks").await);
    let again = std::process::Command::new(BIN)
        .args(["demo", "--seed-only", "--data-dir"])
        .arg(&data)
        .current_dir(dir.path())
        .env_remove("J1MSKY_DATABASE_URL")
        .env_remove("J1MSKY_CONFIG")
        .env("RUST_LOG", "warn")
        .output()
        .expect("demo again");
    assert!(again.status.success(), "{}", text(&again.stderr));
    assert_eq!(count("SELECT COUNT(*) FROM revenue_entries").await, revenue);
    assert_eq!(count("SELECT COUNT(*) FROM tasks").await, tasks);
}

/// The shipped catalogue counted in `zone`, written beside a copy of its templates (a
/// catalogue names its templates relative to its own file); returns the file.
fn catalogue_in_zone(dir: &std::path::Path, zone: &str) -> std::path::PathBuf {
    let mut catalogue: Value =
        serde_json::from_str(&std::fs::read_to_string(repo_file("config/business.json")).unwrap()).unwrap();
    catalogue["business"]["time_zone"] = json!(zone);
    let file = dir.join("business.json");
    std::fs::write(&file, serde_json::to_string_pretty(&catalogue).unwrap()).unwrap();
    std::fs::create_dir_all(dir.join("templates")).unwrap();
    for entry in std::fs::read_dir(repo_file("config/templates")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.join("templates").join(entry.file_name())).unwrap();
    }
    file
}

#[tokio::test]
async fn kpi_json_gives_the_hand_computed_story_after_a_rebuild_from_the_stored_history() {
    use mrr_support::story::{expected, expected_counts, expected_rates, story, JUN_15};
    let cli = Cli::new().await;
    let dir = tempfile::tempdir().unwrap();
    let config = catalogue_in_zone(dir.path(), "Europe/Berlin");
    let catalogue = Arc::new(Catalogue::load(&config).expect("catalogue"));
    let db = Db::open(&cli.url).await.expect("db");
    let clock = ManualClock::new(JUN_15 * 1_000_000);
    let ctx = Ctx { db: db.clone(), catalogue: catalogue.into(), clock: Arc::new(clock.clone()) };
    let w = mrr_support::on(ctx, clock);
    let s = story(&w).await;
    w.deliver(&s.events).await;
    // No consumer has run: the numbers come from what `kpi rebuild` computes out of the
    // subscription history the applier wrote and the stored invoices.
    let kpi = |args: &[&str]| {
        let out = cli.command(args).env("J1MSKY_CONFIG", &config).output().expect("run j1msky");
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        out.stdout
    };
    kpi(&["kpi", "rebuild"]);
    let rates = expected_rates();
    for (month, want) in expected() {
        let printed: Value = serde_json::from_slice(&kpi(&["--json", "kpi", "--month", month])).expect("json");
        let mrr = &printed["mrr"];
        let counts = ["paying_start", "paying_end", "new_customers", "churned_customers", "reactivated_customers"]
            .map(|f| mrr[f].as_i64().unwrap_or_else(|| panic!("{month}: mrr.{f}")));
        let (start, end, new, churned, back) = expected_counts(month);
        assert_eq!(counts, [start, end, new, churned, back], "{month}: paying start/end, new, churned, reactivated");
        let mut movements = mrr.clone();
        for f in ["paying_start", "paying_end", "new_customers", "churned_customers", "reactivated_customers"] {
            movements[f] = json!(0);
        }
        assert_eq!(movements, serde_json::to_value(&want).unwrap(), "{month}: MRR and its movements");
        let (_, churn, gross, net, arpa) = rates.iter().find(|r| r.0 == month).expect("rates for every month");
        let customers = &printed["customers"];
        let got = ["churn_rate_bp", "gross_revenue_churn_bp", "net_revenue_churn_bp", "arpa_cents"]
            .map(|f| customers[f].as_i64());
        assert_eq!(got, [*churn, *gross, *net, *arpa], "{month}: churn, gross and net revenue churn, ARPA");
        // The upgrade's prorated invoice (Feb 15, $46.67) is the only money the story
        // received: subscription revenue of February, MRR of no month.
        let revenue = printed["usage"]["subscription_revenue_cents"].as_i64();
        assert_eq!(revenue, Some(if month == "2026-02" { 4_667 } else { 0 }), "{month}: subscription revenue");
    }
    // The plan filter as the library's own test has it: April's Pro customers.
    let pro: Value = serde_json::from_slice(&kpi(&["--json", "kpi", "--month", "2026-04", "--plan", "pro"])).unwrap();
    let got = ["starting_cents", "expansion_cents", "ending_cents", "paying_end"].map(|f| pro["mrr"][f].as_i64());
    assert_eq!(got, [Some(16_340), Some(9_400), Some(25_740), Some(3)]);
    // The same again from the consumers' rollups: a second rebuild changes no number.
    let before = kpi(&["--json", "kpi", "--month", "2026-05"]);
    kpi(&["kpi", "rebuild"]);
    assert_eq!(kpi(&["--json", "kpi", "--month", "2026-05"]), before);
}

#[tokio::test]
async fn kpi_json_gives_the_hand_computed_month_of_revenue_cost_and_margins() {
    use usage_support::{november, BY_CUSTOMER, COMPLETION, TOTALS};
    let cli = Cli::new().await;
    let db = Db::open(&cli.url).await.expect("db");
    let catalogue = Catalogue::load(&repo_file("config/business.json")).expect("catalogue");
    november(&db, &catalogue).await;
    // No consumer has run: `kpi rebuild` computes the rollups from the tasks, the ledger
    // and the invoices billing booked.
    let out = cli.run(&["kpi", "rebuild"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let usage = cli.json(&["kpi", "--month", "2026-11"])["usage"].clone();
    for (field, value) in TOTALS {
        assert_eq!(usage[field], *value, "{field}");
    }
    let listed: Vec<(String, i64, i64, i64, i64)> = usage["by_customer"]
        .as_array()
        .expect("customers")
        .iter()
        .map(|r| {
            let n = |f: &str| r[f].as_i64().unwrap_or_else(|| panic!("{f}: {r}"));
            (
                r["label"].as_str().unwrap_or_default().to_string(),
                n("revenue_micros"),
                n("cost_micros"),
                n("margin_micros"),
                n("tasks"),
            )
        })
        .collect();
    let want: Vec<(String, i64, i64, i64, i64)> =
        BY_CUSTOMER.iter().map(|(name, r, c, m, t)| (name.to_string(), *r, *c, *m, *t)).collect();
    assert_eq!(listed, want, "each customer's margin, the loss-makers first");
    let times: Vec<(String, i64, i64, i64)> = usage["completion"]
        .as_array()
        .expect("completion")
        .iter()
        .map(|t| {
            let n = |f: &str| t[f].as_i64().unwrap_or_else(|| panic!("{f}: {t}"));
            (t["team"].as_str().unwrap_or_default().to_string(), n("tasks"), n("median_ms"), n("p90_ms"))
        })
        .collect();
    let want: Vec<(String, i64, i64, i64)> =
        COMPLETION.iter().map(|(t, n, m, p)| (t.to_string(), *n, *m, *p)).collect();
    assert_eq!(times, want, "completion times per team");
}
