// A test stops at the first surprise: unwrap and expect are its assertions.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]
//! The board in headless Chromium: `j1msky serve` on a fresh database with a fixture
//! (two customers, one paying through the fake Stripe, tasks this month and last), then
//! `tests/browser/board.py` (selenium) logs in as the operator, checks the tiles against
//! `kpis::for_month`, a chart, the team filter, and a customer's `/app` home.
//! Needs `scripts/browser-env` (J1MSKY_BROWSER_PYTHON); skips without it outside CI.

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::Arc;

use j1msky_accounts::customers::{NewCustomer, NewOwner};
use j1msky_accounts::users::NewUser;
use j1msky_audit::Actor;
use j1msky_core::catalogue::Catalogue;
use j1msky_core::vocab::{Stage, UseCase, UserRole};
use j1msky_core::{Clock, ManualClock, SystemClock};
use j1msky_db::Db;
use j1msky_insights::kpis::{self, Filter};
use j1msky_insights::Ctx;
use serde_json::json;

use crate::common;

use common::{repo_file, text, Cli};

const PASSWORD: &str = "board-test-password-1";
const DAY: i64 = 86_400_000_000;

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn customer(name: &str, email: &str, plan: &str, teams: &[&str]) -> (NewCustomer, NewOwner) {
    let input = NewCustomer {
        name: name.into(),
        contact_email: Some(email.into()),
        stage: Some(Stage::Active),
        use_case: Some(UseCase::Code),
        plan: Some(plan.into()),
        chosen_teams: teams.iter().map(|t| t.to_string()).collect(),
        expected_monthly_tasks: Some(50),
        time_zone: Some("UTC".into()),
    };
    (input, NewOwner { email: email.into(), display_name: name.into(), password: PASSWORD.into() })
}

