//! From a lead to a trial over HTTP: the public form (validation naming the field, the
//! honeypot, the per-address limit, the confirmation queued), the operator's
//! qualification and trial start, one-time links (set password, reset: expired, reused,
//! unknown, the same answer for unknown addresses, throttled), trial credits refusing
//! the task past them, pilot mode's waiting list, and a member invited by the owner.

// A test stops at the first surprise: unwrap and expect are its assertions.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

use crate::common;

use common::{csrf_token, location, operator, spawn_app_with_mail, TestApp, PASSWORD};
use j1msky_core::vocab::Stage;

const NEW_PASSWORD: &str = "a brand new password";

async fn count(app: &TestApp, sql: &str) -> i64 {
    let (n,): (i64,) = sqlx::query_as(sql).fetch_one(app.db.pool()).await.unwrap();
    n
}

/// Posts the lead form from a fresh browser.
async fn post_form(app: &TestApp, fields: &[(&str, &str)]) -> reqwest::Response {
    let b = app.browser();
    let page = b.get(app.url("/start")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let token = csrf_token(&page.text().await.unwrap());
    let mut form: Vec<(&str, &str)> = vec![("csrf_token", token.as_str())];
    form.extend_from_slice(fields);
    b.post(app.url("/start")).form(&form).send().await.unwrap()
}

fn lead_fields<'a>(company: &'a str, email: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("contact_name", "Rita Lead"),
        ("email", email),
        ("company", company),
        ("use_case", "research"),
        ("use_case_text", "weekly market briefs"),
        ("expected_monthly_tasks", "80"),
        ("website", ""),
    ]
}

/// The newest queued mail of `template`: (recipient, customer, body).
async fn mail(app: &TestApp, template: &str) -> (Option<String>, String, String) {
    sqlx::query_as(
        "SELECT recipient, customer_id, body_text FROM lifecycle_messages WHERE template = $1
         ORDER BY created_at DESC, id DESC LIMIT 1",
    )
    .bind(template)
    .fetch_one(app.db.pool())
    .await
    .unwrap()
}

