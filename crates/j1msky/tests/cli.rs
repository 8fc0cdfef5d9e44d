//! The `j1msky` binary as an operator uses it: real processes, a real database (SQLite,
//! or PostgreSQL when the test run asks for it), and a real server beside the CLI.

// A test (or bench) stops at the first surprise: panicking shortcuts, the wall clock
// and untracked tasks are fine here (see [workspace.lints] in Cargo.toml).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};

use serde_json::Value;

use crate::common;

use common::{repo_file, text, Cli, BIN};

#[test]
fn config_check_accepts_the_shipped_catalogue_and_rejects_a_bad_one_with_exit_2() {
    let out = Command::new(BIN).args(["config", "check"]).arg(repo_file("config/business.json")).output().expect("run");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("is valid"));
    assert!(text(&out.stdout).contains("starter"));

    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("business.json");
    let shipped = std::fs::read_to_string(repo_file("config/business.json")).expect("read");
    std::fs::write(&bad, shipped.replace("\"monthly_price\": \"49.00\"", "\"monthly_price\": \"-49.00\""))
        .expect("write");
    let out = Command::new(BIN).args(["config", "check"]).arg(&bad).output().expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stdout).contains("plans.starter.monthly_price"), "{}", text(&out.stdout));

    // --json for scripts, and J1MSKY_CONFIG as the default file.
    let out = Command::new(BIN).args(["--json", "config", "check"]).env("J1MSKY_CONFIG", &bad).output().expect("run");
    assert_eq!(out.status.code(), Some(2));
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["valid"], false);
    assert_eq!(v["issues"][0]["path"], "plans.starter.monthly_price");

    let out = Command::new(BIN).args(["config", "check", "/nonexistent/business.json"]).output().expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("cannot read"), "{}", text(&out.stderr));
}

#[test]
fn every_command_has_help() {
    for args in [
        vec!["--help"],
        vec!["serve", "--help"],
        vec!["demo", "--help"],
        vec!["config", "check", "--help"],
        vec!["db", "migrate", "--help"],
        vec!["customer", "add", "--help"],
        vec!["customer", "list", "--help"],
        vec!["customer", "show", "--help"],
        vec!["customer", "set-stage", "--help"],
        vec!["user", "add", "--help"],
        vec!["user", "list", "--help"],
        vec!["user", "set-password", "--help"],
        vec!["key", "create", "--help"],
        vec!["key", "list", "--help"],
        vec!["key", "revoke", "--help"],
    ] {
        let out = Command::new(BIN).args(&args).output().expect("run");
        assert!(out.status.success(), "{args:?}");
        assert!(text(&out.stdout).contains("Usage:"), "{args:?}: {}", text(&out.stdout));
    }
}