#[tokio::test]
async fn the_board_in_chromium_shows_the_fixture_draws_a_chart_filters_and_the_customer_sees_its_usage() {
    let Ok(python) = std::env::var("J1MSKY_BROWSER_PYTHON") else {
        if std::env::var("CI").is_ok() || std::env::var("J1MSKY_REQUIRE_BROWSER").is_ok_and(|v| v == "1") {
            panic!("J1MSKY_BROWSER_PYTHON is not set: run scripts/browser-env (scripts/test does)");
        }
        eprintln!("SKIPPED: J1MSKY_BROWSER_PYTHON is not set (run scripts/browser-env, then export it)");
        return;
    };
    let cli = Cli::new().await;
    let db = Db::open(&cli.url).await.unwrap();
    let catalogue = Arc::new(Catalogue::load(&repo_file("config/business.json")).unwrap());
    let actor = Actor::system();
    let real_now = SystemClock.now_micros();
    let ctx = Ctx { db: db.clone(), catalogue: catalogue.clone().into(), clock: Arc::new(SystemClock) };
    let this_month = ctx.this_month();
    let (month_start, _) = this_month.bounds(ctx.tz());
    // This month's work starts ten minutes ago (or at the month's first second).
    let today = (real_now - 600_000_000).max(month_start + 1_000_000);

    let operator = NewUser {
        email: "operator@board.test".into(),
        display_name: "Operator".into(),
        password: PASSWORD.into(),
        role: UserRole::Operator,
        customer_id: None,
    };
    j1msky_accounts::users::create(&db, &actor, operator, today).await.unwrap();
    let (input, owner) = customer("Meadow Lark Labs", "owner@meadow.test", "pro", &[]);
    let (meadow, _) = j1msky_accounts::customers::create_with_owner(
        &db,
        &catalogue,
        &actor,
        input,
        Some(owner),
        month_start - 40 * DAY,
    )
    .await
    .unwrap();
    let (input, owner) = customer("Quarry Other Co", "owner@quarry.test", "starter", &["research", "code"]);
    let (quarry, _) = j1msky_accounts::customers::create_with_owner(
        &db,
        &catalogue,
        &actor,
        input,
        Some(owner),
        month_start - 40 * DAY,
    )
    .await
    .unwrap();
    let _fake = common::subscribe(&db, &catalogue, &meadow.id, "pro", SystemClock.now_micros()).await;

    // Tasks: Meadow one last month, three this month (two code, one content); Quarry one.
    let sim = j1msky_sim::spawn(j1msky_sim::SimConfig::default()).await.unwrap();
    let overrides =
        j1msky_gateway::ProviderOverride::all_to(&catalogue, &sim.openai_base(), &sim.anthropic_base(), "simulated");
    let clock = ManualClock::new(month_start - 5 * DAY);
    let gateway = Arc::new(
        j1msky_gateway::Gateway::builder(db.clone(), catalogue.clone())
            .overrides(overrides)
            .clock(Arc::new(clock.clone()))
            .build()
            .unwrap(),
    );
    let worker = j1msky_tasks::Worker::new(
        db.clone(),
        catalogue.clone(),
        gateway.clone(),
        Arc::new(clock.clone()),
        "board-fixture",
        j1msky_tasks::WorkerConfig::default(),
    );
    let work = [
        (&meadow.id, "code", false),
        (&meadow.id, "code", true),
        (&meadow.id, "code", true),
        (&meadow.id, "content", true),
        (&quarry.id, "research", true),
    ];
    for (who, team, now_month) in work {
        if now_month && clock.now_micros() < today {
            clock.advance_micros(today - clock.now_micros());
        }
        let task =
            j1msky_tasks::NewTask { team: team.into(), prompt: Some(format!("{team} work")), ..Default::default() };
        j1msky_tasks::submit(&db, &catalogue, who, &task, None, clock.now_micros()).await.unwrap();
        let (_, outcome) = worker.run_once().await.unwrap().expect("the task");
        assert_eq!(outcome, j1msky_tasks::worker::Outcome::Succeeded);
        clock.advance_secs(30);
    }
    gateway.flush().await;
    // The server takes over this database's in-process limits.
    drop(worker);
    drop(gateway);

    common::catch_up_insights(&ctx).await;
    let all = kpis::for_month(&ctx, this_month, &Filter::default()).await.unwrap();
    let code = Filter { plan: None, team: Some("code".into()) };
    let filtered = kpis::for_month(&ctx, this_month, &code).await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("serve.log");
    let mut child = cli
        .command(&["serve", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let server = Server(child);
    let mut lines = BufReader::new(stdout).lines();
    let base = loop {
        let Some(Ok(line)) = lines.next() else {
            panic!("the server printed no address: {}", std::fs::read_to_string(&log).unwrap_or_default())
        };
        if let Some(addr) = line.strip_prefix("j1msky listening on ") {
            break addr.trim().to_string();
        }
    };
    let config = dir.path().join("board.json");
    let cfg = json!({
        "base": base,
        "chromium": std::env::var("J1MSKY_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()),
        "chromedriver": std::env::var("J1MSKY_CHROMEDRIVER").unwrap_or_else(|_| "/usr/bin/chromedriver".into()),
        "operator": {"email": "operator@board.test", "password": PASSWORD},
        "owner": {"email": "owner@meadow.test", "password": PASSWORD, "tasks": 3, "other": "Quarry Other Co"},
        "all": all,
        "filtered": filtered,
        "team": "code",
        "must": ["mrr.ending_cents", "usage.tasks_completed"],
        "changes": "usage.tasks_completed",
    });
    std::fs::write(&config, serde_json::to_vec_pretty(&cfg).unwrap()).unwrap();
    let out = std::process::Command::new(python)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .arg(repo_file("crates/j1msky/tests/browser/board.py"))
        .arg(&config)
        .output()
        .expect("run the selenium script");
    drop(server);
    println!("{}", text(&out.stdout));
    assert!(out.status.success(), "board.py: {}\n{}", text(&out.stdout), text(&out.stderr));
}
