// A test stops at the first surprise: unwrap and expect are its assertions.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

//! Staff to-dos, surveys and the newsletter, on both engines: each action is audited and
//! evented, a survey is answered once, and a newsletter is queued once per recipient
//! however often (and from however many processes) its batches run.

use std::sync::Arc;

use j1msky_accounts::users;
use j1msky_audit::Actor;
use j1msky_core::catalogue::{Catalogue, SHIPPED};
use j1msky_core::vocab::UserRole;
use j1msky_db::testing::TestDb;
use j1msky_db::Db;
use j1msky_lifecycle::surveys::{self, Answer, SurveyKind};
use j1msky_lifecycle::todos::{self, Filter};
use j1msky_lifecycle::{newsletter, transport::Recording, Ctx, LifecycleError};
use sqlx::Row;

const DAY: i64 = 86_400_000_000;
const T0: i64 = 1_795_000_000_000_000;

fn ctx(db: &Db, batch: u32) -> Ctx {
    let mut catalogue = Catalogue::from_json_str(SHIPPED).unwrap();
    catalogue.lifecycle.engagement.newsletter_batch = batch;
    Ctx {
        db: db.clone(),
        catalogue: Arc::new(catalogue).into(),
        clock: Arc::new(j1msky_core::clock::ManualClock::new(T0)),
        transport: Arc::new(Recording::default()),
        stripe: None,
        base_url: "http://localhost".into(),
        templates_dir: std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/templates"),
    }
}

async fn customer(db: &Db, name: &str, email: Option<&str>) -> String {
    let catalogue = Catalogue::from_json_str(SHIPPED).unwrap();
    let input = j1msky_accounts::customers::NewCustomer {
        name: name.into(),
        contact_email: email.map(Into::into),
        ..Default::default()
    };
    j1msky_accounts::customers::create(db, &catalogue, &Actor::cli(), input, T0).await.unwrap().id
}

async fn user(db: &Db, email: &str, role: UserRole, customer_id: Option<String>) -> String {
    let input = users::NewUser {
        email: email.into(),
        display_name: "U".into(),
        password: "correct horse battery".into(),
        role,
        customer_id,
    };
    users::create(db, &Actor::cli(), input, T0).await.unwrap().id
}

async fn events(db: &Db, kind: &str) -> Vec<serde_json::Value> {
    sqlx::query("SELECT payload FROM events WHERE kind = $1 ORDER BY id")
        .bind(kind)
        .fetch_all(db.pool())
        .await
        .unwrap()
        .iter()
        .map(|r| serde_json::from_str(&r.try_get::<String, _>(0).unwrap()).unwrap())
        .collect()
}

async fn audit_actions(db: &Db, subject: &str) -> Vec<String> {
    let mut all: Vec<String> = j1msky_audit::audit::list(db, None, 100)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.subject == subject)
        .map(|e| e.action)
        .collect();
    all.sort();
    all
}