/// The token of the first link to `prefix` in a mail body.
fn link_token(body: &str, prefix: &str) -> String {
    let at = body.find(prefix).unwrap_or_else(|| panic!("no {prefix} link in {body}")) + prefix.len();
    body[at..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_').collect()
}

async fn lead_id(app: &TestApp, company: &str) -> String {
    let (id,): (String,) = sqlx::query_as("SELECT customer_id FROM ops_leads WHERE company = $1")
        .bind(company)
        .fetch_one(app.db.pool())
        .await
        .unwrap();
    id
}

async fn admin_post(
    app: &TestApp,
    b: &reqwest::Client,
    page: &str,
    action: &str,
    f: &[(&str, &str)],
) -> reqwest::Response {
    let token = app.page_token(b, page).await;
    let mut form = vec![("csrf_token", token.as_str())];
    form.extend_from_slice(f);
    b.post(app.url(action)).form(&form).send().await.unwrap()
}

/// A lead from the form, qualified and started by the operator with `tasks` included.
async fn trial_for(app: &TestApp, b: &reqwest::Client, company: &str, email: &str, tasks: &str) -> reqwest::Response {
    assert_eq!(post_form(app, &lead_fields(company, email)).await.status(), 303);
    let id = lead_id(app, company).await;
    let page = format!("/admin/leads/{id}");
    let r = admin_post(app, b, &page, &format!("{page}/qualify"), &[("notes", "good fit"), ("plan", "starter")]).await;
    assert_eq!(r.status(), 303, "qualify");
    admin_post(app, b, &page, &format!("{page}/trial"), &[("plan", "starter"), ("days", "14"), ("tasks", tasks)]).await
}

#[tokio::test]
async fn the_form_names_the_bad_field_ignores_the_honeypot_confirms_by_mail_and_limits_each_address() {
    let app = spawn_app_with_mail().await;
    let mut bad = lead_fields("Bad Co", "not-an-email");
    let r = post_form(&app, &bad).await;
    assert_eq!(r.status(), 422);
    assert!(r.text().await.unwrap().contains("email: is not an email address"));
    // A name and an address in one would be mailed to the address inside it, while the
    // one-mail-a-day limit and the suppression list counted the whole string.
    bad[1] = ("email", "x1<victim@corp.test>");
    let r = post_form(&app, &bad).await;
    assert_eq!(r.status(), 422);
    assert!(r.text().await.unwrap().contains("email: is not an email address"));
    assert_eq!(count(&app, "SELECT COUNT(*) FROM ops_leads").await, 0);
    bad[1] = ("email", "ok@bad.test");
    bad[5] = ("expected_monthly_tasks", "lots");
    let r = post_form(&app, &bad).await;
    assert_eq!(r.status(), 422);
    let body = r.text().await.unwrap();
    assert!(body.contains("expected_monthly_tasks: a whole number"), "{body}");
    assert!(body.contains("value=\"Bad Co\""), "the form keeps what was typed");

    let mut bot = lead_fields("Bot Co", "bot@bot.test");
    bot[6] = ("website", "http://spam.test");
    let r = post_form(&app, &bot).await;
    assert_eq!((r.status().as_u16(), location(&r)), (303, "/start/thanks".to_string()), "a bot sees success");
    assert_eq!(count(&app, "SELECT COUNT(*) FROM ops_leads").await, 0);
    assert_eq!(count(&app, "SELECT COUNT(*) FROM customers").await, 0, "the honeypot stores nothing");

    let r = post_form(&app, &lead_fields("Rita Research", "rita@research.test")).await;
    assert_eq!((r.status().as_u16(), location(&r)), (303, "/start/thanks".to_string()));
    let id = lead_id(&app, "Rita Research").await;
    let customer = j1msky_accounts::customers::get(&app.db, &id).await.unwrap();
    assert_eq!((customer.stage, customer.contact_email.as_deref()), (Stage::Lead, Some("rita@research.test")));
    let lead = j1msky_ops::leads::get(&j1msky_ops_ctx(&app), &id).await.unwrap();
    assert_eq!(lead.suggested_plan.as_deref(), Some("starter"), "80 tasks fit the starter allowance of 100");
    let (to, cid, body) = mail(&app, "lead_confirmation").await;
    assert_eq!((to, cid), (None, id.clone()), "to the lead's contact address");
    assert!(body.contains("Rita Lead") && body.contains("80 tasks"), "{body}");

    // Three forms an hour from one address: the fourth is refused, nothing stored.
    for n in 2..=3 {
        let email = format!("p{n}@research.test");
        assert_eq!(post_form(&app, &lead_fields(&format!("Co {n}"), &email)).await.status(), 303);
    }
    let r = post_form(&app, &lead_fields("Co 4", "p4@research.test")).await;
    assert_eq!(r.status(), 429);
    assert!(r.text().await.unwrap().contains("too many requests from this address"));
    assert_eq!(count(&app, "SELECT COUNT(*) FROM ops_leads").await, 3);
}

fn j1msky_ops_ctx(app: &TestApp) -> j1msky_ops::Ctx {
    j1msky_ops::Ctx {
        db: app.db.clone(),
        catalogue: app.catalogue.clone().into(),
        clock: std::sync::Arc::new(app.clock.clone()),
    }
}

#[tokio::test]
async fn a_trial_invites_the_owner_by_a_one_time_link_and_its_credits_refuse_the_task_past_them() {
    let app = spawn_app_with_mail().await;
    let op = operator(&app).await;
    let r = trial_for(&app, &op, "Tara Trial", "tara@trial.test", "2").await;
    assert_eq!(r.status(), 303, "start trial");
    let id = lead_id(&app, "Tara Trial").await;
    let stages: Vec<Stage> =
        j1msky_accounts::customers::stage_history(&app.db, &id).await.unwrap().iter().map(|h| h.to).collect();
    assert_eq!(stages, [Stage::Lead, Stage::Qualified, Stage::Trial]);
    let (to, _, body) = mail(&app, "trial_invite").await;
    assert_eq!(to.as_deref(), Some("tara@trial.test"));
    assert!(!body.to_lowercase().contains("password:"), "no password in the mail");
    let token = link_token(&body, "/set-password/");

    // The owner cannot sign in before setting a password, then sets it once.
    let b = app.browser();
    assert_ne!(app.login(&b, "tara@trial.test", PASSWORD).await.status(), 303);
    let page = b.get(app.url(&format!("/set-password/{token}"))).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let csrf = csrf_token(&page.text().await.unwrap());
    let form = [("csrf_token", csrf.as_str()), ("password", NEW_PASSWORD), ("confirm", "something else entirely")];
    let r = b.post(app.url(&format!("/set-password/{token}"))).form(&form).send().await.unwrap();
    assert_eq!(r.status(), 422, "the two passwords differ");
    let form = [("csrf_token", csrf.as_str()), ("password", NEW_PASSWORD), ("confirm", NEW_PASSWORD)];
    let r = b.post(app.url(&format!("/set-password/{token}"))).form(&form).send().await.unwrap();
    assert_eq!(r.status(), 303);
    let r = b.post(app.url(&format!("/set-password/{token}"))).form(&form).send().await.unwrap();
    assert_eq!(r.status(), 410, "a link works once");
    assert!(r.text().await.unwrap().contains("already used"));
    assert_eq!(app.login(&app.browser(), "tara@trial.test", NEW_PASSWORD).await.status(), 303);

    // Two tasks included: the third is refused, saying why.
    let task = j1msky_tasks::NewTask { team: "research".into(), prompt: Some("brief".into()), ..Default::default() };
    for _ in 0..2 {
        j1msky_tasks::submit(&app.db, &app.catalogue, &id, &task, None, app.now()).await.unwrap();
    }
    let e = j1msky_tasks::submit(&app.db, &app.catalogue, &id, &task, None, app.now()).await.unwrap_err();
    assert!(matches!(&e, j1msky_tasks::TaskError::LimitReached { limit: "trial_tasks", .. }), "{e:?}");
    assert!(e.to_string().contains("the trial includes 2 tasks and 2 have been used"), "{e}");
    // And nothing after the trial's end date.
    app.clock.advance_secs(15 * 86_400);
    let e = j1msky_tasks::submit(&app.db, &app.catalogue, &id, &task, None, app.now()).await.unwrap_err();
    assert!(e.to_string().contains("the trial has ended"), "{e}");
}

#[tokio::test]
async fn reset_links_answer_alike_for_unknown_addresses_expire_work_once_and_are_throttled() {
    let app = spawn_app_with_mail().await;
    app.customer_with_owner("Reset Co", "owner@reset.test").await;
    let ask = |email: &'static str| {
        let app = &app;
        async move {
            let b = app.browser();
            let page = b.get(app.url("/reset")).send().await.unwrap();
            let token = csrf_token(&page.text().await.unwrap());
            b.post(app.url("/reset")).form(&[("csrf_token", token.as_str()), ("email", email)]).send().await.unwrap()
        }
    };
    let known = ask("owner@reset.test").await;
    let unknown = ask("nobody@reset.test").await;
    assert_eq!((known.status(), unknown.status()), (reqwest::StatusCode::OK, reqwest::StatusCode::OK));
    let (k, u) = (known.text().await.unwrap(), unknown.text().await.unwrap());
    let sent = |s: &str| s[s.find("id=\"reset-sent\"").unwrap()..].split("</p>").next().unwrap().to_string();
    assert_eq!(sent(&k), sent(&u), "the same answer whether the address has an account or not");
    assert_eq!(count(&app, "SELECT COUNT(*) FROM lifecycle_messages WHERE template = 'password_reset'").await, 1);
    let (to, _, body) = mail(&app, "password_reset").await;
    assert_eq!(to.as_deref(), Some("owner@reset.test"));
    let first = link_token(&body, "/reset/");

    // An hour later the link has expired.
    app.clock.advance_secs(3_601);
    let r = app.browser().get(app.url(&format!("/reset/{first}"))).send().await.unwrap();
    assert_eq!(r.status(), 410);
    assert!(r.text().await.unwrap().contains("expired"));
    assert_eq!(app.browser().get(app.url("/reset/not-a-token")).send().await.unwrap().status(), 404);

    assert_eq!(ask("owner@reset.test").await.status(), 200);
    let (_, _, body) = mail(&app, "password_reset").await;
    let second = link_token(&body, "/reset/");
    assert_ne!(first, second);
    // Asked twice: the new password set through one link ends the other.
    assert_eq!(ask("owner@reset.test").await.status(), 200);
    let (_, _, body) = mail(&app, "password_reset").await;
    let third = link_token(&body, "/reset/");
    assert_ne!(second, third);
    // An operator reading the queued mail does not see the link: it would let them set
    // the customer's password.
    let (message,): (String,) = sqlx::query_as(
        "SELECT id FROM lifecycle_messages WHERE template = 'password_reset' ORDER BY created_at DESC, id DESC LIMIT 1",
    )
    .fetch_one(app.db.pool())
    .await
    .unwrap();
    let op = operator(&app).await;
    let page = op.get(app.url(&format!("/admin/lifecycle/messages/{message}"))).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let page = page.text().await.unwrap();
    assert!(!page.contains(&third), "the token is shown: {page}");
    assert!(page.contains("reset&#x2f;[one-time token hidden]"), "{page}");
    let b = app.browser();
    let csrf = csrf_token(&b.get(app.url(&format!("/reset/{second}"))).send().await.unwrap().text().await.unwrap());
    let form = [("csrf_token", csrf.as_str()), ("password", NEW_PASSWORD), ("confirm", NEW_PASSWORD)];
    assert_eq!(b.post(app.url(&format!("/reset/{second}"))).form(&form).send().await.unwrap().status(), 303);
    assert_eq!(b.post(app.url(&format!("/reset/{second}"))).form(&form).send().await.unwrap().status(), 410);
    assert_eq!(app.login(&app.browser(), "owner@reset.test", NEW_PASSWORD).await.status(), 303);
    let r = app.browser().get(app.url(&format!("/reset/{third}"))).send().await.unwrap();
    assert_eq!(r.status(), 410, "the other link was spent by the new password");

    // Five requests per address in 15 minutes (two made since the clock moved): then 429
    // for any address, known or not.
    assert_eq!(ask("nobody@reset.test").await.status(), 200);
    assert_eq!(ask("nobody@reset.test").await.status(), 200);
    assert_eq!(ask("nobody@reset.test").await.status(), 200);
    assert_eq!(ask("owner@reset.test").await.status(), 429);
    assert_eq!(ask("nobody@reset.test").await.status(), 429);
}

