// A test stops at the first surprise: unwrap and expect are its assertions.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

//! The message queue and the to-do list are idempotent per key, on both engines.

use j1msky_db::testing::TestDb;
use j1msky_lifecycle::delivery::{self, Category, NewMessage};
use j1msky_lifecycle::templates::Rendered;
use j1msky_lifecycle::todos::{self, NewTodo};

async fn customer(db: &j1msky_db::Db) -> String {
    let catalogue = j1msky_core::catalogue::Catalogue::from_json_str(j1msky_core::catalogue::SHIPPED).unwrap();
    let input = j1msky_accounts::customers::NewCustomer { name: "Acme".into(), ..Default::default() };
    j1msky_accounts::customers::create(db, &catalogue, &j1msky_audit::Actor::cli(), input, 1).await.unwrap().id
}

#[tokio::test]
async fn a_message_is_queued_once_per_source_step_and_occurrence() {
    let t = TestDb::new().await;
    let db = &t.db;
    let cus = customer(db).await;
    let rendered = Rendered { subject: "Hi".into(), text: "t".into(), html: "<p>h</p>".into() };
    let msg = |occurrence| NewMessage {
        customer_id: &cus,
        source: "enr_1",
        step: "welcome",
        occurrence,
        category: Category::Onboarding,
        template: "welcome",
        rendered: &rendered,
        not_before: 10,
        stale_at: None,
    };
    let mut conn = db.pool().acquire().await.unwrap();
    let first = delivery::enqueue(&mut conn, db.backend(), &msg(0), 5).await.unwrap();
    let again = delivery::enqueue(&mut conn, db.backend(), &msg(0), 6).await.unwrap();
    let next = delivery::enqueue(&mut conn, db.backend(), &msg(1), 7).await.unwrap();
    assert!(first.is_some());
    assert_eq!(again, None);
    assert!(next.is_some() && next != first);
    assert_eq!(delivery::message_id("enr_1", "welcome", 0), delivery::message_id("enr_1", "welcome", 0));
    assert_ne!(delivery::message_id("enr_1", "welcome", 0), delivery::message_id("enr_1", "welcome", 1));
}

#[tokio::test]
async fn a_todo_is_opened_once_per_key_and_needs_a_reason() {
    let t = TestDb::new().await;
    let db = &t.db;
    let cus = customer(db).await;
    let mut conn = db.pool().acquire().await.unwrap();
    let todo = NewTodo { customer_id: Some(&cus), reason: "personal outreach", dedupe_key: "k1", due_at: 9 };
    assert!(todos::create(&mut conn, db.backend(), &todo, 1).await.unwrap().is_some());
    assert_eq!(todos::create(&mut conn, db.backend(), &todo, 2).await.unwrap(), None);
    let blank = NewTodo { reason: "  ", dedupe_key: "k2", ..todo };
    assert!(todos::create(&mut conn, db.backend(), &blank, 3).await.is_err());
}