#[tokio::test]
async fn a_todo_is_opened_assigned_done_and_reopened_with_audit_events_and_counts() {
    let t = TestDb::new().await;
    let db = &t.db;
    let cus = customer(db, "Acme", Some("ops@acme.test")).await;
    let op = user(db, "op@agency.test", UserRole::Operator, None).await;
    user(db, "owner@acme.test", UserRole::Owner, Some(cus.clone())).await;
    let actor = Actor::user(&op);

    let id = todos::open_manual(db, &actor, Some(&cus), "  call them  ", T0 + DAY, T0).await.unwrap();
    let late = todos::open_manual(db, &actor, None, "overdue one", T0 - 1, T0).await.unwrap();
    assert!(matches!(
        todos::open_manual(db, &actor, Some("cus_nope"), "x", T0, T0).await,
        Err(LifecycleError::Invalid { field, .. }) if field == "customer"
    ));
    assert!(matches!(todos::open_manual(db, &actor, None, " ", T0, T0).await, Err(LifecycleError::Invalid { .. })));
    assert_eq!(todos::counts(db, T0).await.unwrap(), todos::Counts { open: 2, overdue: 1 });
    let overdue = todos::list(db, Filter::Overdue, None, T0, 50).await.unwrap();
    assert_eq!(overdue.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(), vec![late.as_str()]);
    let mine = todos::list(db, Filter::Open, Some(&cus), T0, 50).await.unwrap();
    assert_eq!((mine.len(), mine[0].reason.as_str(), mine[0].customer_name.as_deref()), (1, "call them", Some("Acme")));

    // Assigning: only to an active operator, by email.
    let err = todos::assign(db, &actor, &id, "owner@acme.test", T0).await.unwrap_err();
    assert!(err.to_string().contains("not an active operator"), "{err}");
    let err = todos::assign(db, &actor, &id, "ghost@x.test", T0).await.unwrap_err();
    assert!(err.to_string().contains("no user ghost@x.test"), "{err}");
    let assigned = todos::assign(db, &actor, &id, "OP@agency.test", T0).await.unwrap();
    assert_eq!(assigned.assignee_email.as_deref(), Some("op@agency.test"));

    // Done once (who and when), then reopened.
    let done = todos::done(db, &actor, &id, Some(&op), T0 + 5).await.unwrap();
    assert_eq!((done.done_at, done.done_by_email.as_deref()), (Some(T0 + 5), Some("op@agency.test")));
    assert!(matches!(todos::done(db, &actor, &id, Some(&op), T0 + 6).await, Err(LifecycleError::Conflict(_))));
    assert_eq!(todos::counts(db, T0).await.unwrap(), todos::Counts { open: 1, overdue: 1 });
    assert_eq!(todos::list(db, Filter::Done, None, T0, 50).await.unwrap().len(), 1);
    let again = todos::reopen(db, &actor, &id, T0 + 2 * DAY, T0 + 7).await.unwrap();
    assert_eq!((again.done_at, again.due_at), (None, T0 + 2 * DAY));
    assert!(matches!(todos::reopen(db, &actor, &id, T0, T0).await, Err(LifecycleError::Conflict(_))));
    assert!(matches!(todos::done(db, &actor, "todo_nope", None, T0).await, Err(LifecycleError::NotFound(_))));

    assert_eq!(audit_actions(db, &id).await, vec!["todo.assign", "todo.done", "todo.open", "todo.reopen"]);
    let opened = events(db, "todo.opened").await;
    assert_eq!(opened.len(), 3, "two opened, one reopened: {opened:?}");
    let done_events = events(db, "todo.done").await;
    assert_eq!(done_events.len(), 1);
    assert_eq!(done_events[0]["todo"], id.as_str());
    assert_eq!(done_events[0]["by"], format!("user:{op}").as_str());
}

async fn link(db: &Db, cus: &str, kind: SurveyKind) -> surveys::Link {
    let mut tx = db.begin().await.unwrap();
    let l = surveys::create(&mut tx, cus, kind, T0).await.unwrap();
    tx.commit().await.unwrap();
    l
}

#[tokio::test]
async fn an_nps_link_is_answered_once_and_forged_links_are_not_found() {
    let t = TestDb::new().await;
    let db = &t.db;
    let cus = customer(db, "Acme", None).await;
    let l = link(db, &cus, SurveyKind::Nps).await;
    assert_eq!(l.token.len(), 43);
    let stored: String =
        sqlx::query("SELECT token_digest FROM lifecycle_surveys").fetch_one(db.pool()).await.unwrap().get(0);
    assert_ne!(stored, l.token, "only the digest is stored");

    // Bad input is refused, naming the field, and stores nothing.
    for (score, field) in [(None, "score"), (Some("11"), "score"), (Some("-1"), "score"), (Some("ten"), "score")] {
        let a = Answer { score, ..Default::default() };
        match surveys::answer(db, 30, &l.token, &a, T0).await {
            Err(LifecycleError::Invalid { field: f, .. }) => assert_eq!(f, field),
            other => panic!("{score:?}: {other:?}"),
        }
    }
    let long = "x".repeat(surveys::MAX_TEXT + 1);
    let a = Answer { score: Some("9"), comment: &long, ..Default::default() };
    assert!(matches!(surveys::answer(db, 30, &l.token, &a, T0).await, Err(LifecycleError::Invalid { .. })));
    let mut conn = db.pool().acquire().await.unwrap();
    assert_eq!(surveys::latest_nps(&mut conn, &cus).await.unwrap(), None);

    // A forged token, a token of the wrong shape: not found.
    let forged = format!("{}A", &l.token[..42]);
    let forged = if forged == l.token { format!("{}B", &l.token[..42]) } else { forged };
    assert!(matches!(surveys::by_token(db, &forged).await, Err(LifecycleError::NotFound(_))));
    assert!(matches!(surveys::by_token(db, "../etc").await, Err(LifecycleError::NotFound(_))));

    let a = Answer { score: Some("9"), comment: "fast", testimonial: "They run our support", consent_to_publish: true };
    let answered = surveys::answer(db, 30, &l.token, &a, T0 + 1).await.unwrap();
    assert_eq!((answered.score, answered.comment.as_deref(), answered.publish_consent), (Some(9), Some("fast"), true));
    let second = surveys::answer(db, 30, &l.token, &Answer { score: Some("0"), ..Default::default() }, T0 + 2).await;
    assert!(matches!(&second, Err(LifecycleError::Conflict(m)) if m.contains("already been answered")), "{second:?}");
    assert_eq!(surveys::latest_nps(&mut conn, &cus).await.unwrap(), Some(9));

    let nps = events(db, "survey.nps_answered").await;
    assert_eq!(nps.len(), 1);
    assert_eq!((nps[0]["score"].as_u64(), nps[0]["survey"].as_str()), (Some(9), Some(l.survey_id.as_str())));
    let given = events(db, "survey.testimonial_given").await;
    assert_eq!(given.len(), 1);
    assert_eq!(given[0]["consent_to_publish"], true);

    // An expired link is refused.
    let old = link(db, &cus, SurveyKind::Nps).await;
    let late =
        surveys::answer(db, 30, &old.token, &Answer { score: Some("5"), ..Default::default() }, T0 + 31 * DAY).await;
    assert!(matches!(&late, Err(LifecycleError::Conflict(m)) if m.contains("expired")), "{late:?}");
}

