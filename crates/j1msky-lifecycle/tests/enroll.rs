// A test stops at the first surprise: unwrap and expect are its assertions.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

//! Enrollment follows the journey's entry and re-entry rules, pins its definition, and
//! is idempotent per entry key.

use std::sync::Arc;

use j1msky_core::catalogue::lifecycle::{Entry, Journey, ReEntry, Step};
use j1msky_core::catalogue::{Catalogue, SHIPPED};
use j1msky_db::testing::TestDb;
use j1msky_lifecycle::{journeys, transport::Recording, Ctx};

const DAY: i64 = 86_400_000_000;

fn ctx(db: &j1msky_db::Db, re_entry: ReEntry) -> Ctx {
    let mut catalogue = Catalogue::from_json_str(SHIPPED).unwrap();
    catalogue.lifecycle.journeys.insert(
        "probe".into(),
        Journey {
            version: 3,
            description: String::new(),
            category: "retention".into(),
            entry: Entry { on: "trigger:probe".into(), re_entry },
            exit_on: vec![],
            steps: vec![Step::Exit { id: "done".into() }],
        },
    );
    Ctx {
        db: db.clone(),
        catalogue: Arc::new(catalogue).into(),
        clock: Arc::new(j1msky_core::clock::ManualClock::new(0)),
        transport: Arc::new(Recording::default()),
        stripe: None,
        base_url: "http://localhost".into(),
        templates_dir: std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/templates"),
    }
}

async fn customer(db: &j1msky_db::Db) -> String {
    let catalogue = Catalogue::from_json_str(SHIPPED).unwrap();
    let input = j1msky_accounts::customers::NewCustomer { name: "Acme".into(), ..Default::default() };
    j1msky_accounts::customers::create(db, &catalogue, &j1msky_audit::Actor::cli(), input, 1).await.unwrap().id
}

async fn end(db: &j1msky_db::Db, id: &str, at: i64) {
    sqlx::query("UPDATE lifecycle_enrollments SET state = 'done', ended_at = $1 WHERE id = $2")
        .bind(at)
        .bind(id)
        .execute(db.pool())
        .await
        .unwrap();
}

#[tokio::test]
async fn enrollment_respects_entry_rules_and_pins_the_version() {
    let t = TestDb::new().await;
    let db = &t.db;
    let cus = customer(db).await;
    let c = ctx(db, ReEntry::AfterDays { days: 7 });
    let mut conn = db.pool().acquire().await.unwrap();
    let first = journeys::enroll(&mut conn, db.backend(), &c, &cus, "probe", "a", 10).await.unwrap().unwrap();
    // Active: a second entry (other key) is refused; the same key is a no-op.
    assert_eq!(journeys::enroll(&mut conn, db.backend(), &c, &cus, "probe", "b", 11).await.unwrap(), None);
    assert_eq!(journeys::enroll(&mut conn, db.backend(), &c, &cus, "probe", "a", 12).await.unwrap(), None);
    end(db, &first, DAY).await;
    // Re-entry only 7 days after the end.
    assert_eq!(journeys::enroll(&mut conn, db.backend(), &c, &cus, "probe", "c", 2 * DAY).await.unwrap(), None);
    let again = journeys::enroll(&mut conn, db.backend(), &c, &cus, "probe", "d", 8 * DAY).await.unwrap();
    assert!(again.is_some());
    let all = journeys::of_customer(db, &cus).await.unwrap();
    assert_eq!(all.len(), 2);
    assert!(all.iter().all(|e| e.version == 3 && e.journey == "probe"));
    assert!(journeys::enroll(&mut conn, db.backend(), &c, &cus, "nope", "x", 1).await.is_err());
}

#[tokio::test]
async fn never_re_entry_means_once_per_customer() {
    let t = TestDb::new().await;
    let db = &t.db;
    let cus = customer(db).await;
    let c = ctx(db, ReEntry::Never);
    let mut conn = db.pool().acquire().await.unwrap();
    let first = journeys::enroll(&mut conn, db.backend(), &c, &cus, "probe", "a", 10).await.unwrap().unwrap();
    end(db, &first, 20).await;
    assert_eq!(journeys::enroll(&mut conn, db.backend(), &c, &cus, "probe", "b", 400 * DAY).await.unwrap(), None);
}
