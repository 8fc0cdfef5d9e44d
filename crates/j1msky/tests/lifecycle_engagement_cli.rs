// A test stops at the first surprise: unwrap and expect are its assertions.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

//! `j1msky lifecycle todos|todo|newsletter|surveys` as an operator uses them, on a real
//! database (SQLite, or PostgreSQL when the run asks for it).

use crate::common;

use common::{text, Cli};
use j1msky_audit::Actor;
use j1msky_core::vocab::UserRole;
use j1msky_db::Db;

#[tokio::test]
async fn the_operator_works_todos_newsletters_and_surveys_from_the_command_line() {
    let cli = Cli::new().await;
    let out = cli.run(&["customer", "add", "--name", "Acme", "--email", "ops@acme.test"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let db = Db::open(&cli.url).await.unwrap();
    let user = j1msky_accounts::users::NewUser {
        email: "op@agency.test".into(),
        display_name: "Op".into(),
        password: "correct horse battery".into(),
        role: UserRole::Operator,
        customer_id: None,
    };
    j1msky_accounts::users::create(&db, &Actor::cli(), user, 1).await.unwrap();
    let cid = j1msky_accounts::customers::list(&db, None, 10).await.unwrap()[0].id.clone();

    // To-dos: open, list, assign, done, then only in --all.
    let bad = cli.run(&["lifecycle", "todo", "open", "--reason", "x", "--due", "tomorrow"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(text(&bad.stderr).contains("is not a date"), "{}", text(&bad.stderr));
    let opened = cli.json(&["lifecycle", "todo", "open", "--reason", "Call Acme", "--customer", &cid]);
    let id = opened[0]["id"].as_str().unwrap().to_string();
    let open = cli.json(&["lifecycle", "todos"]);
    assert_eq!(open.as_array().unwrap().len(), 1);
    assert_eq!(open[0]["customer_name"], "Acme");
    let refused = cli.run(&["lifecycle", "todo", "assign", &id, "--to", "nobody@x.test"]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(text(&refused.stderr).contains("no user nobody@x.test"), "{}", text(&refused.stderr));
    let assigned = cli.json(&["lifecycle", "todo", "assign", &id, "--to", "op@agency.test"]);
    assert_eq!(assigned[0]["assignee_email"], "op@agency.test");
    let done = cli.json(&["lifecycle", "todo", "done", &id]);
    assert!(done[0]["done_at"].is_i64());
    let twice = cli.run(&["lifecycle", "todo", "done", &id]);
    assert!(text(&twice.stderr).contains("already done"), "{}", text(&twice.stderr));
    assert_eq!(cli.json(&["lifecycle", "todos"]).as_array().unwrap().len(), 0);
    assert_eq!(cli.json(&["lifecycle", "todos", "--all"]).as_array().unwrap().len(), 1);

    // Newsletter: create from stdin, preview, send needs --yes, once.
    let out = cli.run_with_stdin(
        &["--json", "lifecycle", "newsletter", "create", "--subject", "News", "--body-file", "-"],
        "Hello **all**",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let nid = serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["id"].as_str().unwrap().to_string();
    let preview = cli.json(&["lifecycle", "newsletter", "preview", &nid]);
    assert_eq!(preview["audience"], 1);
    assert!(preview["html"].as_str().unwrap().contains("<strong>all</strong>"), "{preview}");
    // A test send writes one message to the mail dir and queues nothing.
    let mail_dir = tempfile::tempdir().unwrap();
    let dir = mail_dir.path().to_str().unwrap();
    let bad = cli.run(&["lifecycle", "newsletter", "send-test", &nid, "--to", "nobody", "--mail-dir", dir]);
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad.stderr));
    let sent = cli.json(&["lifecycle", "newsletter", "send-test", &nid, "--to", "op@agency.test", "--mail-dir", dir]);
    assert_eq!(sent["to"], "op@agency.test");
    let files: Vec<_> = std::fs::read_dir(mail_dir.path()).unwrap().collect();
    assert_eq!(files.len(), 1);
    assert_eq!(cli.json(&["lifecycle", "messages"]).as_array().unwrap().len(), 0);
    let unconfirmed = cli.run(&["lifecycle", "newsletter", "send", &nid]);
    assert_eq!(unconfirmed.status.code(), Some(2));
    assert!(text(&unconfirmed.stderr).contains("--yes"));
    assert_eq!(cli.json(&["lifecycle", "newsletter", "send", &nid, "--yes"])["state"], "sending");
    assert_eq!(cli.run(&["lifecycle", "newsletter", "send", &nid, "--yes"]).status.code(), Some(2));
    let list = cli.json(&["lifecycle", "newsletter", "list"]);
    assert_eq!(list[0]["state"], "sending");

    // Surveys: none answered yet; an unknown testimonial cannot be approved.
    assert_eq!(cli.json(&["lifecycle", "surveys", "--customer", &cid]).as_array().unwrap().len(), 0);
    assert_eq!(cli.run(&["lifecycle", "surveys", "--approve", "srv_nope"]).status.code(), Some(2));
}

#[tokio::test]
async fn an_unknown_message_is_requeued_from_the_command_line_only_with_yes() {
    let cli = Cli::new().await;
    let out = cli.run(&["customer", "add", "--name", "Acme", "--email", "ops@acme.test"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let db = Db::open(&cli.url).await.unwrap();
    let cid = j1msky_accounts::customers::list(&db, None, 10).await.unwrap()[0].id.clone();
    let rendered =
        j1msky_lifecycle::templates::Rendered { subject: "Hi".into(), text: "t".into(), html: "<p>h</p>".into() };
    let msg = j1msky_lifecycle::delivery::NewMessage {
        customer_id: &cid,
        source: "enr_cli",
        step: "welcome",
        occurrence: 0,
        category: j1msky_lifecycle::delivery::Category::Onboarding,
        template: "welcome",
        rendered: &rendered,
        not_before: 0,
        stale_at: None,
    };
    let mut conn = db.pool().acquire().await.unwrap();
    let id = j1msky_lifecycle::delivery::enqueue(&mut conn, db.backend(), &msg, 0).await.unwrap().unwrap();
    drop(conn);
    let requeue = ["lifecycle", "messages", "requeue", id.as_str()];
    let queued = cli.run(&[&requeue[..], &["--yes"]].concat());
    assert!(!queued.status.success(), "a queued message is not requeued");
    assert!(text(&queued.stderr).contains("only unknown or failed"), "{}", text(&queued.stderr));
    sqlx::query("UPDATE lifecycle_messages SET state = 'unknown' WHERE id = $1")
        .bind(&id)
        .execute(db.pool())
        .await
        .unwrap();
    assert_eq!(cli.json(&["lifecycle", "messages", "--state", "unknown"]).as_array().unwrap().len(), 1);

    let unconfirmed = cli.run(&requeue);
    assert_eq!(unconfirmed.status.code(), Some(2));
    assert!(text(&unconfirmed.stderr).contains("may deliver it twice"), "{}", text(&unconfirmed.stderr));
    let done = cli.json(&[&requeue[..], &["--yes"]].concat());
    assert_eq!(done["state"], "queued");
    let audit = j1msky_audit::audit::list(&db, Some(&cid), 20).await.unwrap();
    assert!(audit.iter().any(|a| a.action == "lifecycle.message_requeue" && a.actor == "cli"));
}