#[tokio::test]
async fn a_testimonial_is_approved_only_with_consent_and_once() {
    let t = TestDb::new().await;
    let db = &t.db;
    let cus = customer(db, "Acme", None).await;
    let actor = Actor::user("usr_op");
    let with = link(db, &cus, SurveyKind::Testimonial).await;
    let without = link(db, &cus, SurveyKind::Testimonial).await;
    let empty = surveys::answer(db, 30, &with.token, &Answer::default(), T0).await;
    assert!(matches!(empty, Err(LifecycleError::Invalid { field, .. }) if field == "testimonial"));
    let a = Answer { testimonial: "Great agents", consent_to_publish: true, ..Default::default() };
    surveys::answer(db, 30, &with.token, &a, T0).await.unwrap();
    let b = Answer { testimonial: "Private praise", consent_to_publish: false, ..Default::default() };
    surveys::answer(db, 30, &without.token, &b, T0).await.unwrap();

    let pending = surveys::pending_testimonials(db, 10).await.unwrap();
    assert_eq!(pending.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(), vec![with.survey_id.as_str()]);
    let refused = surveys::approve_testimonial(db, &actor, &without.survey_id, T0).await.unwrap_err();
    assert!(refused.to_string().contains("did not consent"), "{refused}");
    let ok = surveys::approve_testimonial(db, &actor, &with.survey_id, T0 + 3).await.unwrap();
    assert_eq!((ok.approved_at, ok.approved_by.as_deref()), (Some(T0 + 3), Some("user:usr_op")));
    assert!(matches!(
        surveys::approve_testimonial(db, &actor, &with.survey_id, T0).await,
        Err(LifecycleError::Conflict(_))
    ));
    assert!(surveys::pending_testimonials(db, 10).await.unwrap().is_empty());
    assert_eq!(audit_actions(db, &with.survey_id).await, vec!["testimonial.approve"]);
}