#[tokio::test]
async fn pilot_mode_puts_leads_past_its_slots_in_line_and_a_freed_slot_lets_the_next_start() {
    let app = spawn_app_with_mail().await;
    let op = operator(&app).await;
    let r = admin_post(&app, &op, "/admin/leads", "/admin/leads/pilot", &[("slots", "1")]).await;
    assert_eq!(r.status(), 303);
    assert_eq!(trial_for(&app, &op, "First Co", "first@pilot.test", "5").await.status(), 303);
    assert_eq!(trial_for(&app, &op, "Second Co", "second@pilot.test", "5").await.status(), 303);
    let (first, second) = (lead_id(&app, "First Co").await, lead_id(&app, "Second Co").await);
    let stage = |id: String| {
        let db = app.db.clone();
        async move { j1msky_accounts::customers::get(&db, &id).await.unwrap().stage }
    };
    assert_eq!(stage(first.clone()).await, Stage::Trial);
    assert_eq!(stage(second.clone()).await, Stage::Qualified, "the second waits");
    let page = op.get(app.url("/admin/leads")).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("1 of 1 trial slots taken, 1 waiting"), "{page}");
    assert_eq!(count(&app, "SELECT COUNT(*) FROM lifecycle_messages WHERE template = 'trial_invite'").await, 1);
    // No free slot yet: the next in line still waits.
    let r = admin_post(&app, &op, "/admin/leads", "/admin/leads/next", &[]).await;
    assert_eq!(r.status(), 303);
    assert_eq!(stage(second.clone()).await, Stage::Qualified);

    // The first trial converts: its slot is free, the next in line starts.
    j1msky_accounts::customers::set_stage(&app.db, &j1msky_audit::Actor::cli(), &first, Stage::Active, app.now())
        .await
        .unwrap();
    let r = admin_post(&app, &op, "/admin/leads", "/admin/leads/next", &[]).await;
    assert_eq!(r.status(), 303);
    assert_eq!(stage(second.clone()).await, Stage::Trial);
    let (to, _, _) = mail(&app, "trial_invite").await;
    assert_eq!(to.as_deref(), Some("second@pilot.test"));
    let pilot = j1msky_ops::leads::trial::pilot(&j1msky_ops_ctx(&app)).await.unwrap();
    assert!(pilot.waiting.is_empty());
}