#[tokio::test]
async fn operator_manages_customers_users_and_keys_from_the_command_line() {
    let cli = Cli::new().await;
    assert!(cli.run(&["db", "migrate"]).status.success());

    let made = cli.json(&[
        "customer",
        "add",
        "--name",
        "Acme Robotics",
        "--plan",
        "starter",
        "--teams",
        "code,research",
        "--stage",
        "trial",
        "--use-case",
        "code",
        "--time-zone",
        "Europe/Berlin",
        "--expected-tasks",
        "80",
        "--owner-email",
        "Ann@Acme.test",
    ]);
    let id = made["customer"]["id"].as_str().expect("id").to_string();
    assert!(id.starts_with("cus_"));
    assert_eq!(made["customer"]["chosen_teams"], serde_json::json!(["code", "research"]));
    let owner_password = made["owner"]["password"].as_str().expect("password shown once").to_string();
    assert!(owner_password.len() >= 10);

    // Human output is a table naming the customer.
    let out = cli.run(&["customer", "list"]);
    assert!(out.status.success());
    assert!(text(&out.stdout).contains("Acme Robotics") && text(&out.stdout).contains("trial"));

    let moved = cli.json(&["customer", "set-stage", &id, "active"]);
    assert_eq!(moved["customer"]["stage"], "active");
    let shown = cli.json(&["customer", "show", &id]);
    let history: Vec<String> = shown["stage_history"]
        .as_array()
        .expect("history")
        .iter()
        .map(|h| h["to"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(history, ["trial", "active"]);
    assert_eq!(shown["users"][0]["email"], "Ann@Acme.test");
    assert_eq!(shown["users"][0]["role"], "owner");
    let active = cli.json(&["customer", "list", "--stage", "active"]);
    assert_eq!(active.as_array().map(Vec::len), Some(1));
    let leads = cli.json(&["customer", "list", "--stage", "lead"]);
    assert_eq!(leads.as_array().map(Vec::len), Some(0));
    // Found by the start of its name or its id, any case; a search with nothing to look
    // for is refused naming the flag's field.
    for search in ["acme rob", "ACME", id.as_str()] {
        let found = cli.json(&["customer", "list", "--search", search]);
        assert_eq!(found.as_array().map(Vec::len), Some(1), "{search}");
        assert_eq!(found[0]["id"], id.as_str());
    }
    assert_eq!(cli.json(&["customer", "list", "--search", "acme", "--stage", "lead"]), serde_json::json!([]));
    let out = cli.run(&["customer", "list", "--search", " "]);
    assert!(!out.status.success() && text(&out.stderr).contains("search"), "{}", text(&out.stderr));
    // A customer stored without search keys (before migration 0049, a name beyond ASCII):
    // the binary fills them when it opens the database, so the next search finds it.
    let db = j1msky_db::Db::connect(&cli.url).await.expect("db");
    sqlx::query("UPDATE customers SET name = 'Åcme Robotics', search_name = NULL, search_email = NULL")
        .execute(db.pool())
        .await
        .expect("keys cleared");
    db.close().await;
    let found = cli.json(&["customer", "list", "--search", "ACME ROB"]);
    assert_eq!(found.as_array().map(Vec::len), Some(1), "{found}");
    assert_eq!(found[0]["name"], "Åcme Robotics");

    // Users: a member with a password from stdin; duplicate emails refused case-insensitively.
    let member = cli.run_with_stdin(
        &[
            "--json",
            "user",
            "add",
            "--email",
            "bob@acme.test",
            "--role",
            "member",
            "--customer",
            &id,
            "--password-stdin",
        ],
        "bob's long password\n",
    );
    assert!(member.status.success(), "{}", text(&member.stderr));
    let member: Value = serde_json::from_slice(&member.stdout).expect("json");
    assert_eq!(member["password"], Value::Null, "a password given on stdin is not echoed");
    let dup = cli.run_with_stdin(
        &["user", "add", "--email", "BOB@acme.test", "--role", "member", "--customer", &id, "--password-stdin"],
        "another long password\n",
    );
    assert_eq!(dup.status.code(), Some(1));
    assert!(text(&dup.stderr).contains("already"), "{}", text(&dup.stderr));
    let users = cli.json(&["user", "list", "--customer", &id]);
    assert_eq!(users.as_array().map(Vec::len), Some(2));
    let changed = cli.json(&["user", "set-password", "bob@acme.test"]);
    assert!(changed["password"].as_str().is_some_and(|p| p.len() >= 10));

    // Keys: created with the secret shown once, listed by prefix, revoked.
    let key = cli.json(&["key", "create", "--customer", &id, "--name", "ci"]);
    let secret = key["secret"].as_str().expect("secret");
    let prefix = key["key"]["prefix"].as_str().expect("prefix");
    assert!(secret.starts_with(prefix));
    let listed = cli.json(&["key", "list", "--customer", &id]);
    assert_eq!(listed[0]["prefix"], prefix);
    assert!(!listed.to_string().contains(secret), "the list never shows a secret");
    let key_id = key["key"]["id"].as_str().expect("key id");
    let revoked = cli.json(&["key", "revoke", key_id]);
    assert!(revoked["key"]["revoked_at"].is_i64());

    // Bad input: clear message, exit 2, nothing stored.
    let out = cli.run(&["customer", "set-stage", &id, "gold"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("gold") && text(&out.stderr).contains("churned"), "{}", text(&out.stderr));
    let out =
        cli.run(&["customer", "add", "--name", "Too many", "--plan", "starter", "--teams", "code,research,content"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("allows 2"), "{}", text(&out.stderr));
    let out = cli.run(&["customer", "add", "--name", "Bad owner", "--owner-email", "not-an-email"]);
    assert_ne!(out.status.code(), Some(0));
    assert_eq!(cli.json(&["customer", "list"]).as_array().map(Vec::len), Some(1), "failed adds store nothing");
    let out = cli.run(&["customer", "show", "cus_01jzzzzzzzzzzzzzzzzzzzzzzz"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("not found"));

    // Enterprise contracts: limits set, kept when not given, cleared with `plan`.
    let big = cli.json(&["customer", "add", "--name", "Big Co", "--plan", "enterprise", "--stage", "active"]);
    let big = big["customer"]["id"].as_str().expect("id").to_string();
    let set = cli.json(&["customer", "contract", &big, "--tasks-per-month", "5000", "--monthly-price", "450"]);
    assert_eq!(set["customer"]["contract"]["tasks_per_month"], 5000);
    let set = cli.json(&["customer", "contract", &big, "--calls-per-hour", "3000"]);
    assert_eq!(set["customer"]["contract"]["tasks_per_month"], 5000, "kept");
    assert_eq!(set["customer"]["contract"]["calls_per_hour"], 3000);
    let set = cli.json(&["customer", "contract", &big, "--tasks-per-month", "plan"]);
    assert!(set["customer"]["contract"]["tasks_per_month"].is_null());
    let out = cli.run(&["customer", "contract", &big, "--calls-per-hour", "lots"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--calls-per-hour `lots`"), "{}", text(&out.stderr));
    let out = cli.run(&["customer", "contract", &id, "--tasks-per-month", "10"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let shown = cli.json(&["customer", "show", &big]);
    assert_eq!(shown["customer"]["contract"]["calls_per_hour"], 3000, "a failed change stores nothing");
}

/// A running `j1msky serve` child process, stopped with SIGTERM on drop.
struct Server {
    child: Child,
    base: String,
}

impl Server {
    fn start(cli: &Cli) -> Server {
        Server::start_with(cli, &[])
    }

    fn start_with(cli: &Cli, extra: &[&str]) -> Server {
        let mut args = vec!["serve", "--listen", "127.0.0.1:0"];
        args.extend_from_slice(extra);
        let mut child = cli.command(&args).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("spawn server");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
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

#[tokio::test]
async fn the_cli_works_beside_a_running_server_which_stops_cleanly_on_sigterm() {
    let cli = Cli::new().await;
    let server = Server::start(&cli);
    let http = reqwest::Client::new();
    let health = http.get(format!("{}/healthz", server.base)).send().await.expect("healthz");
    assert_eq!(health.status(), 200);

    let made = cli.json(&["customer", "add", "--name", "Live Co", "--plan", "pro", "--stage", "active"]);
    let id = made["customer"]["id"].as_str().expect("id").to_string();
    let key = cli.json(&["key", "create", "--customer", &id, "--name", "live"]);
    let secret = key["secret"].as_str().expect("secret");

    let me = http.get(format!("{}/api/v1/me", server.base)).bearer_auth(secret).send().await.expect("me");
    assert_eq!(me.status(), 200);
    let me: Value = me.json().await.expect("json");
    assert_eq!(me["customer"]["id"], id.as_str());

    // The server trusts a checked key for KEY_CACHE_TTL (1 s): a key revoked from another
    // process stops working within that.
    cli.json(&["key", "revoke", key["key"]["id"].as_str().expect("key id")]);
    let mut status = 0;
    for _ in 0..40 {
        let me = http.get(format!("{}/api/v1/me", server.base)).bearer_auth(secret).send().await.expect("me");
        status = me.status().as_u16();
        if status == 401 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(status, 401, "a key revoked from the CLI stops working");

    // A request in flight when SIGTERM arrives is still answered. `Expect: 100-continue` makes
    // the server say when its handler starts reading the body, so the signal lands while the
    // request is inside the server (not merely queued in the kernel's accept backlog).
    let addr = server.base.trim_start_matches("http://").to_string();
    let mut stream = std::net::TcpStream::connect(&addr).expect("connect");
    let body = "email=x%40y.test&password=wrong-password";
    write!(
        stream,
        "POST /login HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .expect("send the headers");
    stream.flush().expect("flush");
    let mut reader = BufReader::new(stream.try_clone().expect("clone stream"));
    let mut interim = String::new();
    reader.read_line(&mut interim).expect("read the interim response");
    assert!(interim.starts_with("HTTP/1.1 100"), "the server asked for the body: {interim}");
    let mut blank = String::new();
    reader.read_line(&mut blank).expect("read the interim blank line");
    let kill = Command::new("kill").args(["-TERM", &server.child.id().to_string()]).status().expect("kill");
    assert!(kill.success());
    // Give the signal time to land before the body is sent (ordering, not an assertion).
    std::thread::sleep(std::time::Duration::from_millis(300));
    stream.write_all(body.as_bytes()).expect("send the body");
    let mut response = String::new();
    std::io::Read::read_to_string(&mut reader, &mut response).expect("read response");
    assert!(
        response.starts_with("HTTP/1.1 403"),
        "the in-flight form post was answered (no CSRF token: 403): {response}"
    );

    let mut server = server;
    let status = server.child.wait().expect("wait");
    assert!(status.success(), "graceful shutdown exits 0, got {status:?}");
}

/// The month before this one (UTC, the shipped catalogue's zone), as YYYY-MM.
fn last_month() -> String {
    let days =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs() as i64 / 86_400;
    let (y, m, _) = j1msky_core::clock::civil_from_days(days);
    if m == 1 {
        format!("{:04}-12", y - 1)
    } else {
        format!("{y:04}-{:02}", m - 1)
    }
}

/// A browser signed in to the server at `base`.
async fn signed_in(base: &str, email: &str, password: &str) -> reqwest::Client {
    let browser = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let form = browser.get(format!("{base}/login")).send().await.expect("login page").text().await.expect("html");
    let marker = "name=\"csrf_token\" value=\"";
    let start = form.find(marker).expect("csrf field") + marker.len();
    let token = &form[start..start + form[start..].find('"').expect("end")];
    let resp = browser
        .post(format!("{base}/login"))
        .form(&[("csrf_token", token), ("email", email), ("password", password)])
        .send()
        .await
        .expect("login");
    assert_eq!(resp.status(), 303, "login as {email}");
    browser
}

#[tokio::test]
async fn demo_seeds_an_operator_and_customers_and_prints_the_login() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("demo");
    let mut child = Command::new(BIN)
        .args(["demo", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .current_dir(dir.path())
        .env_remove("J1MSKY_DATABASE_URL")
        .env_remove("J1MSKY_CONFIG")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn demo");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let (mut base, mut login, mut password, mut key) = (None, None, None, None);
    let (mut routed, mut review, mut queued, mut past): (usize, bool, usize, usize) = (0, false, 0, 0);
    while base.is_none() || login.is_none() || password.is_none() || key.is_none() {
        let line = lines.next().expect("demo output").expect("read");
        if let Some(rest) = line.strip_prefix("Played ") {
            // "Played 80 days of history: N Stripe events applied, M tasks run on their days."
            past = rest.split(", ").nth(1).and_then(|t| t.split(' ').next()).and_then(|n| n.parse().ok()).unwrap_or(0);
        } else if let Some(rest) = line.strip_prefix("Ran ") {
            routed = rest.split(' ').next().and_then(|n| n.parse().ok()).unwrap_or(0);
        } else if let Some(rest) = line.strip_prefix("Queued ") {
            queued = rest.split(' ').next().and_then(|n| n.parse().ok()).unwrap_or(0);
        } else if line.starts_with("Cost review for the day") {
            review = true;
        } else if let Some(i) = line.find("Bearer jk_") {
            key = line[i + 7..].split('\'').next().map(str::to_string);
        } else if let Some(rest) = line.strip_prefix("j1msky demo is running at ") {
            base = Some(rest.trim().trim_end_matches('/').to_string());
        } else if let Some(rest) = line.trim().strip_prefix("Operator login:") {
            login = Some(rest.trim().to_string());
        } else if let Some(rest) = line.trim().strip_prefix("Password:") {
            password = Some(rest.trim().to_string());
        }
    }
    let (base, login, password) = (base.unwrap_or_default(), login.unwrap_or_default(), password.unwrap_or_default());
    assert!(data.join("j1msky.db").exists(), "the demo keeps its SQLite file under the data dir");
    assert!(routed >= 10, "the demo runs routed calls through the gateway ({routed})");
    assert!(review, "and prints the daily cost review");

    // The printed key works against the simulated provider, routed and metered.
    let answer = reqwest::Client::new()
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(key.unwrap_or_default())
        .header("x-j1msky-category", "writing")
        .json(&serde_json::json!({"model": "auto", "messages": [{"role": "user", "content": "hello"}]}))
        .send()
        .await
        .expect("api call");
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.headers()["x-j1msky-model"], "claude-sonnet");
    let body: Value = answer.json().await.expect("json");
    assert!(body["choices"][0]["message"]["content"].as_str().unwrap_or("").starts_with("[simulated]"));

    let browser = signed_in(&base, &login, &password).await;
    let admin = browser.get(format!("{base}/admin/customers")).send().await.expect("admin").text().await.expect("html");
    for name in ["Northwind Software", "Bluebird Content Studio", "Kestrel Ventures"] {
        assert!(admin.contains(name), "{name} missing from /admin/customers");
    }
    // The board shows the demo's history: MRR and last month's tasks are not zero.
    let board = browser.get(format!("{base}/admin")).send().await.expect("board").text().await.expect("html");
    let tile = |html: &str, key: &str| -> i64 {
        let needle = format!("data-kpi=\"{key}\" data-value=\"");
        let at = html.find(&needle).map(|i| i + needle.len());
        at.and_then(|i| html[i..].split('"').next()).and_then(|v| v.parse().ok()).unwrap_or(0)
    };
    assert!(tile(&board, "mrr.ending_cents") > 0, "the board's MRR tile: {board}");
    let last = browser.get(format!("{base}/admin?month={}", last_month())).send().await.expect("last month");
    let last = last.text().await.expect("html");
    assert!(tile(&last, "usage.tasks_completed") > 0, "last month's tasks on the board: {last}");
    // The demo backs itself up hourly, as a deployment does: the hour's backup is listed.
    let mut backups = String::new();
    for _ in 0..100 {
        backups =
            browser.get(format!("{base}/admin/backups")).send().await.expect("backups").text().await.expect("html");
        if backups.contains("<td>done</td>") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(backups.contains("<td>done</td>"), "the demo's first hourly backup: {backups}");
    // Billing runs against the in-process fake Stripe: Northwind's checkout completes and
    // its webhooks reach the server, so its owner sees a paid Pro subscription.
    let owner = signed_in(&base, "owner@northwind.demo", &password).await;
    let mut billing = String::new();
    for _ in 0..100 {
        billing = owner.get(format!("{base}/app/billing")).send().await.expect("billing").text().await.expect("html");
        if billing.contains("99.00 USD") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(billing.contains("99.00 USD") && billing.contains("Downgrade at period end"), "{billing}");

    // The demo's tasks flow through their teams on the server's workers.
    assert!(queued >= 4, "the demo queues tasks ({queued})");
    let url = format!("sqlite://{}", data.join("j1msky.db").display());
    let mut succeeded = 0;
    for _ in 0..100 {
        let out = Command::new(BIN).args(["--json", "--database-url", &url, "task", "list"]).output().expect("tasks");
        assert!(out.status.success(), "{}", text(&out.stderr));
        let tasks: Value = serde_json::from_slice(&out.stdout).expect("json tasks");
        let all = tasks.as_array().expect("list");
        assert_eq!(all.len(), queued + past, "today's tasks and the history's");
        succeeded = all.iter().filter(|t| t["state"] == "succeeded").count();
        if succeeded == queued + past {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(past >= 10, "the demo's history ran tasks on past days ({past})");
    assert_eq!(succeeded, queued + past, "every demo task ran through its team");

    // The demo customers were enrolled on `customer.created` and the sender wrote their
    // mail as .eml files under the data dir (Bluebird's welcome in London's daytime,
    // Harbor's exit survey in Sydney's: one is outside quiet hours at any time of day);
    // /admin shows the messages and the to-dos.
    let mail = data.join("mail");
    let mut emls = Vec::new();
    for _ in 0..200 {
        emls = std::fs::read_dir(&mail)
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "eml"))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        if !emls.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(!emls.is_empty(), "no .eml under {}", mail.display());
    let eml = std::fs::read_to_string(&emls[0]).expect("eml");
    assert!(eml.contains("Message-ID: <") && eml.contains(".demo"), "{eml}");
    // The sender writes the file, then marks the message sent: the page may lag the file.
    let mut messages = String::new();
    for _ in 0..200 {
        messages = browser
            .get(format!("{base}/admin/lifecycle/messages?state=sent"))
            .send()
            .await
            .expect("messages")
            .text()
            .await
            .expect("html");
        if messages.contains("/admin/lifecycle/messages/msg_") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(messages.contains("/admin/lifecycle/messages/msg_"), "{messages}");
    let todos = browser.get(format!("{base}/admin/todos")).send().await.expect("todos").text().await.expect("html");
    for name in ["Northwind Software", "Bluebird Content Studio", "Kestrel Ventures"] {
        assert!(todos.contains(&format!("Onboarding call with {name}")), "{name}'s to-do: {todos}");
    }
    // SIGTERM: the server finishes, writes the last ledger rows and stops.
    let term = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill");
    assert!(term.success());
    let status = child.wait().expect("wait");
    assert!(status.success(), "demo exit: {status:?}");

    // The daily cost review from the command line, on the demo's database.
    let out = Command::new(BIN).args(["--json", "--database-url", &url, "costs"]).output().expect("costs");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let review: Value = serde_json::from_slice(&out.stdout).expect("json review");
    let calls = review["calls"].as_i64().unwrap_or(0) as usize;
    assert!(calls >= routed + 1 + 2 * queued, "routed calls, the API call and every task step: {calls}");
    let models: Vec<&str> =
        review["by_model"].as_array().expect("by model").iter().filter_map(|l| l["key"].as_str()).collect();
    for m in ["kimi-k2.5", "claude-sonnet", "claude-opus"] {
        assert!(models.contains(&m), "{m} in the review: {models:?}");
    }
    assert!(review["by_team"].as_array().expect("by team").iter().any(|l| l["key"] == "code"));
    assert!(review["by_customer"].to_string().contains("Northwind Software"));

    // A live Stripe key in the environment: the demo refuses to start.
    let out = Command::new(BIN)
        .args(["demo", "--seed-only", "--data-dir"])
        .arg(&data)
        .current_dir(dir.path())
        .env_remove("J1MSKY_DATABASE_URL")
        .env_remove("J1MSKY_CONFIG")
        .env("J1MSKY_STRIPE_SECRET_KEY", "sk_live_not_for_demos")
        .output()
        .expect("demo with a live key");
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("live Stripe key"), "{}", text(&out.stderr));

    // A second run keeps the data and gives a fresh password.
    let out = Command::new(BIN)
        .args(["demo", "--seed-only", "--data-dir"])
        .arg(&data)
        .current_dir(dir.path())
        .env_remove("J1MSKY_DATABASE_URL")
        .env_remove("J1MSKY_CONFIG")
        .output()
        .expect("seed again");
    assert!(out.status.success());
    let again = text(&out.stdout);
    assert!(again.contains("operator@demo.local"));
    assert!(!again.contains(&password), "each demo run prints a new password");

    // Every demo customer was made with its owner, in one step: none is left without one.
    let db = j1msky_db::Db::connect(&url).await.expect("open the demo database");
    let (customers,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM customers").fetch_one(db.pool()).await.expect("count");
    assert_eq!(customers, 4, "the four demo customers, not duplicated by the second run");
    let ownerless: Vec<(String,)> = sqlx::query_as(
        "SELECT c.name FROM customers c WHERE NOT EXISTS \
         (SELECT 1 FROM users u WHERE u.customer_id = c.id AND u.role = 'owner')",
    )
    .fetch_all(db.pool())
    .await
    .expect("ownerless customers");
    assert!(ownerless.is_empty(), "demo customers without an owner: {ownerless:?}");
}

#[tokio::test]
async fn the_operator_steers_the_gateway_from_the_command_line() {
    let cli = Cli::new().await;
    let made = cli.json(&["customer", "add", "--name", "Gate Co", "--plan", "starter", "--stage", "active"]);
    let id = made["customer"]["id"].as_str().expect("id").to_string();

    let status = cli.json(&["gateway", "status"]);
    assert_eq!(status["mode"], "normal");
    let scope = format!("customer:{id}");
    let row = status["caps"].as_array().expect("caps").iter().find(|r| r["scope"] == scope.as_str()).cloned();
    assert_eq!(row.as_ref().map(|r| r["cap"].clone()), Some(Value::from(50)), "starter plan: 50 calls/hour");
    assert_eq!(status["budget"]["cap"], "50.00");

    assert_eq!(cli.json(&["gateway", "mode", "cheap-only", "--reason", "month-end squeeze"])["mode"], "cheap_only");
    cli.json(&["gateway", "cap", &scope, "7", "--reason", "trial account"]);
    cli.json(&["gateway", "daily-budget", "12.50", "--reason", "quiet week"]);
    cli.json(&["gateway", "customer-budget", &id, "30", "--reason", "agreed on the call"]);
    let status = cli.json(&["gateway", "status"]);
    assert_eq!(status["mode"], "cheap_only");
    assert!(status["mode_set_by"].as_str().unwrap_or("").starts_with("cli:"));
    let row = status["caps"].as_array().expect("caps").iter().find(|r| r["scope"] == scope.as_str()).cloned();
    assert_eq!(
        row.as_ref().map(|r| (r["cap"].clone(), r["overridden"].clone())),
        Some((Value::from(7), Value::from(true)))
    );
    assert_eq!(status["budget"]["cap"], "12.50");
    let human = cli.run(&["gateway", "status"]);
    assert!(text(&human.stdout).contains("cost mode: cheap_only"), "{}", text(&human.stdout));

    // Bad input: exit 2, the reason named, nothing changed.
    for (args, fragment) in [
        (vec!["gateway", "mode", "turbo", "--reason", "r"], "not a mode"),
        (vec!["gateway", "mode", "normal"], "--reason"),
        (vec!["gateway", "mode", "normal", "--reason", " "], "reason: say why"),
        (vec!["gateway", "cap", "planet:mars", "5", "--reason", "r"], "not a cap scope"),
        (vec!["gateway", "cap", "global", "lots", "--reason", "r"], "not a number"),
        (vec!["gateway", "cap", "global", "-4", "--reason", "r"], "negative"),
        (vec!["gateway", "cap", "budget:daily", "5", "--reason", "r"], "the daily budget is money"),
        (vec!["gateway", "cap", "model:gpt-nine", "5", "--reason", "r"], "no model `gpt-nine`"),
        (vec!["gateway", "cap", "provider:openrouter", "5", "--reason", "r"], "no provider `openrouter`"),
        (vec!["gateway", "cap", "customer:cus_nobody", "5", "--reason", "r"], "no customer `cus_nobody`"),
        (vec!["gateway", "daily-budget", "0", "--reason", "r"], "above zero"),
        (vec!["gateway", "daily-budget", "1.2345678", "--reason", "r"], "1.2345678"),
        (vec!["gateway", "customer-budget", "cus_nobody", "10", "--reason", "r"], "no customer"),
        (vec!["costs", "--day", "2026-02-30"], "YYYY-MM-DD"),
    ] {
        let out = cli.run(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out.stderr));
        assert!(text(&out.stderr).contains(fragment), "{args:?}: {}", text(&out.stderr));
    }
    let status = cli.json(&["gateway", "status"]);
    assert_eq!(status["mode"], "cheap_only");
    assert_eq!(status["budget"]["cap"], "12.50");
    let overridden: Vec<&Value> =
        status["caps"].as_array().expect("caps").iter().filter(|r| r["overridden"] == true).collect();
    assert_eq!(overridden.len(), 1, "only the real scope's cap is stored: {overridden:?}");

    // Back to the catalogue's values.
    cli.json(&["gateway", "cap", &scope, "default", "--reason", "back to normal"]);
    cli.json(&["gateway", "daily-budget", "default", "--reason", "back to normal"]);
    let status = cli.json(&["gateway", "status"]);
    assert_eq!(status["budget"]["cap"], "50.00");
    assert!(status["caps"].as_array().expect("caps").iter().all(|r| r["overridden"] == false));

    // An empty day's review.
    let review = cli.json(&["costs", "--day", "2026-11-01"]);
    assert_eq!(review["calls"], 0);
    assert_eq!(review["total"], "0.00");
}

/// The official Python SDKs (`openai`, `anthropic`) against `j1msky serve
/// --simulated-providers`. The virtualenv is made by `scripts/python-sdk-env`; the test
/// says so and fails when it is missing (scripts/test always makes it).
#[tokio::test]
async fn the_official_python_sdks_work_unchanged() {
    let python = repo_file("target/sdk-venv/bin/python");
    assert!(python.exists(), "missing {}: run scripts/python-sdk-env (scripts/test does)", python.display());
    let cli = Cli::new().await;
    let made = cli.json(&["customer", "add", "--name", "SDK Co", "--plan", "pro", "--stage", "active"]);
    let id = made["customer"]["id"].as_str().expect("id").to_string();
    let key = cli.json(&["key", "create", "--customer", &id, "--name", "sdk"]);
    let secret = key["secret"].as_str().expect("secret").to_string();
    // Room for the SDK calls; the script then runs into the cap on purpose.
    cli.json(&["gateway", "cap", &format!("customer:{id}"), "8", "--reason", "sdk test"]);
    let server = Server::start_with(&cli, &["--simulated-providers"]);
    let out = Command::new(&python)
        .arg(repo_file("crates/j1msky/tests/sdk_check.py"))
        .env("J1MSKY_BASE", &server.base)
        .env("J1MSKY_KEY", &secret)
        .output()
        .expect("python");
    assert!(out.status.success(), "SDK checks failed:\n{}\n{}", text(&out.stdout), text(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).expect("the script prints a JSON report");
    assert_eq!(report["openai_model"], "kimi-k2.5");
    assert_eq!(report["openai_stream_tokens"], 32);
    assert_eq!(report["anthropic_model"], "claude-sonnet");
    assert_eq!(report["anthropic_stream_tokens"], 32);
    assert_eq!(report["rate_limited_status"], 429);
    assert_eq!(report["rate_limited_code"], "rate_limit_exceeded");
    assert_eq!(report["bad_key_status"], 401);
    assert_eq!(report["anthropic_unknown_model_status"], 404);
    assert!(report["models"].as_array().is_some_and(|m| m.iter().any(|x| x == "claude-opus")));
    // Every SDK call is in the ledger, settled.
    let review = cli.json(&["costs"]);
    assert_eq!(review["calls"].as_i64(), Some(8), "four SDK calls and four more up to the cap: {review}");
}

#[tokio::test]
async fn tasks_submitted_from_the_cli_are_run_by_the_server_s_workers() {
    let cli = Cli::new().await;
    let made = cli.json(&["customer", "add", "--name", "Task Co", "--stage", "active", "--plan", "pro"]);
    let customer = made["customer"]["id"].as_str().expect("id").to_string();
    // Bad input exits 2 with the reason, and stores nothing.
    let out = cli.run(&["task", "submit", "--customer", &customer, "--team", "nope", "--prompt", "x"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("unknown team `nope`"));
    let out = cli.run(&[
        "task",
        "submit",
        "--customer",
        &customer,
        "--team",
        "code",
        "--template",
        "bug_fix",
        "--field",
        "oops",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("NAME=VALUE"));

    let submit = [
        "task",
        "submit",
        "--customer",
        &customer,
        "--team",
        "code",
        "--template",
        "bug_fix",
        "--field",
        "repository=billing",
        "--field",
        "symptom=double charge",
        "--idempotency-key",
        "k1",
    ];
    let a = cli.json(&submit);
    let again = cli.json(&submit);
    assert_eq!(a["task"]["id"], again["task"]["id"]);
    assert_eq!(again["replayed"], true);
    let id = a["task"]["id"].as_str().expect("id").to_string();
    let doomed = cli.json(&[
        "task",
        "submit",
        "--customer",
        &customer,
        "--team",
        "content",
        "--prompt",
        "Never mind",
        "--priority",
        "low",
    ]);
    let doomed_id = doomed["task"]["id"].as_str().expect("id").to_string();
    let cancelled = cli.json(&["task", "cancel", &doomed_id]);
    assert_eq!(cancelled["task"]["state"], "cancelled");

    // The server's workers pick the task up and run it through the code team.
    let _server = Server::start_with(&cli, &["--simulated-providers", "--workers", "2"]);
    let mut shown = Value::Null;
    for _ in 0..100 {
        shown = cli.json(&["task", "show", &id]);
        if shown["state"] == "succeeded" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(shown["state"], "succeeded", "{shown}");
    let roles: Vec<&str> =
        shown["steps"].as_array().expect("steps").iter().filter_map(|s| s["role"].as_str()).collect();
    assert_eq!(roles, ["lead", "review"]);
    let listed = cli.json(&["task", "list", "--customer", &customer]);
    let states: Vec<&str> = listed.as_array().expect("list").iter().filter_map(|t| t["state"].as_str()).collect();
    assert_eq!(states.len(), 2);
    assert!(states.contains(&"succeeded") && states.contains(&"cancelled"), "{states:?}");
    let human = cli.run(&["task", "show", &id]);
    assert!(text(&human.stdout).contains("lead on kimi-k2.5"), "{}", text(&human.stdout));
}

#[tokio::test]
async fn a_worker_process_killed_mid_task_loses_nothing_and_charges_nothing_twice() {
    let cli = Cli::new().await;
    // No plan: a pay-per-task customer, so every success writes a charge.
    let made = cli.json(&["customer", "add", "--name", "Walk-in", "--stage", "active", "--payment-on-file"]);
    let customer = made["customer"]["id"].as_str().expect("id").to_string();
    let mut ids = Vec::new();
    for i in 0..3 {
        let t =
            cli.json(&["task", "submit", "--customer", &customer, "--team", "code", "--prompt", &format!("job {i}")]);
        ids.push(t["task"]["id"].as_str().expect("id").to_string());
    }
    let db = j1msky_db::Db::connect(&cli.url).await.expect("db");
    let count = |sql: &'static str| {
        let db = db.clone();
        async move {
            let (n,): (i64,) = sqlx::query_as(sql).fetch_one(db.pool()).await.expect(sql);
            n
        }
    };
    let slow = ["worker", "--simulated-providers", "--sim-latency-ms", "400", "--lease-secs", "2", "--workers", "1"];
    let mut doomed = cli.command(&slow).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("worker");
    for _ in 0..200 {
        if count("SELECT COUNT(*) FROM task_steps").await >= 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // The first step is stored; the second step's model call is in flight: kill -9.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    doomed.kill().expect("kill -9");
    let _ = doomed.wait();
    assert_eq!(count("SELECT COUNT(*) FROM task_steps").await, 1, "killed mid-task");
    assert_eq!(count("SELECT COUNT(*) FROM tasks WHERE state = 'running'").await, 1, "its claim is left behind");

    let fresh = ["worker", "--simulated-providers", "--lease-secs", "2", "--workers", "2"];
    let mut worker = cli.command(&fresh).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("worker");
    for _ in 0..300 {
        if count("SELECT COUNT(*) FROM tasks WHERE state = 'succeeded'").await == 3 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let term = Command::new("kill").args(["-TERM", &worker.id().to_string()]).status().expect("kill");
    assert!(term.success());
    assert!(worker.wait().expect("wait").success(), "the worker stops cleanly on SIGTERM");

    assert_eq!(count("SELECT COUNT(*) FROM tasks WHERE state = 'succeeded'").await, 3, "no task lost");
    assert_eq!(count("SELECT COUNT(*) FROM task_steps").await, 6, "each step stored once");
    assert_eq!(
        count("SELECT COUNT(*) FROM task_steps WHERE step = 0 AND attempt = 1").await,
        3,
        "the killed task's first step was not run again"
    );
    assert_eq!(count("SELECT COUNT(*) FROM tasks WHERE attempts = 2").await, 1, "one task was resumed");
    assert_eq!(count("SELECT COUNT(*) FROM events WHERE kind = 'task.succeeded'").await, 3, "none completed twice");
    assert_eq!(count("SELECT COUNT(*) FROM usage_charges").await, 3, "none charged twice");
    db.close().await;
}

/// The operator's Stripe routine from the command line against a fake Stripe whose
/// webhooks never arrive: sync (twice: the second changes nothing), a checkout link, the
/// customer pays, and `stripe reconcile` finds the missed events and applies them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_syncs_stripe_opens_a_checkout_and_reconciles_missed_webhooks() {
    let cli = Cli::new().await;
    let fake = j1msky_sim::stripe::spawn_stripe(j1msky_sim::stripe::FakeStripeConfig::default()).await.expect("fake");
    let base = fake.base();
    let stripe_json = |args: &[&str], key: &str| {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = cli
            .command(&all)
            .env("J1MSKY_STRIPE_SECRET_KEY", key)
            .env("J1MSKY_STRIPE_API_BASE", &base)
            .output()
            .expect("run");
        (out.status.code(), serde_json::from_slice::<Value>(&out.stdout).unwrap_or(Value::Null), text(&out.stderr))
    };
    let (code, first, err) = stripe_json(&["stripe", "sync"], "sk_test_cli");
    assert_eq!(code, Some(0), "{err}");
    // 4 products, 4 prices, 3 coupons and the Customer Portal's configuration.
    assert_eq!(first["sync"]["created"].as_array().map(Vec::len), Some(12), "{first}");
    let (_, second, _) = stripe_json(&["stripe", "sync"], "sk_test_cli");
    assert_eq!(second["sync"]["created"], serde_json::json!([]));
    assert_eq!(second["sync"]["updated"], serde_json::json!([]));
    let out = cli
        .command(&["stripe", "sync"])
        .env("J1MSKY_STRIPE_SECRET_KEY", "sk_test_cli")
        .env("J1MSKY_STRIPE_API_BASE", &base)
        .output()
        .expect("run");
    assert!(text(&out.stdout).contains("nothing changed"), "{}", text(&out.stdout));

    let (code, _, err) = stripe_json(&["stripe", "sync"], "sk_live_cli");
    assert_eq!(code, Some(2));
    assert!(err.contains("--live"), "{err}");

    let made = cli.json(&["customer", "add", "--name", "Pay Co", "--email", "ap@pay.test", "--stage", "qualified"]);
    let id = made["customer"]["id"].as_str().expect("id").to_string();
    // Offers are the operator's to grant (once per customer), never the checkout's to name.
    let (code, _, err) =
        stripe_json(&["stripe", "checkout", &id, "--plan", "pro", "--offer", "upgrade"], "sk_test_cli");
    assert_eq!(code, Some(2), "{err}");
    let (code, grant, err) = stripe_json(&["stripe", "offer", &id, "--offer", "upgrade"], "sk_test_cli");
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        (grant["grant"]["granted_by"].as_str(), grant["grant"]["subscription_id"].as_str()),
        (Some("cli"), None)
    );
    let (code, _, err) = stripe_json(&["stripe", "offer", &id, "--offer", "upgrade"], "sk_test_cli");
    assert_eq!(code, Some(2));
    assert!(err.contains("once per customer"), "{err}");
    let (code, link, err) = stripe_json(&["stripe", "checkout", &id, "--plan", "pro"], "sk_test_cli");
    assert_eq!(code, Some(0), "{err}");
    let session = link["checkout"]["session_id"].as_str().expect("session");
    let (code, _, err) = stripe_json(&["stripe", "checkout", &id, "--plan", "gold"], "sk_test_cli");
    assert_eq!(code, Some(2));
    assert!(err.contains("unknown plan `gold`"), "{err}");

    let done = reqwest::Client::new()
        .post(format!("{base}/_sim/checkout/{session}/complete"))
        .json(&serde_json::json!({}))
        .send()
        .await
        .expect("complete");
    assert!(done.status().is_success());
    let (code, r, err) = stripe_json(&["stripe", "reconcile"], "sk_test_cli");
    assert_eq!(code, Some(0), "{err}");
    // customer, subscription, discount, checkout; no invoice: a first subscription starts
    // with the free trial.
    assert_eq!(r["reconcile"]["missed"], 4, "{r}");
    let (_, again, _) = stripe_json(&["stripe", "reconcile"], "sk_test_cli");
    assert_eq!(again["reconcile"]["missed"], 0, "a second reconcile finds nothing new");
    let shown = cli.json(&["customer", "show", &id]);
    assert_eq!(shown["customer"]["stage"], "trial");
    assert_eq!(shown["customer"]["plan"], "pro");
    let events = cli.json(&["stripe", "events"]);
    assert_eq!(events[0]["state"], "applied");
    assert_eq!(events[0]["count"], 4);
}

/// `j1msky worker` runs every background role: a task queued is run, and a Stripe event
/// stored (as a webhook delivery would) is applied; SIGTERM stops all of it, exit 0.
#[tokio::test]
async fn a_worker_runs_tasks_and_applies_stored_stripe_events_and_stops_on_sigterm() {
    let cli = Cli::new().await;
    let made = cli.json(&["customer", "add", "--name", "Roles Co", "--stage", "active", "--plan", "pro"]);
    let customer = made["customer"]["id"].as_str().expect("id").to_string();
    let t = cli.json(&["task", "submit", "--customer", &customer, "--team", "code", "--prompt", "fix it"]);
    let task = t["task"]["id"].as_str().expect("id").to_string();
    let db = j1msky_db::Db::connect(&cli.url).await.expect("db");
    let event = serde_json::json!({
        "id": "evt_worker_roles", "type": "product.updated", "created": 1_700_000_000, "livemode": false,
        "data": {"object": {"id": "prod_x", "object": "product"}}
    });
    j1msky_billing::webhook::store(&db, &event, 1).await.expect("store");
    let state = || {
        let db = db.clone();
        async move {
            let (s,): (String,) = sqlx::query_as("SELECT state FROM stripe_events WHERE id = 'evt_worker_roles'")
                .fetch_one(db.pool())
                .await
                .expect("event");
            s
        }
    };
    assert_eq!(state().await, "pending");

    let mut worker = cli
        .command(&["worker", "--simulated-providers", "--workers", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("worker");
    let mut done = (String::new(), String::new());
    for _ in 0..600 {
        let shown = cli.json(&["task", "show", &task]);
        done = (state().await, shown["state"].as_str().unwrap_or_default().to_string());
        if done == ("applied".to_string(), "succeeded".to_string()) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(done, ("applied".to_string(), "succeeded".to_string()), "event applied and task run");
    let term = Command::new("kill").args(["-TERM", &worker.id().to_string()]).status().expect("kill");
    assert!(term.success());
    assert!(worker.wait().expect("wait").success(), "every role stops cleanly on SIGTERM");
    db.close().await;
}

#[tokio::test]
async fn a_bad_role_is_refused_naming_it() {
    let cli = Cli::new().await;
    for (args, named) in [
        (vec!["worker", "--roles", "tasks,bogus"], "bogus"),
        (vec!["serve", "--roles", "web,nope", "--listen", "127.0.0.1:0"], "nope"),
        (vec!["worker", "--roles", "web"], "web"),
    ] {
        let out = cli.run(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out.stderr));
        assert!(text(&out.stderr).contains(&format!("`{named}`")), "{args:?}: {}", text(&out.stderr));
    }
}

/// `serve --roles` without `web` runs its background roles and no HTTP server.
#[tokio::test]
async fn serve_without_the_web_role_runs_tasks_and_no_server() {
    let cli = Cli::new().await;
    let made = cli.json(&["customer", "add", "--name", "Headless Co", "--stage", "active", "--plan", "pro"]);
    let customer = made["customer"]["id"].as_str().expect("id").to_string();
    let t = cli.json(&["task", "submit", "--customer", &customer, "--team", "code", "--prompt", "fix it"]);
    let task = t["task"]["id"].as_str().expect("id").to_string();
    let mut serve = cli
        .command(&["serve", "--roles", "tasks", "--simulated-providers", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("serve");
    let mut first = String::new();
    BufReader::new(serve.stdout.take().expect("stdout")).read_line(&mut first).expect("read");
    assert!(first.contains("without the HTTP server"), "{first}");
    let mut state = String::new();
    for _ in 0..600 {
        state = cli.json(&["task", "show", &task])["state"].as_str().unwrap_or_default().to_string();
        if state == "succeeded" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(state, "succeeded");
    let term = Command::new("kill").args(["-TERM", &serve.id().to_string()]).status().expect("kill");
    assert!(term.success());
    assert!(serve.wait().expect("wait").success(), "stops cleanly on SIGTERM");
}