async fn newsletter_messages(db: &Db, id: &str) -> Vec<(String, String, String)> {
    sqlx::query("SELECT customer_id, category, subject FROM lifecycle_messages WHERE source = $1 ORDER BY customer_id")
        .bind(format!("newsletter:{id}"))
        .fetch_all(db.pool())
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

#[tokio::test]
async fn a_newsletter_is_queued_once_per_recipient_in_batches_even_when_run_twice() {
    let t = TestDb::new().await;
    let db = &t.db;
    let ctx = ctx(db, 2);
    let mut with_email = Vec::new();
    for i in 0..5 {
        with_email.push(customer(db, &format!("C{i}"), Some(&format!("c{i}@x.test"))).await);
    }
    customer(db, "No address", None).await;
    with_email.sort();
    let actor = Actor::user("usr_op");

    for (subject, body, field) in [("", "b", "subject"), ("s", " ", "body"), ("a\r\nBcc: x", "b", "subject")] {
        match newsletter::create(db, &actor, subject, body, T0).await {
            Err(LifecycleError::Invalid { field: f, .. }) => assert_eq!(f, field),
            other => panic!("{subject:?}: {other:?}"),
        }
    }
    let n = newsletter::create(db, &actor, "June news", "# New\n\nA **case study**.", T0).await.unwrap();
    assert_eq!(newsletter::audience(db).await.unwrap(), 5);
    // The preview is what is queued.
    let preview = newsletter::render(&ctx, &n, T0).await.unwrap();
    assert!(
        preview.html.contains("<strong>case study</strong>") && preview.text.contains("Office hours:"),
        "{preview:?}"
    );

    // Not sent yet: a batch queues nothing.
    assert_eq!(newsletter::queue_batch(&ctx, &n.id, T0, None).await.unwrap().queued, 0);
    newsletter::send(db, &actor, &n.id, T0).await.unwrap();
    assert!(matches!(newsletter::send(db, &actor, &n.id, T0).await, Err(LifecycleError::Conflict(_))));

    // The timer chain queues every batch; running it again (and a stray batch) adds nothing.
    let handlers = j1msky_lifecycle::timer_handlers(&ctx);
    j1msky_db::timers::run_due_once(db, &handlers, T0).await.unwrap();
    j1msky_db::timers::run_due_once(db, &handlers, T0 + 1).await.unwrap();
    let stray = newsletter::queue_batch(&ctx, &n.id, T0 + 2, None).await.unwrap();
    assert_eq!(stray, newsletter::Batch { queued: 0, finished: true });

    let msgs = newsletter_messages(db, &n.id).await;
    assert_eq!(msgs.iter().map(|m| m.0.clone()).collect::<Vec<_>>(), with_email);
    assert!(msgs.iter().all(|m| m.1 == "marketing" && m.2 == "June news"));
    let done = newsletter::get(db, &n.id).await.unwrap();
    assert_eq!((done.state.as_str(), done.queued, done.sent), ("queued", 5, 0));
    let stored: String =
        sqlx::query("SELECT body_html FROM lifecycle_messages LIMIT 1").fetch_one(db.pool()).await.unwrap().get(0);
    assert_eq!(stored, preview.html);
}

#[tokio::test]
async fn two_processes_sending_one_newsletter_queue_each_recipient_once() {
    let t = TestDb::new().await;
    let db = &t.db;
    for i in 0..12 {
        customer(db, &format!("C{i}"), Some(&format!("c{i}@x.test"))).await;
    }
    let n = newsletter::create(db, &Actor::cli(), "Two", "body", T0).await.unwrap();
    newsletter::send(db, &Actor::cli(), &n.id, T0).await.unwrap();
    // Two "processes": separate pools on the same database, racing batches and timers.
    let other = Db::connect(&t.url).await.unwrap();
    let (a, b) = (ctx(db, 3), ctx(&other, 3));
    let n_id = n.id.clone();
    let id = n_id.as_str();
    let run = |c: Ctx| async move {
        let h = j1msky_lifecycle::timer_handlers(&c);
        for round in 0..6 {
            let _ = newsletter::queue_batch(&c, id, T0 + round, None).await;
            j1msky_db::timers::run_due_once(&c.db, &h, T0 + round).await.unwrap();
        }
    };
    tokio::join!(run(a), run(b));
    let msgs = newsletter_messages(db, &n_id).await;
    assert_eq!(msgs.len(), 12, "{msgs:?}");
    assert_eq!(newsletter::get(db, &n_id).await.unwrap().state, "queued");
}

/// The newsletter is rendered from the operator-editable `newsletter` template (strict:
/// a misspelt variable is an error naming the file, and nothing is queued), with the
/// next office-hours slot and the case studies approved since the previous newsletter
/// was sent; a test send goes to one address and queues nothing.
#[tokio::test]
async fn the_newsletter_comes_from_its_template_with_office_hours_and_new_case_studies() {
    let t = TestDb::new().await;
    let db = &t.db;
    let dir = tempfile::tempdir().unwrap();
    let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/templates");
    for part in ["subject", "txt", "html"] {
        let f = format!("newsletter.{part}.j2");
        std::fs::copy(shipped.join(&f), dir.path().join(&f)).unwrap();
    }
    let rec = Arc::new(Recording::default());
    let ctx = Ctx { templates_dir: dir.path().to_path_buf(), transport: rec.clone(), ..ctx(db, 10) };
    let actor = Actor::user("usr_op");
    let acme = customer(db, "Acme", Some("a@x.test")).await;
    let globex = customer(db, "Globex", Some("g@x.test")).await;
    let approved = |cus: String, text: &'static str, at: i64| {
        let actor = actor.clone();
        async move {
            let l = link(db, &cus, SurveyKind::Testimonial).await;
            let a = Answer { testimonial: text, consent_to_publish: true, ..Default::default() };
            surveys::answer(db, 30, &l.token, &a, at).await.unwrap();
            surveys::approve_testimonial(db, &actor, &l.survey_id, at).await.unwrap();
        }
    };
    approved(acme.clone(), "Our weekly brief takes an hour now", T0 + 1).await;

    let first = newsletter::create(db, &actor, "May news", "Hello **all**", T0).await.unwrap();
    let r = newsletter::render(&ctx, &first, T0 + 10).await.unwrap();
    assert_eq!(r.subject, "May news");
    assert!(r.html.contains("Hello <strong>all</strong>"), "{}", r.html);
    assert!(r.text.contains("Our weekly brief takes an hour now") && r.text.contains("— Acme"), "{}", r.text);
    assert!(r.html.contains("<blockquote><p>Our weekly brief takes an hour now</p><p>— Acme</p></blockquote>"));
    assert!(r.text.contains("Office hours: Thursday") && r.text.contains("meet.example.com"), "{}", r.text);

    // A test send: one message to the given address, nothing queued.
    let id = newsletter::send_test(&ctx, &first.id, "op@agency.test").await.unwrap();
    let sent = rec.sent();
    assert_eq!((sent.len(), sent[0].to.as_str(), sent[0].message_id.as_str()), (1, "op@agency.test", id.as_str()));
    assert!(String::from_utf8_lossy(&sent[0].raw).contains("[test] May news"));
    assert!(matches!(
        newsletter::send_test(&ctx, &first.id, "not an address").await,
        Err(LifecycleError::Invalid { .. })
    ));
    let queued: i64 = sqlx::query("SELECT COUNT(*) FROM lifecycle_messages").fetch_one(db.pool()).await.unwrap().get(0);
    assert_eq!(queued, 0);

    // Sent at T0 + 100: the next newsletter announces only what was approved after that.
    newsletter::send(db, &actor, &first.id, T0 + 100).await.unwrap();
    approved(globex.clone(), "Support answers in minutes", T0 + 200).await;
    let second = newsletter::create(db, &actor, "June news", "More", T0 + 300).await.unwrap();
    let r = newsletter::render(&ctx, &second, T0 + 400).await.unwrap();
    assert!(r.text.contains("Support answers in minutes"), "{}", r.text);
    assert!(!r.text.contains("Our weekly brief"), "announced last time: {}", r.text);
    // The first one, re-rendered for a later batch, still announces only its own.
    let first = newsletter::get(db, &first.id).await.unwrap();
    let again = newsletter::render(&ctx, &first, T0 + 500).await.unwrap();
    assert!(again.text.contains("Our weekly brief") && !again.text.contains("Support answers"), "{}", again.text);

    // The operator edits the template: the next render shows it.
    std::fs::write(dir.path().join("newsletter.subject.j2"), "[{{ business.name }} news] {{ newsletter.subject }}")
        .unwrap();
    let r = newsletter::render(&ctx, &second, T0 + 400).await.unwrap();
    assert_eq!(r.subject, format!("[{} news] June news", ctx.catalogue.business.name));
    // A misspelt variable is an error naming the file; a batch queues nothing.
    std::fs::write(dir.path().join("newsletter.txt.j2"), "{{ newsletter.bdy }}").unwrap();
    let e = newsletter::render(&ctx, &second, T0 + 400).await.unwrap_err().to_string();
    assert!(e.contains("newsletter.txt.j2") && e.contains("undefined"), "{e}");
    newsletter::send(db, &actor, &second.id, T0 + 600).await.unwrap();
    assert!(newsletter::queue_batch(&ctx, &second.id, T0 + 600, None).await.is_err());
    let queued: i64 = sqlx::query("SELECT COUNT(*) FROM lifecycle_messages").fetch_one(db.pool()).await.unwrap().get(0);
    assert_eq!(queued, 0);
}