#[tokio::test]
async fn the_owner_invites_a_member_who_sets_a_password_and_a_member_cannot_invite() {
    let app = spawn_app_with_mail().await;
    app.customer_with_owner("Team Co", "owner@team.test").await;
    let owner = app.browser();
    assert_eq!(app.login(&owner, "owner@team.test", PASSWORD).await.status(), 303);
    let form = [("display_name", "Max Member"), ("email", "max@team.test")];
    let r = admin_post(&app, &owner, "/app/members", "/app/members", &form).await;
    assert_eq!(r.status(), 303);
    let (to, _, body) = mail(&app, "member_invite").await;
    assert_eq!(to.as_deref(), Some("max@team.test"));
    let token = link_token(&body, "/set-password/");
    let b = app.browser();
    let csrf =
        csrf_token(&b.get(app.url(&format!("/set-password/{token}"))).send().await.unwrap().text().await.unwrap());
    let pw = [("csrf_token", csrf.as_str()), ("password", NEW_PASSWORD), ("confirm", NEW_PASSWORD)];
    assert_eq!(b.post(app.url(&format!("/set-password/{token}"))).form(&pw).send().await.unwrap().status(), 303);
    let member = app.browser();
    assert_eq!(app.login(&member, "max@team.test", NEW_PASSWORD).await.status(), 303);
    let r =
        admin_post(&app, &member, "/app/members", "/app/members", &[("display_name", "X"), ("email", "x@team.test")])
            .await;
    assert_eq!(r.status(), 403, "only the owner invites");
    assert_eq!(count(&app, "SELECT COUNT(*) FROM users WHERE email = 'x@team.test'").await, 0);
}

