// A test stops at the first surprise: unwrap and expect are its assertions.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

//! Real SMTP on loopback: `aiosmtpd` (installed by `scripts/smtp-env`, found through
//! `J1MSKY_SMTP_PYTHON`) writes a Maildir; the sender delivers through the `lettre` pool.
//! Every message arrives once with its Message-ID, unsubscribe headers, footer and both
//! parts; a 550 at RCPT fails the message and suppresses the address.

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::common;
use common::*;

use j1msky_audit::Actor;
use j1msky_core::catalogue::Catalogue;
use j1msky_core::clock::ManualClock;
use j1msky_db::testing::TestDb;
use j1msky_db::Db;
use j1msky_lifecycle::delivery::{self, Category, NewMessage};
use j1msky_lifecycle::templates::Rendered;
use j1msky_lifecycle::transport::Smtp;
use j1msky_lifecycle::Ctx;

async fn customer(db: &Db, email: &str) -> String {
    let catalogue = Catalogue::from_json_str(j1msky_core::catalogue::SHIPPED).unwrap();
    let input = j1msky_accounts::customers::NewCustomer {
        name: "Acme".into(),
        contact_email: Some(email.into()),
        ..Default::default()
    };
    j1msky_accounts::customers::create(db, &catalogue, &Actor::cli(), input, 1).await.unwrap().id
}

async fn queue(db: &Db, cus: &str, step: &str, category: Category, at: i64) {
    let rendered = Rendered {
        subject: format!("Welcome ({step})"),
        text: format!("Plain text of {step}."),
        html: format!("<html><body><p>HTML of {step}.</p></body></html>"),
    };
    let msg = NewMessage {
        customer_id: cus,
        source: "enr_smtp",
        step,
        occurrence: 0,
        category,
        template: "welcome",
        rendered: &rendered,
        not_before: at,
        stale_at: None,
    };
    let mut conn = db.pool().acquire().await.unwrap();
    delivery::enqueue(&mut conn, db.backend(), &msg, at).await.unwrap().unwrap();
}

#[tokio::test]
async fn messages_reach_a_real_smtp_server_once_each_with_headers_parts_and_footer() {
    let Some(python) = smtp_python() else { return };
    let sink = start_sink(&python, 0);
    let t = TestDb::new().await;
    let mut catalogue = Catalogue::from_json_str(j1msky_core::catalogue::SHIPPED).unwrap();
    catalogue.lifecycle.delivery.quiet_hours.end = catalogue.lifecycle.delivery.quiet_hours.start.clone();
    catalogue.lifecycle.delivery.max_per_day = 0;
    catalogue.lifecycle.delivery.max_per_week = 0;
    let address = catalogue.lifecycle.delivery.physical_address.clone();
    let smtp = Smtp::from_url(&format!("smtp://127.0.0.1:{}", sink.port), 4).unwrap();
    let c = Ctx {
        db: t.db.clone(),
        catalogue: Arc::new(catalogue).into(),
        clock: Arc::new(ManualClock::new(0)),
        transport: Arc::new(smtp),
        stripe: None,
        base_url: "https://app.example.test".into(),
        templates_dir: std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/templates"),
    };
    let now = 1_780_000_000_000_000;
    let ann = customer(&t.db, "ann@example.com").await;
    let gone = customer(&t.db, "bounce-me@example.com").await;
    for i in 0..20 {
        queue(&t.db, &ann, &format!("step{i}"), Category::Onboarding, now).await;
    }
    queue(&t.db, &ann, "receipt", Category::Transactional, now).await;
    queue(&t.db, &gone, "lost", Category::Onboarding, now).await;

    let pass = delivery::send_due_once(&c, "smtp-test", now, 100).await.unwrap();
    let errors: Vec<_> =
        delivery::list(&t.db, Some("failed"), None, 5).await.unwrap().into_iter().map(|m| m.last_error).collect();
    assert_eq!((pass.sent, pass.failed), (21, 1), "{pass:?} {errors:?}");
    // Nothing left to send: a second pass sends nothing again.
    assert_eq!(delivery::send_due_once(&c, "smtp-test", now + 1, 100).await.unwrap().claimed, 0);

    let mails = delivered(sink.maildir.path());
    assert_eq!(mails.len(), 21);
    let ids: BTreeSet<_> = mails.iter().map(|m| header(m, "Message-ID").unwrap()).collect();
    assert_eq!(ids.len(), 21, "one copy per Message-ID");
    let expected = format!("<{}>", delivery::message_id("enr_smtp", "step3", 0));
    let m = mails.iter().find(|m| header(m, "Message-ID").as_deref() == Some(expected.as_str())).unwrap();
    assert!(header(m, "List-Unsubscribe").unwrap().starts_with("<https://app.example.test/u/"), "{m}");
    assert!(header(m, "List-Unsubscribe").unwrap().contains("<mailto:"));
    assert_eq!(header(m, "List-Unsubscribe-Post").as_deref(), Some("List-Unsubscribe=One-Click"));
    assert!(header(m, "Content-Type").unwrap().starts_with("multipart/alternative"));
    assert!(m.contains("Plain text of step3.") && m.contains("<p>HTML of step3.</p>"));
    assert_eq!(m.matches(address.as_str()).count(), 2, "footer in the text and the HTML part");
    let receipt = mails.iter().find(|m| m.contains("Plain text of receipt.")).unwrap();
    assert!(header(receipt, "List-Unsubscribe").is_none());

    // The unsubscribe link in the mail is a working token for (ann, onboarding).
    let link = header(m, "List-Unsubscribe").unwrap();
    let token = link.split("/u/").nth(1).unwrap().split('>').next().unwrap();
    assert_eq!(delivery::verify_token(&t.db, token, now).await.unwrap(), Some((ann.clone(), Category::Onboarding)));

    // The 550 at RCPT: failed, and the address is suppressed as a hard bounce.
    let lost = delivery::list(&t.db, Some("failed"), Some(&gone), 10).await.unwrap();
    assert!(lost[0].last_error.as_deref().unwrap().contains("550"), "{lost:?}");
    assert!(delivery::is_suppressed(&t.db, "bounce-me@example.com").await.unwrap());
}
