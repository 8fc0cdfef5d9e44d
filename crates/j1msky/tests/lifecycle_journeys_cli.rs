// A test stops at the first surprise: unwrap and expect are its assertions.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

//! `j1msky config check` renders every template a journey sends; `j1msky lifecycle
//! journeys|enrollments|preview` read what the admin page reads.

use std::process::Command;

use crate::common;

use common::{repo_file, text, Cli, BIN};

#[test]
fn config_check_names_a_journey_template_that_is_missing_or_broken() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(repo_file("config/business.json"), dir.path().join("business.json")).unwrap();
    let templates = dir.path().join("templates");
    std::fs::create_dir(&templates).unwrap();
    for entry in std::fs::read_dir(repo_file("config/templates")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), templates.join(entry.file_name())).unwrap();
    }
    let check = || {
        Command::new(BIN).args(["--json", "config", "check"]).arg(dir.path().join("business.json")).output().unwrap()
    };
    assert_eq!(check().status.code(), Some(0), "{}", text(&check().stdout));

    std::fs::remove_file(templates.join("welcome.html.j2")).unwrap();
    std::fs::write(templates.join("monthly_report.txt.j2"), "{{ customer.nickname }}").unwrap();
    let out = check();
    assert_eq!(out.status.code(), Some(2));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let paths: Vec<&str> = v["issues"].as_array().unwrap().iter().map(|i| i["path"].as_str().unwrap()).collect();
    assert_eq!(
        paths,
        vec!["lifecycle.journeys.month_one.steps[1].template", "lifecycle.journeys.welcome.steps[0].template"]
    );
    let messages = v["issues"].to_string();
    assert!(messages.contains("welcome.html.j2") && messages.contains("monthly_report.txt.j2"), "{messages}");
}

#[tokio::test]
async fn the_cli_lists_journeys_and_previews_templates() {
    let cli = Cli::new().await;
    let journeys = cli.json(&["lifecycle", "journeys"]);
    let ids: Vec<&str> = journeys.as_array().unwrap().iter().map(|j| j["id"].as_str().unwrap()).collect();
    // Every journey of the shipped catalogue, in id order, the onboarding ones among them.
    let shipped = j1msky_core::catalogue::Catalogue::from_json_str(j1msky_core::catalogue::SHIPPED).unwrap();
    let expected: Vec<&str> = shipped.lifecycle.journeys.keys().map(String::as_str).collect();
    assert_eq!(ids, expected);
    for onboarding in ["welcome", "activation", "checkin", "optimisation", "month_one"] {
        assert!(ids.contains(&onboarding), "{onboarding} missing from {ids:?}");
    }
    assert_eq!(cli.json(&["lifecycle", "enrollments"]), serde_json::json!([]));
    let preview = cli.json(&["lifecycle", "preview", "welcome"]);
    assert!(preview["subject"].as_str().unwrap().contains("Sample Co"));
    assert!(preview["html"].as_str().unwrap().starts_with("<!doctype html>"));
    let out = cli.run(&["lifecycle", "preview", "no_such_template"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("no_such_template.subject.j2"), "{}", text(&out.stderr));
}

#[tokio::test]
async fn send_test_writes_the_mail_through_the_transport_the_flags_name() {
    let cli = Cli::new().await;
    let dir = tempfile::tempdir().unwrap();
    let mail = dir.path().join("mail");
    // No transport named: refused, saying which flags give one.
    let out = cli
        .command(&["lifecycle", "send-test", "welcome", "--to", "me@agency.test"])
        .env_remove("J1MSKY_SMTP_URL")
        .env_remove("J1MSKY_MAIL_DIR")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--mail-dir"), "{}", text(&out.stderr));
    // A bad address or template is named; nothing is written.
    let out =
        cli.run(&["lifecycle", "send-test", "welcome", "--to", "not-an-address", "--mail-dir", mail.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let out =
        cli.run(&["lifecycle", "send-test", "nope", "--to", "me@agency.test", "--mail-dir", mail.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(!mail.exists() || std::fs::read_dir(&mail).unwrap().next().is_none());

    let sent = cli.json(&[
        "lifecycle",
        "send-test",
        "welcome",
        "--to",
        "me@agency.test",
        "--mail-dir",
        mail.to_str().unwrap(),
    ]);
    let id = sent["message_id"].as_str().unwrap();
    let file = mail.join(j1msky_lifecycle::transport::Files::file_name(id));
    let eml = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    assert!(eml.contains("To: me@agency.test"), "{eml}");
    assert!(eml.contains(&format!("Message-ID: <{id}>")), "{eml}");
    assert!(eml.contains("Subject: [test]"), "{eml}");
    assert!(eml.contains("text/plain") && eml.contains("text/html"), "{eml}");
    assert_eq!(std::fs::read_dir(&mail).unwrap().count(), 1, "one message, nothing else");
}