/// Runs the lifecycle journeys consumer over every event so far.
async fn run_journeys(app: &TestApp) {
    let ctx = j1msky_lifecycle::Ctx {
        db: app.db.clone(),
        catalogue: app.catalogue.clone().into(),
        clock: std::sync::Arc::new(app.clock.clone()),
        transport: std::sync::Arc::new(j1msky_lifecycle::transport::Recording::default()),
        stripe: None,
        base_url: app.base.clone(),
        templates_dir: std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/templates"),
    };
    let all = j1msky_lifecycle::journeys::consumers(&ctx);
    let runner = j1msky_db::consumers::Runner::for_this_process();
    while j1msky_db::consumers::run_once(&app.db, &runner, &all, &app.clock).await.unwrap().handled > 0 {}
}

#[tokio::test]
async fn a_lead_gets_no_onboarding_mail_until_its_trial_starts() {
    let app = spawn_app_with_mail().await;
    assert_eq!(post_form(&app, &lead_fields("Quiet Co", "q@quiet.test")).await.status(), 303);
    let id = lead_id(&app, "Quiet Co").await;
    run_journeys(&app).await;
    let enrolled = format!("SELECT COUNT(*) FROM lifecycle_enrollments WHERE customer_id = '{id}'");
    assert_eq!(count(&app, &enrolled).await, 0, "a lead is not welcomed to an account it does not have");
    let op = operator(&app).await;
    let page = format!("/admin/leads/{id}");
    let r = admin_post(&app, &op, &page, &format!("{page}/trial"), &[("plan", "pro"), ("tasks", "5")]).await;
    assert_eq!(r.status(), 303);
    run_journeys(&app).await;
    let welcome = format!("{enrolled} AND journey = 'welcome'");
    assert_eq!(count(&app, &welcome).await, 1, "the trial starts the onboarding journeys");
}

