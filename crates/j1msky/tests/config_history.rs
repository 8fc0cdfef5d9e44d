//! Configuration history as an operator lives it: a running `j1msky serve` process, the
//! CLI in other processes on the same database. A catalogue applied with `config apply`
//! reaches the server without a restart; a bad one changes nothing; the history says who,
//! when, what and why; a rollback brings the old catalogue (or setting) back.
// A test stops at the first surprise: panicking shortcuts, the wall clock and untracked
// tasks are fine here (see [workspace.lints] in Cargo.toml).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::common;

use common::{repo_file, text, Cli};

/// A running `j1msky serve` child process, killed on drop.
struct Server {
    child: Child,
    base: String,
}

impl Server {
    fn start(cli: &Cli) -> Server {
        let args = ["serve", "--listen", "127.0.0.1:0", "--simulated-providers", "--workers", "0"];
        let mut child = cli.command(&args).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("spawn server");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let base = loop {
            let line = lines.next().expect("server printed its address").expect("read");
            if let Some(addr) = line.strip_prefix("j1msky listening on ") {
                break addr.trim().to_string();
            }
        };
        Server { child, base }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One routed call: the model that answered and what it cost.
async fn call(server: &Server, secret: &str, category: &str) -> (String, i64) {
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", server.base))
        .bearer_auth(secret)
        .header("x-j1msky-category", category)
        .json(&serde_json::json!({"model": "auto", "messages": [{"role": "user", "content": "the same question"}]}))
        .send()
        .await
        .expect("chat");
    assert_eq!(resp.status(), 200, "{:?}", resp.text().await);
    let header = |name: &str| resp.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    (header("x-j1msky-model"), header("x-j1msky-cost-micros").parse().expect("cost header"))
}

/// Calls until `category` is answered by `model`: the server follows the version in
/// force once a second, so this is bounded by a few seconds, not by business time.
async fn until_routed(server: &Server, secret: &str, category: &str, model: &str) -> (String, i64) {
    let mut last = (String::new(), 0);
    for _ in 0..50 {
        last = call(server, secret, category).await;
        if last.0 == model {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("{category} still answered by {} after 10 s, not {model}", last.0);
}

/// The shipped catalogue edited by `edit`, written beside the shipped templates.
fn catalogue_file(dir: &Path, name: &str, edit: impl FnOnce(&mut Value)) -> String {
    let mut c: Value =
        serde_json::from_str(&std::fs::read_to_string(repo_file("config/business.json")).unwrap()).unwrap();
    edit(&mut c);
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_string_pretty(&c).unwrap()).unwrap();
    path.display().to_string()
}

fn catalogue_versions(cli: &Cli) -> Vec<Value> {
    cli.json(&["config", "history", "--key", "catalogue"]).as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn an_applied_catalogue_reaches_the_running_server_and_a_rollback_brings_the_old_one_back() {
    let cli = Cli::new().await;
    let server = Server::start(&cli);
    let made = cli.json(&["customer", "add", "--name", "Live Co", "--plan", "pro", "--stage", "active"]);
    let id = made["customer"]["id"].as_str().expect("id").to_string();
    let secret =
        cli.json(&["key", "create", "--customer", &id, "--name", "live"])["secret"].as_str().unwrap().to_string();

    // The first start stored the --config file as version 1.
    let versions = catalogue_versions(&cli);
    assert_eq!(versions.len(), 1, "{versions:?}");
    assert_eq!(versions[0]["version"], 1);
    assert!(versions[0]["reason"].as_str().unwrap().contains("first start"));
    let (model, general_cost) = call(&server, &secret, "general").await;
    assert_eq!(model, "kimi-k2.5");
    assert_eq!(call(&server, &secret, "code").await.0, "kimi-k2.5");

    // A new catalogue: code goes to Sonnet, Kimi's input price doubles.
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(repo_file("config/templates"), dir.path().join("templates")).unwrap();
    let good = catalogue_file(dir.path(), "good.json", |c| {
        c["routing"]["categories"]["code"] = "claude-sonnet".into();
        c["models"]["kimi-k2.5"]["input_per_mtok"] = "1.20".into();
    });
    let applied = cli.json(&["config", "apply", &good, "--reason", "code reviews need Sonnet"]);
    assert_eq!((applied["version"].as_i64(), applied["unchanged"].as_bool()), (Some(2), Some(false)));
    until_routed(&server, &secret, "code", "claude-sonnet").await;
    let (model, cost) = call(&server, &secret, "general").await;
    assert_eq!(model, "kimi-k2.5");
    assert!(cost > general_cost, "the new Kimi price is charged: {cost} after {general_cost}");
    // The same file again stores nothing.
    let again = cli.json(&["config", "apply", &good, "--reason", "twice"]);
    assert_eq!((again["version"].as_i64(), again["unchanged"].as_bool()), (Some(2), Some(true)));

    // A bad catalogue: exit 2 with the JSON path and the reason; nothing stored or served.
    let bad = catalogue_file(dir.path(), "bad.json", |c| c["routing"]["categories"]["code"] = "gpt-nine".into());
    let out = cli.run(&["config", "apply", &bad, "--reason", "typo"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(said.contains("routing.categories.code") && said.contains("gpt-nine"), "{said}");
    let no_reason = cli.run(&["config", "apply", &good, "--reason", " "]);
    assert_eq!(no_reason.status.code(), Some(2), "a reason is required: {}", text(&no_reason.stderr));
    assert_eq!(catalogue_versions(&cli).len(), 2, "refused files store nothing");
    assert_eq!(call(&server, &secret, "code").await.0, "claude-sonnet");

    // The history: who, when, where from and why; the diff by JSON path.
    let versions = catalogue_versions(&cli);
    assert_eq!(versions[0]["version"], 2);
    assert_eq!(versions[0]["reason"], "code reviews need Sonnet");
    assert_eq!(versions[0]["source"], good.as_str());
    assert!(versions[0]["created_by"].as_str().unwrap().starts_with("cli:"));
    assert!(versions[0]["created_at"].as_i64().unwrap() >= versions[1]["created_at"].as_i64().unwrap());
    let diff = cli.json(&["config", "diff", "1", "2"]);
    let paths: Vec<&str> = diff.as_array().unwrap().iter().map(|c| c["path"].as_str().unwrap()).collect();
    assert_eq!(paths, ["models.kimi-k2.5.input_per_mtok", "routing.categories.code"]);
    assert_eq!((diff[1]["old"].as_str(), diff[1]["new"].as_str()), (Some("kimi-k2.5"), Some("claude-sonnet")));

    // Rollback: a new version equal to version 1, served again without a restart.
    let refused = cli.run(&["config", "rollback", "1", "--reason", "too dear"]);
    assert_eq!(refused.status.code(), Some(2), "--yes is needed");
    let rolled = cli.json(&["config", "rollback", "1", "--reason", "too dear", "--yes"]);
    assert_eq!(rolled["version"], 3);
    until_routed(&server, &secret, "code", "kimi-k2.5").await;
    assert_eq!(call(&server, &secret, "general").await.1, general_cost, "the old price is back");
    let versions = catalogue_versions(&cli);
    assert_eq!(versions.len(), 3, "history is append-only");
    assert_eq!(
        (versions[0]["source"].as_str(), versions[0]["sha256"].clone()),
        (Some("rollback to v1"), versions[2]["sha256"].clone())
    );
    assert!(cli.json(&["config", "diff", "1", "3"]).as_array().unwrap().is_empty());
}

#[tokio::test]
async fn setting_changes_from_the_cli_keep_their_reason_and_roll_back() {
    let cli = Cli::new().await;
    cli.json(&["gateway", "cap", "global", "500", "--reason", "launch day"]);
    cli.json(&["gateway", "cap", "global", "700", "--reason", "busier than planned"]);
    let out = cli.run(&["gateway", "cap", "global", "900"]);
    assert_eq!(out.status.code(), Some(2), "the CLI asks for a reason: {}", text(&out.stderr));

    let changes = cli.json(&["config", "history", "--key", "gateway.cap."]);
    let seen: Vec<(&str, &str, Option<&str>, Option<&str>)> = changes
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (c["kind"].as_str().unwrap(), c["reason"].as_str().unwrap(), c["previous"].as_str(), c["value"].as_str())
        })
        .collect();
    assert_eq!(
        seen,
        [("setting", "busier than planned", Some("500"), Some("700")), ("setting", "launch day", None, Some("500"))]
    );
    assert!(changes[0]["changed_by"].as_str().unwrap().starts_with("cli:"));
    let latest = changes[0]["id"].as_str().unwrap().to_string();
    let diff = cli.json(&["config", "diff", &latest]);
    assert_eq!((diff[0]["old"].as_str(), diff[0]["new"].as_str()), (Some("500"), Some("700")));

    // Undo the latest change: the cap is 500 again, and the undo is itself in the history.
    let undone = cli.json(&["config", "rollback", &latest, "--reason", "calmer now", "--yes"]);
    assert_eq!((undone["key"].as_str(), undone["value"].as_str()), (Some("gateway.cap.global"), Some("500")));
    let status = cli.json(&["gateway", "status"]);
    let global = status["caps"].as_array().unwrap().iter().find(|r| r["scope"] == "global").cloned().unwrap();
    assert_eq!(global["cap"], 500);
    let all = cli.json(&["config", "history"]);
    assert_eq!(all[0]["kind"], "setting");
    assert_eq!(all[0]["reason"], format!("rollback of {latest}: calmer now"));
    assert_eq!((all[0]["previous"].as_str(), all[0]["value"].as_str()), (Some("700"), Some("500")));
    let unknown = cli.run(&["config", "rollback", "seth_nothing", "--reason", "x", "--yes"]);
    assert_eq!(unknown.status.code(), Some(2), "{}", text(&unknown.stderr));
}

#[tokio::test]
async fn a_customer_budget_change_needs_a_reason_is_in_the_history_and_rolls_back() {
    let cli = Cli::new().await;
    let made = cli.json(&["customer", "add", "--name", "Budget Co", "--plan", "pro", "--stage", "active"]);
    let id = made["customer"]["id"].as_str().expect("id").to_string();

    // No reason: clap names the flag; a blank one: the domain's rule names the field.
    let missing = cli.run(&["gateway", "customer-budget", &id, "50"]);
    assert_eq!(missing.status.code(), Some(2), "{}", text(&missing.stderr));
    assert!(text(&missing.stderr).contains("--reason"), "{}", text(&missing.stderr));
    let blank = cli.run(&["gateway", "customer-budget", &id, "50", "--reason", "  "]);
    assert_eq!(blank.status.code(), Some(2), "{}", text(&blank.stderr));
    assert!(text(&blank.stderr).contains("reason: say why"), "{}", text(&blank.stderr));
    let key = format!("customer.monthly_budget.{id}");
    assert!(cli.json(&["config", "history", "--key", &key]).as_array().unwrap().is_empty(), "nothing stored");

    cli.json(&["gateway", "customer-budget", &id, "50", "--reason", "pilot agreed at 50"]);
    cli.json(&["gateway", "customer-budget", &id, "80.00", "--reason", "raised after the call"]);
    let changes = cli.json(&["config", "history", "--key", &key]);
    let seen: Vec<(&str, Option<&str>, Option<&str>)> = changes
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["reason"].as_str().unwrap(), c["previous"].as_str(), c["value"].as_str()))
        .collect();
    assert_eq!(
        seen,
        [("raised after the call", Some("$50.00"), Some("$80.00")), ("pilot agreed at 50", None, Some("$50.00"))]
    );
    assert!(changes[0]["changed_by"].as_str().unwrap().starts_with("cli:"));
    assert!(changes[0]["changed_at"].as_i64().unwrap() >= changes[1]["changed_at"].as_i64().unwrap());
    // The merged history (catalogue versions and every setting) holds them too.
    let all = cli.json(&["config", "history"]);
    assert!(all.as_array().unwrap().iter().any(|e| e["key"] == key.as_str() && e["reason"] == "pilot agreed at 50"));

    // Undo the raise: the budget is $50.00 again, read back from the customer's row by
    // the next change, which keeps it as the amount it replaced.
    let latest = changes[0]["id"].as_str().unwrap().to_string();
    let undone = cli.json(&["config", "rollback", &latest, "--reason", "the call was misheard", "--yes"]);
    assert_eq!((undone["key"].as_str(), undone["value"].as_str()), (Some(key.as_str()), Some("$50.00")));
    cli.json(&["gateway", "customer-budget", &id, "none", "--reason", "pilot over"]);
    let changes = cli.json(&["config", "history", "--key", &key]);
    assert_eq!(changes[1]["reason"], format!("rollback of {latest}: the call was misheard"));
    assert_eq!((changes[1]["previous"].as_str(), changes[1]["value"].as_str()), (Some("$80.00"), Some("$50.00")));
    assert_eq!((changes[0]["previous"].as_str(), changes[0]["value"].as_str()), (Some("$50.00"), None));
}

/// Operator commands that run once (`report`) work with the catalogue version in force,
/// as the server does, not with the `--config` file they were started with: the morning
/// review is dated in the business time zone of the version applied last.
#[tokio::test]
async fn one_shot_commands_read_the_catalogue_in_force() {
    let cli = Cli::new().await;
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(repo_file("config/templates"), dir.path().join("templates")).unwrap();
    // UTC−12 and UTC+14 are always on different dates, so at most one of them can agree
    // with the file's UTC.
    for (name, zone) in [("west.json", "Etc/GMT+12"), ("east.json", "Pacific/Kiritimati")] {
        let file = catalogue_file(dir.path(), name, |c| c["business"]["time_zone"] = zone.into());
        cli.json(&["config", "apply", &file, "--reason", "the business moved"]);
        let tz: chrono_tz::Tz = zone.parse().unwrap();
        let before = chrono::Utc::now().with_timezone(&tz).date_naive();
        let title = cli.json(&["report", "morning"])["title"].as_str().unwrap().to_string();
        let after = chrono::Utc::now().with_timezone(&tz).date_naive();
        assert!(
            [format!("Morning review, {before}"), format!("Morning review, {after}")].contains(&title),
            "{zone}: {title}"
        );
    }
}

/// `kpi`, `costs` and the lifecycle commands also take the catalogue in force: a plan
/// only the applied version has is a known `--plan`, and a day's cost review starts at
/// midnight in the applied version's time zone.
#[tokio::test]
async fn kpi_and_cost_review_read_the_catalogue_in_force() {
    let cli = Cli::new().await;
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(repo_file("config/templates"), dir.path().join("templates")).unwrap();
    let unknown = cli.command(&["--json", "kpi", "--plan", "scale"]).output().unwrap();
    assert_eq!(unknown.status.code(), Some(2), "{}", text(&unknown.stderr));
    assert!(text(&unknown.stderr).contains("--plan: `scale` is not a plan"), "{}", text(&unknown.stderr));

    let file = catalogue_file(dir.path(), "scale.json", |c| {
        let mut scale = c["plans"]["pro"].clone();
        scale["name"] = "Scale".into();
        c["plans"]["scale"] = scale;
        c["business"]["time_zone"] = "Etc/GMT+12".into();
    });
    cli.json(&["config", "apply", &file, "--reason", "a bigger plan, and the business moved"]);
    let kpis = cli.json(&["kpi", "--plan", "scale", "--month", "2026-01"]);
    assert!(kpis.is_object(), "{kpis}");
    // UTC−12: the business day 2026-01-15 starts at noon UTC.
    let review = cli.json(&["costs", "--day", "2026-01-15"]);
    assert_eq!(review["day_start"].as_str(), Some("2026-01-15T12:00:00Z"), "{review}");
}