/// The public form mails a confirmation to whatever address is typed, with the text typed
/// in it: a way to mail anyone from the business's domain. Each address gets one lead
/// (and one mail) a day; another is refused naming the field, nothing stored or sent.
#[tokio::test]
async fn the_form_confirms_each_address_once_a_day_so_it_cannot_mail_anyone_at_will() {
    let app = spawn_app_with_mail().await;
    assert_eq!(post_form(&app, &lead_fields("Rita Research", "rita@research.test")).await.status(), 303);
    // Past the limit per client address: only the recipient's own limit applies.
    app.clock.advance_secs(2 * 3_600);
    let r = post_form(&app, &lead_fields("Claim your prize at evil.test", "RITA@Research.test")).await;
    assert_eq!(r.status(), 422);
    let body = r.text().await.unwrap();
    assert!(body.contains("email: a request for this address came in today"), "{body}");
    let sent = "SELECT COUNT(*) FROM lifecycle_messages WHERE template = 'lead_confirmation'";
    assert_eq!((count(&app, "SELECT COUNT(*) FROM ops_leads").await, count(&app, sent).await), (1, 1));
    // A `+tag` reaches the same mailbox: the same limit.
    app.clock.advance_secs(2 * 3_600);
    let r = post_form(&app, &lead_fields("Tagged", "rita+2@research.test")).await;
    assert_eq!(r.status(), 422);
    assert_eq!(post_form(&app, &lead_fields("Other Co", "other@research.test")).await.status(), 303);
    // A day later the address may ask again.
    app.clock.advance_secs(86_400);
    assert_eq!(post_form(&app, &lead_fields("Rita Again", "rita@research.test")).await.status(), 303);
    assert_eq!((count(&app, "SELECT COUNT(*) FROM ops_leads").await, count(&app, sent).await), (3, 3));
}

/// An owner's invitations are mail to addresses the owner types: a budget a day per
/// customer, so an account cannot be used to mail anyone at will.
#[tokio::test]
async fn an_owner_s_invitations_have_a_daily_budget() {
    let app = spawn_app_with_mail().await;
    app.customer_with_owner("Team Co", "owner@team.test").await;
    let owner = app.browser();
    assert_eq!(app.login(&owner, "owner@team.test", PASSWORD).await.status(), 303);
    let budget = j1msky_ops::leads::INVITES_PER_CUSTOMER.max_failures;
    for i in 0..budget {
        let (name, email) = (format!("Member {i}"), format!("m{i}@team.test"));
        let form = [("display_name", name.as_str()), ("email", email.as_str())];
        assert_eq!(admin_post(&app, &owner, "/app/members", "/app/members", &form).await.status(), 303, "invite {i}");
    }
    let form = [("display_name", "One Too Many"), ("email", "late@team.test")];
    let r = admin_post(&app, &owner, "/app/members", "/app/members", &form).await;
    assert_eq!(r.status(), 429);
    assert_eq!(count(&app, "SELECT COUNT(*) FROM users WHERE email = 'late@team.test'").await, 0);
    let sent = "SELECT COUNT(*) FROM lifecycle_messages WHERE template = 'member_invite'";
    assert_eq!(count(&app, sent).await, budget);
    app.clock.advance_secs(86_400 + 60);
    assert_eq!(admin_post(&app, &owner, "/app/members", "/app/members", &form).await.status(), 303);
}

/// A company whose trial ended can send the form again under another address of the same
/// mailbox (`ann+2@…`); the operator sees the earlier trial on the new lead's page before
/// granting another.
#[tokio::test]
async fn a_lead_s_page_shows_an_earlier_trial_of_the_same_mailbox() {
    let app = spawn_app_with_mail().await;
    let op = operator(&app).await;
    assert_eq!(trial_for(&app, &op, "Acme Research", "ann@acme.test", "5").await.status(), 303);
    let first = lead_id(&app, "Acme Research").await;
    app.clock.advance_secs(2 * 86_400);
    assert_eq!(post_form(&app, &lead_fields("Acme Labs", "Ann+again@Acme.test")).await.status(), 303);
    let again = lead_id(&app, "Acme Labs").await;
    let page = op.get(app.url(&format!("/admin/leads/{again}"))).send().await.unwrap().text().await.unwrap();
    let at = page.find("id=\"earlier-trials\"").unwrap_or_else(|| panic!("no earlier trials shown: {page}"));
    assert!(
        page[at..].contains(&format!("/admin/customers/{first}")) && page[at..].contains("Acme Research"),
        "{page}"
    );
    // Another mailbox at the same company has no such notice.
    app.clock.advance_secs(2 * 3_600);
    assert_eq!(post_form(&app, &lead_fields("Acme Other", "bob@acme.test")).await.status(), 303);
    let other = lead_id(&app, "Acme Other").await;
    let page = op.get(app.url(&format!("/admin/leads/{other}"))).send().await.unwrap().text().await.unwrap();
    assert!(!page.contains("earlier-trials"), "{page}");
}
