//! Accounts on a real database (SQLite, or PostgreSQL when the run asks for it).

// A test (or bench) stops at the first surprise: panicking shortcuts, the wall clock
// and untracked tasks are fine here (see [workspace.lints] in Cargo.toml).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

use j1msky_accounts::customers::{self, NewCustomer};
use j1msky_accounts::users::{self, NewUser};
use j1msky_accounts::{api_keys, devices, sessions, throttle, AccountsError};
use j1msky_audit::{audit, Actor};
use j1msky_core::catalogue::{Catalogue, SHIPPED};
use j1msky_core::clock::{DAY, SECOND};
use j1msky_core::vocab::{Stage, UserRole};
use j1msky_db::testing::TestDb;
use sqlx::Row;

const T0: i64 = 1_790_000_000 * SECOND;
const PASSWORD: &str = "a long enough password";

fn catalogue() -> Catalogue {
    Catalogue::from_json_str(SHIPPED).expect("shipped catalogue")
}

async fn customer(t: &TestDb, name: &str) -> String {
    let input =
        NewCustomer { name: name.into(), plan: Some("pro".into()), stage: Some(Stage::Trial), ..Default::default() };
    customers::create(&t.db, &catalogue(), &Actor::cli(), input, T0).await.expect("customer").id
}

async fn owner(t: &TestDb, email: &str, customer_id: &str) -> users::User {
    let new = NewUser {
        email: email.into(),
        display_name: email.into(),
        password: PASSWORD.into(),
        role: UserRole::Owner,
        customer_id: Some(customer_id.into()),
    };
    users::create(&t.db, &Actor::cli(), new, T0).await.expect("owner")
}

#[tokio::test]
async fn emails_are_unique_case_insensitively_and_passwords_are_argon2id() {
    let t = TestDb::new().await;
    let c = customer(&t, "Acme").await;
    let ann = owner(&t, "Ann@Acme.test", &c).await;
    assert_eq!(ann.email, "Ann@Acme.test", "the address is kept as typed");

    let dup = NewUser {
        email: "ann@ACME.test".into(),
        display_name: "x".into(),
        password: PASSWORD.into(),
        role: UserRole::Member,
        customer_id: Some(c.clone()),
    };
    assert!(matches!(users::create(&t.db, &Actor::cli(), dup, T0).await, Err(AccountsError::Conflict(_))));

    let row = sqlx::query("SELECT password_hash FROM users WHERE id = $1")
        .bind(&ann.id)
        .fetch_one(t.db.pool())
        .await
        .expect("row");
    let hash: String = row.try_get(0).expect("hash");
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert!(!hash.contains(PASSWORD));

    // Roles and customers must agree; weak passwords are refused.
    let op_with_customer = NewUser {
        email: "op@x.test".into(),
        display_name: "op".into(),
        password: PASSWORD.into(),
        role: UserRole::Operator,
        customer_id: Some(c.clone()),
    };
    assert!(matches!(
        users::create(&t.db, &Actor::cli(), op_with_customer, T0).await,
        Err(AccountsError::Invalid { field: "customer", .. })
    ));
    let orphan = NewUser {
        email: "m@x.test".into(),
        display_name: "m".into(),
        password: PASSWORD.into(),
        role: UserRole::Member,
        customer_id: None,
    };
    assert!(matches!(
        users::create(&t.db, &Actor::cli(), orphan, T0).await,
        Err(AccountsError::Invalid { field: "customer", .. })
    ));
    let weak = NewUser {
        email: "w@x.test".into(),
        display_name: "w".into(),
        password: "short".into(),
        role: UserRole::Operator,
        customer_id: None,
    };
    assert!(matches!(users::create(&t.db, &Actor::cli(), weak, T0).await, Err(AccountsError::Invalid { .. })));
    assert_eq!(users::list(&t.db, None).await.expect("list").len(), 1, "refused users were not stored");
}

#[tokio::test]
async fn login_records_last_login_and_a_new_password_ends_every_session() {
    let t = TestDb::new().await;
    let c = customer(&t, "Acme").await;
    let ann = owner(&t, "ann@acme.test", &c).await;
    assert!(matches!(
        users::authenticate(&t.db, "ann@acme.test", "wrong password!", "10.0.0.1", None, T0).await,
        Err(AccountsError::BadCredentials)
    ));
    assert_eq!(users::get(&t.db, &ann.id).await.expect("user").last_login_at, None);

    let when = T0 + 60 * SECOND;
    let user =
        users::authenticate(&t.db, " ANN@acme.test ", PASSWORD, "10.0.0.1", None, when).await.expect("login").user;
    assert_eq!(user.id, ann.id);
    assert_eq!(users::get(&t.db, &ann.id).await.expect("user").last_login_at, Some(when));

    let (token, csrf) = sessions::create(&t.db, &ann.id, Some("10.0.0.1"), when).await.expect("session");
    let session = sessions::lookup(&t.db, &token, when).await.expect("lookup").expect("live session");
    assert_eq!(session.csrf_token, csrf);
    let stored = sqlx::query("SELECT COUNT(*) FROM sessions WHERE token_hash = $1")
        .bind(&token)
        .fetch_one(t.db.pool())
        .await
        .expect("count");
    assert_eq!(stored.try_get::<i64, _>(0).expect("n"), 0, "session tokens are stored hashed");

    assert!(
        sessions::lookup(&t.db, &token, when + sessions::SESSION_TTL + 1).await.expect("lookup").is_none(),
        "sessions expire"
    );
    users::set_password(&t.db, &Actor::cli(), &ann.id, "another long password", when).await.expect("set password");
    assert!(
        sessions::lookup(&t.db, &token, when).await.expect("lookup").is_none(),
        "a new password signs out everywhere"
    );
    assert!(users::authenticate(&t.db, "ann@acme.test", PASSWORD, "10.0.0.1", None, when).await.is_err());
    users::authenticate(&t.db, "ann@acme.test", "another long password", "10.0.0.1", None, when)
        .await
        .expect("new password works");
}

#[tokio::test]
async fn an_account_is_locked_after_five_failures_even_for_the_right_password() {
    let t = TestDb::new().await;
    let c = customer(&t, "Acme").await;
    owner(&t, "ann@acme.test", &c).await;
    for i in 0..5 {
        let r =
            users::authenticate(&t.db, "ann@acme.test", "not the password", &format!("10.0.0.{i}"), None, T0 + i).await;
        assert!(matches!(r, Err(AccountsError::BadCredentials)), "attempt {i}: {r:?}");
    }
    let r = users::authenticate(&t.db, "ann@acme.test", PASSWORD, "10.9.9.9", None, T0 + 10).await;
    assert!(matches!(r, Err(AccountsError::Throttled { retry_after_secs }) if retry_after_secs > 0), "{r:?}");
    // Another account is not affected.
    owner(&t, "bob@acme.test", &c).await;
    users::authenticate(&t.db, "bob@acme.test", PASSWORD, "10.9.9.9", None, T0 + 10).await.expect("bob unaffected");
    // The lock ends.
    users::authenticate(&t.db, "ann@acme.test", PASSWORD, "10.9.9.9", None, T0 + 16 * 60 * SECOND)
        .await
        .expect("released");
}

#[tokio::test]
async fn failures_from_elsewhere_cannot_lock_the_owner_out_of_a_browser_it_logged_in_from() {
    let t = TestDb::new().await;
    let c = customer(&t, "Acme").await;
    let ann = owner(&t, "ann@acme.test", &c).await;
    let home = "192.0.2.10";
    let device = users::authenticate(&t.db, "ann@acme.test", PASSWORD, home, None, T0).await.expect("login").device;
    let stored: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM known_devices WHERE user_id = $1 AND token_hash <> $2")
        .bind(&ann.id)
        .bind(&device)
        .fetch_one(t.db.pool())
        .await
        .expect("count");
    assert_eq!(stored, 1, "the browser is known by its token's digest alone");

    // Someone keeps the account locked from addresses of their own.
    let mut at = T0 + SECOND;
    for i in 0..6 {
        let r = users::authenticate(&t.db, "ann@acme.test", "guess", &format!("203.0.113.{i}"), None, at).await;
        assert!(matches!(r, Err(AccountsError::BadCredentials | AccountsError::Throttled { .. })), "{r:?}");
        at += SECOND;
    }
    let r = users::authenticate(&t.db, "ann@acme.test", PASSWORD, "203.0.113.99", None, at).await;
    assert!(matches!(r, Err(AccountsError::Throttled { .. })), "a browser without the token waits: {r:?}");
    // The owner's browser gets in, and keeps its token.
    let login = users::authenticate(&t.db, "ann@acme.test", PASSWORD, home, Some(&device), at).await.expect("owner");
    assert_eq!((login.user.id.as_str(), login.device.as_str()), (ann.id.as_str(), device.as_str()));
    let still = users::authenticate(&t.db, "ann@acme.test", PASSWORD, "203.0.113.99", None, at + SECOND).await;
    assert!(matches!(still, Err(AccountsError::Throttled { .. })), "the account's lock stands: {still:?}");

    // The token is no master key: it still needs the password, has a lock of its own,
    // names one account, and a made-up token is no token.
    for _ in 0..5 {
        let r = users::authenticate(&t.db, "ann@acme.test", "guess", home, Some(&device), at + 2 * SECOND).await;
        assert!(matches!(r, Err(AccountsError::BadCredentials)), "{r:?}");
    }
    let r = users::authenticate(&t.db, "ann@acme.test", PASSWORD, home, Some(&device), at + 3 * SECOND).await;
    assert!(matches!(r, Err(AccountsError::Throttled { .. })), "five failures lock the browser too: {r:?}");
    let gone = devices::recognised(&t.db, &device, "ann@acme.test", at + 3 * SECOND).await.expect("read");
    assert!(gone.is_none(), "and it is forgotten: a stolen token buys five tries once");
    owner(&t, "bob@acme.test", &c).await;
    for _ in 0..5 {
        let r = users::authenticate(&t.db, "bob@acme.test", "guess", home, None, at).await;
        assert!(matches!(r, Err(AccountsError::BadCredentials)), "{r:?}");
    }
    let r = users::authenticate(&t.db, "bob@acme.test", PASSWORD, home, Some(&device), at + SECOND).await;
    assert!(matches!(r, Err(AccountsError::Throttled { .. })), "ann's browser is not bob's: {r:?}");
    let r = users::authenticate(&t.db, "ann@acme.test", PASSWORD, home, Some("made-up"), at + 3 * SECOND).await;
    assert!(matches!(r, Err(AccountsError::Throttled { .. })), "{r:?}");

    // A browser unused for the whole of its life is forgotten.
    let later = at + 3600 * SECOND;
    let device = users::authenticate(&t.db, "ann@acme.test", PASSWORD, home, None, later).await.expect("login").device;
    assert!(devices::recognised(&t.db, &device, "ann@acme.test", later + devices::DEVICE_TTL - 1)
        .await
        .unwrap()
        .is_some());
    assert!(devices::recognised(&t.db, &device, "ann@acme.test", later + devices::DEVICE_TTL).await.unwrap().is_none());
    let r = users::authenticate(&t.db, "ann@acme.test", PASSWORD, home, Some(&device), later + devices::DEVICE_TTL);
    assert_ne!(r.await.expect("login").device, device, "an expired token is replaced");

    // A new password forgets every browser: one that knew the old password keeps no
    // count of its own to guess the new one with.
    let now = later + devices::DEVICE_TTL + SECOND;
    let device = users::authenticate(&t.db, "ann@acme.test", PASSWORD, home, None, now).await.expect("login").device;
    users::set_password(&t.db, &Actor::cli(), &ann.id, "another long password", now).await.expect("set");
    assert!(devices::recognised(&t.db, &device, "ann@acme.test", now).await.expect("read").is_none());
}

#[tokio::test]
async fn a_user_keeps_only_its_most_recent_browsers() {
    let t = TestDb::new().await;
    let c = customer(&t, "Acme").await;
    let ann = owner(&t, "ann@acme.test", &c).await;
    let mut tokens = Vec::new();
    for i in 0..devices::DEVICES_PER_USER + 3 {
        let login = users::authenticate(&t.db, "ann@acme.test", PASSWORD, "192.0.2.1", None, T0 + i * SECOND).await;
        tokens.push(login.expect("login").device);
    }
    let kept: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM known_devices WHERE user_id = $1")
        .bind(&ann.id)
        .fetch_one(t.db.pool())
        .await
        .expect("count");
    assert_eq!(kept, devices::DEVICES_PER_USER);
    let now = T0 + 100 * SECOND;
    assert!(devices::recognised(&t.db, &tokens[0], "ann@acme.test", now).await.expect("read").is_none(), "oldest gone");
    let newest = tokens.last().expect("a token");
    assert!(devices::recognised(&t.db, newest, "ann@acme.test", now).await.expect("read").is_some());
}

#[tokio::test]
async fn api_keys_are_hashed_scoped_to_their_customer_and_revocable() {
    let t = TestDb::new().await;
    let a = customer(&t, "A").await;
    let b = customer(&t, "B").await;
    let (key, secret) = api_keys::create(&t.db, &Actor::cli(), &a, "ci", T0).await.expect("key");
    assert!(secret.starts_with(&key.prefix) && secret.len() > key.prefix.len() + 20);
    let rows = sqlx::query("SELECT key_hash FROM api_keys").fetch_all(t.db.pool()).await.expect("rows");
    for r in rows {
        let h: String = r.try_get(0).expect("hash");
        assert!(!h.contains(&secret) && h != secret);
    }

    let auth = api_keys::authenticate(&t.db, &secret, T0 + DAY).await.expect("auth").expect("valid key");
    assert_eq!(auth.customer_id, a);
    assert_eq!(api_keys::list(&t.db, &a).await.expect("list")[0].last_used_at, Some(T0 + DAY));
    assert!(api_keys::list(&t.db, &b).await.expect("list").is_empty());

    // B cannot revoke A's key, and the answer is the same as for a missing key.
    let foreign = api_keys::revoke(&t.db, &Actor::cli(), &key.id, Some(&b), T0).await;
    let missing = api_keys::revoke(&t.db, &Actor::cli(), "key_01jzzzzzzzzzzzzzzzzzzzzzzz", Some(&b), T0).await;
    assert!(matches!(foreign, Err(AccountsError::NotFound(_))), "{foreign:?}");
    assert_eq!(format!("{:?}", foreign.err()), format!("{:?}", missing.err()));
    assert!(api_keys::authenticate(&t.db, &secret, T0).await.expect("auth").is_some(), "still valid");

    api_keys::revoke(&t.db, &Actor::cli(), &key.id, Some(&a), T0 + 2 * DAY).await.expect("revoke");
    assert!(api_keys::authenticate(&t.db, &secret, T0 + 2 * DAY).await.expect("auth").is_none());
    assert!(api_keys::authenticate(&t.db, "jk_made_up", T0).await.expect("auth").is_none());
}

#[tokio::test]
async fn stage_changes_keep_history_and_every_change_is_audited_with_who_and_when() {
    let t = TestDb::new().await;
    let c = customer(&t, "Acme").await;
    let operator = Actor::user("usr_operator");
    customers::set_stage(&t.db, &operator, &c, Stage::Active, T0 + DAY).await.expect("active");
    customers::set_stage(&t.db, &operator, &c, Stage::Active, T0 + 2 * DAY).await.expect("no-op");
    customers::set_stage(&t.db, &operator, &c, Stage::Paused, T0 + 3 * DAY).await.expect("paused");
    let history = customers::stage_history(&t.db, &c).await.expect("history");
    let steps: Vec<(Option<Stage>, Stage, i64)> = history.iter().map(|h| (h.from, h.to, h.at)).collect();
    assert_eq!(
        steps,
        [
            (None, Stage::Trial, T0),
            (Some(Stage::Trial), Stage::Active, T0 + DAY),
            (Some(Stage::Active), Stage::Paused, T0 + 3 * DAY)
        ]
    );
    assert_eq!(customers::get(&t.db, &c).await.expect("get").stage_changed_at, T0 + 3 * DAY);

    let u = owner(&t, "ann@acme.test", &c).await;
    let (k, _) = api_keys::create(&t.db, &Actor::user(&u.id), &c, "ci", T0).await.expect("key");
    api_keys::revoke(&t.db, &Actor::user(&u.id), &k.id, Some(&c), T0 + 4 * DAY).await.expect("revoke");
    users::set_password(&t.db, &Actor::cli(), &u.id, "another long password", T0).await.expect("password");

    let entries = audit::list(&t.db, Some(&c), 100).await.expect("audit");
    let mut actions: Vec<&str> = entries.iter().map(|e| e.action.as_str()).collect();
    actions.sort();
    assert_eq!(
        actions,
        [
            "api_key.created",
            "api_key.revoked",
            "customer.created",
            "customer.stage_changed",
            "customer.stage_changed",
            "user.created",
            "user.password_set"
        ]
    );
    let revoked = entries.iter().find(|e| e.action == "api_key.revoked").expect("revoked entry");
    assert_eq!(revoked.actor, format!("user:{}", u.id));
    assert_eq!(revoked.at, T0 + 4 * DAY);
    assert_eq!(revoked.subject, k.id);
    let paused =
        entries.iter().find(|e| e.action == "customer.stage_changed" && e.at == T0 + 3 * DAY).expect("paused entry");
    assert_eq!(paused.actor, "user:usr_operator");
    assert_eq!(paused.detail["to"], "paused");
    assert!(!serde_json::to_string(&entries).expect("json").contains(PASSWORD), "no password in the audit log");
}

#[tokio::test]
async fn a_customer_with_an_unknown_plan_or_bad_zone_is_refused_and_nothing_is_stored() {
    let t = TestDb::new().await;
    let cat = catalogue();
    let bad_plan = NewCustomer { name: "X".into(), plan: Some("gold".into()), ..Default::default() };
    let err = customers::create(&t.db, &cat, &Actor::cli(), bad_plan, T0).await.expect_err("unknown plan");
    assert!(err.to_string().contains("gold") && err.to_string().contains("starter"), "{err}");
    let bad_zone = NewCustomer { name: "X".into(), time_zone: Some("Mars/Olympus".into()), ..Default::default() };
    assert!(matches!(
        customers::create(&t.db, &cat, &Actor::cli(), bad_zone, T0).await,
        Err(AccountsError::Invalid { field: "time_zone", .. })
    ));
    let bad_team = NewCustomer {
        name: "X".into(),
        plan: Some("starter".into()),
        chosen_teams: vec!["cooking".into()],
        ..Default::default()
    };
    assert!(matches!(
        customers::create(&t.db, &cat, &Actor::cli(), bad_team, T0).await,
        Err(AccountsError::Invalid { field: "teams", .. })
    ));
    assert!(customers::list(&t.db, None, 10).await.expect("list").is_empty());
    assert!(audit::list(&t.db, None, 10).await.expect("audit").is_empty());
}

#[tokio::test]
async fn a_burst_of_wrong_passwords_on_one_account_checks_at_most_the_limit() {
    let t = TestDb::new().await;
    let c = customer(&t, "Acme").await;
    owner(&t, "ann@acme.test", &c).await;
    let attempts: Vec<_> = (0..100)
        .map(|i| {
            let db = t.db.clone();
            // Each from its own address, so only the account limit stands in the way.
            tokio::spawn(async move {
                users::authenticate(
                    &db,
                    "ann@acme.test",
                    "not the password",
                    &format!("10.1.{}.{}", i / 250, i % 250),
                    None,
                    T0,
                )
                .await
            })
        })
        .collect();
    let (mut verified, mut throttled) = (0, 0);
    for attempt in attempts {
        match attempt.await.expect("task") {
            Err(AccountsError::BadCredentials) => verified += 1,
            Err(AccountsError::Throttled { .. }) => throttled += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(verified <= 5, "{verified} passwords were checked, the limit is 5");
    assert_eq!(verified + throttled, 100);
    // The account is locked now: even the right password waits.
    let r = users::authenticate(&t.db, "ann@acme.test", PASSWORD, "10.9.9.9", None, T0 + SECOND).await;
    assert!(matches!(r, Err(AccountsError::Throttled { .. })), "{r:?}");
}

/// A slowed-down address kept one try at every account, so it could still try a common
/// password on any number of accounts (one each per 15 minutes: a spray). It now has a
/// budget of such tries too; past it the whole address waits, others do not.
#[tokio::test]
async fn an_address_spraying_one_password_over_many_accounts_is_stopped() {
    let t = TestDb::new().await;
    let c = customer(&t, "Acme").await;
    owner(&t, "ann@acme.test", &c).await;
    let spray = "203.0.113.9";
    let budget = throttle::PER_ADDRESS.max_failures + throttle::PER_SLOWED_ADDRESS.max_failures;
    for i in 0..budget {
        let r = users::authenticate(&t.db, &format!("user{i}@x.test"), "Summer2026!", spray, None, T0 + i).await;
        assert!(matches!(r, Err(AccountsError::BadCredentials)), "try {i}: {r:?}");
    }
    for i in budget..budget + 5 {
        let r = users::authenticate(&t.db, &format!("user{i}@x.test"), "Summer2026!", spray, None, T0 + i).await;
        assert!(matches!(r, Err(AccountsError::Throttled { retry_after_secs }) if retry_after_secs > 0), "{i}: {r:?}");
    }
    // Everyone elsewhere is unaffected; the address itself waits out the lock.
    users::authenticate(&t.db, "ann@acme.test", PASSWORD, "198.51.100.1", None, T0 + 200).await.expect("elsewhere");
    users::authenticate(&t.db, "ann@acme.test", PASSWORD, spray, None, T0 + 16 * 60 * SECOND).await.expect("released");
}

/// The same spray from an IPv6 /64, a new address for every try: the address budget
/// counted the /64, but once it was spent the slowed-down budget and the one try per
/// account were counted by the exact address, so each new address brought 50 fresh tries.
#[tokio::test]
async fn a_spray_from_new_addresses_of_one_ipv6_64_is_stopped_like_one_address() {
    let t = TestDb::new().await;
    let c = customer(&t, "Acme").await;
    owner(&t, "ann@acme.test", &c).await;
    let from = |i: i64| format!("2001:db8:1:2::{:x}", i + 1);
    let budget = throttle::PER_ADDRESS.max_failures + throttle::PER_SLOWED_ADDRESS.max_failures;
    for i in 0..budget {
        let r = users::authenticate(&t.db, &format!("user{i}@x.test"), "Summer2026!", &from(i), None, T0 + i).await;
        assert!(matches!(r, Err(AccountsError::BadCredentials)), "try {i}: {r:?}");
    }
    for i in budget..budget + 5 {
        let r = users::authenticate(&t.db, &format!("user{i}@x.test"), "Summer2026!", &from(i), None, T0 + i).await;
        assert!(matches!(r, Err(AccountsError::Throttled { .. })), "{i}: {r:?}");
    }
    // Another /64 is not held back.
    users::authenticate(&t.db, "ann@acme.test", PASSWORD, "2001:db8:1:3::1", None, T0 + 200).await.expect("elsewhere");
}

#[tokio::test]
async fn one_address_failing_on_many_accounts_does_not_lock_out_the_other_users_behind_it() {
    let t = TestDb::new().await;
    let c = customer(&t, "Acme").await;
    owner(&t, "ann@acme.test", &c).await;
    owner(&t, "bob@acme.test", &c).await;
    let office = "203.0.113.7";
    for i in 0..30 {
        let r = users::authenticate(&t.db, &format!("nobody{i}@x.test"), "wrong password", office, None, T0 + i).await;
        assert!(matches!(r, Err(AccountsError::BadCredentials) | Err(AccountsError::Throttled { .. })), "{r:?}");
    }
    // A colleague behind the same address still gets into their own account.
    users::authenticate(&t.db, "ann@acme.test", PASSWORD, office, None, T0 + 40).await.expect("ann gets in");
    // The address is slowed down: past its limit it has one try per account per lock period.
    let r = users::authenticate(&t.db, "bob@acme.test", "wrong password", office, None, T0 + 41).await;
    assert!(matches!(r, Err(AccountsError::BadCredentials)), "{r:?}");
    let r = users::authenticate(&t.db, "bob@acme.test", PASSWORD, office, None, T0 + 42).await;
    assert!(matches!(r, Err(AccountsError::Throttled { .. })), "{r:?}");
    let r = users::authenticate(&t.db, "nobody0@x.test", "wrong password", office, None, T0 + 43).await;
    assert!(matches!(r, Err(AccountsError::BadCredentials)), "{r:?}");
    let r = users::authenticate(&t.db, "nobody0@x.test", "wrong password", office, None, T0 + 44).await;
    assert!(matches!(r, Err(AccountsError::Throttled { .. })), "{r:?}");
    // Bob elsewhere is not held back by that address.
    users::authenticate(&t.db, "bob@acme.test", PASSWORD, "198.51.100.1", None, T0 + 45).await.expect("bob elsewhere");
    // And once the lock period is over, the address is back to normal.
    users::authenticate(&t.db, "bob@acme.test", PASSWORD, office, None, T0 + 16 * 60 * SECOND).await.expect("released");
}

#[tokio::test]
async fn the_customer_created_event_carries_the_customer_as_stored_and_reads_back_typed() {
    let t = TestDb::new().await;
    let id = customer(&t, "Typed").await;
    let stored = customers::get(&t.db, &id).await.unwrap();
    let events = j1msky_db::outbox::latest(&t.db, Some("customer.created"), 10).await.unwrap();
    assert_eq!(events.len(), 1);
    let mut expected = serde_json::to_value(&stored).unwrap();
    expected["v"] = serde_json::json!(1);
    assert_eq!(events[0].payload, expected, "the same fields as the customer itself, plus `v`");
    match events[0].typed() {
        Some(j1msky_core::events::Typed::CustomerCreated(c)) => assert_eq!(c, stored.created_event()),
        other => panic!("customer.created read back as {other:?}"),
    }
}

#[tokio::test]
async fn an_operator_finds_a_customer_by_the_start_of_its_name_or_email_or_by_its_ids() {
    let t = TestDb::new().await;
    let cat = catalogue();
    let mut ids = Vec::new();
    for (name, email, stage) in [
        ("Acme Robotics", Some("ops@acme.test"), Stage::Trial),
        ("acme two", Some("Billing@Acme-Two.test"), Stage::Lead),
        ("Beta 100%_off", Some("ceo@beta.test"), Stage::Trial),
        ("Zeta", None, Stage::Lead),
        ("Bacme", Some("x@bacme.test"), Stage::Trial),
    ] {
        let input = NewCustomer {
            name: name.into(),
            contact_email: email.map(Into::into),
            stage: Some(stage),
            ..Default::default()
        };
        ids.push(customers::create(&t.db, &cat, &Actor::cli(), input, T0).await.expect("customer").id);
    }
    sqlx::query("UPDATE customers SET stripe_customer_id = 'cus_Stripe42' WHERE id = $1")
        .bind(&ids[3])
        .execute(t.db.pool())
        .await
        .unwrap();
    let names = |found: Vec<customers::Customer>| found.into_iter().map(|c| c.name).collect::<Vec<_>>();
    let find = |text: &str, stage: Option<Stage>| {
        let (db, text) = (t.db.clone(), text.to_string());
        async move { names(customers::search(&db, &text, stage, 50).await.expect(&text)) }
    };
    // The start of a name, any case, by name; not a name containing it elsewhere (Bacme).
    assert_eq!(find("acme", None).await, ["Acme Robotics", "acme two"]);
    assert_eq!(find("  ACME R ", None).await, ["Acme Robotics"], "trimmed, any case");
    // The start of an email, any case.
    assert_eq!(find("billing@acme", None).await, ["acme two"]);
    assert_eq!(find("CEO@", None).await, ["Beta 100%_off"]);
    // Ids exactly: ours and Stripe's (not a prefix of them).
    assert_eq!(find(&ids[2], None).await, ["Beta 100%_off"]);
    assert_eq!(find("cus_Stripe42", None).await, ["Zeta"]);
    assert!(find("cus_Stripe4", None).await.is_empty());
    // What is typed is text, not a pattern.
    assert!(find("%", None).await.is_empty());
    assert!(find("b_ta", None).await.is_empty());
    assert_eq!(find("beta 100%_", None).await, ["Beta 100%_off"]);
    // Within a stage, and at most the limit.
    assert_eq!(find("acme", Some(Stage::Lead)).await, ["acme two"]);
    assert_eq!(names(customers::search(&t.db, "acme", None, 1).await.unwrap()), ["Acme Robotics"]);
    // Nothing to look for, too much, or a control character: refused, naming the field.
    for bad in ["", "   ", "a\u{0}b"] {
        let err = customers::search(&t.db, bad, None, 50).await.expect_err(bad);
        assert!(matches!(err, AccountsError::Invalid { field: "search", .. }), "{bad:?}: {err:?}");
    }
    let long = "a".repeat(customers::SEARCH_MAX_CHARS + 1);
    assert!(matches!(customers::search(&t.db, &long, None, 50).await, Err(AccountsError::Invalid { .. })));
}

/// Names and emails beyond ASCII: SQLite's lower() folds ASCII letters only, so `élodie`
/// missed `Élodie` there; and an operator typing without the accent (or with it written as
/// a letter and a combining mark, as some keyboards send it) means the same customer.
#[tokio::test]
async fn an_operator_finds_a_customer_in_any_case_and_with_or_without_accents() {
    let t = TestDb::new().await;
    let cat = catalogue();
    for (name, email) in [
        ("Élodie Ørsted", Some("ÉLODIE@ørsted.test")),
        ("Zoë Müller GmbH", Some("zoe@mueller.test")),
        ("Elm Street", None),
        ("Ørn", None),
    ] {
        let input = NewCustomer { name: name.into(), contact_email: email.map(Into::into), ..Default::default() };
        customers::create(&t.db, &cat, &Actor::cli(), input, T0).await.expect("customer");
    }
    let find = |text: &str| {
        let (db, text) = (t.db.clone(), text.to_string());
        async move {
            let found = customers::search(&db, &text, None, 50).await.expect(&text);
            found.into_iter().map(|c| c.name).collect::<Vec<_>>()
        }
    };
    assert_eq!(find("élodie").await, ["Élodie Ørsted"], "lower case of a capital beyond ASCII");
    assert_eq!(find("ÉLO").await, ["Élodie Ørsted"]);
    assert_eq!(find("e\u{301}lodie").await, ["Élodie Ørsted"], "a letter and a combining accent");
    assert_eq!(find("el").await, ["Elm Street", "Élodie Ørsted"], "without the accent");
    assert_eq!(find("ZOE MÜ").await, ["Zoë Müller GmbH"]);
    assert_eq!(find("zoë mu").await, ["Zoë Müller GmbH"]);
    assert_eq!(find("élodie@ØRSTED").await, ["Élodie Ørsted"], "an email beyond ASCII");
    // Ø is a letter of its own, not an O with a mark: `o` does not find it, `ø` does.
    assert!(find("orn").await.is_empty());
    assert_eq!(find("øRN").await, ["Ørn"]);
    assert!(find("ørsted").await.is_empty(), "the start of a name, not a word inside it");
}

/// Customers stored before their search keys existed (or written by other means) are
/// found once `fill_search_keys` has run, which the binary does after every migration.
#[tokio::test]
async fn customers_stored_without_search_keys_are_found_once_they_are_filled() {
    let t = TestDb::new().await;
    let id = customer(&t, "Ångström Labs").await;
    let ascii = customer(&t, "Plain Name").await;
    sqlx::query("UPDATE customers SET search_name = NULL, search_email = NULL").execute(t.db.pool()).await.unwrap();
    assert!(customers::search(&t.db, "angstrom", None, 50).await.unwrap().is_empty());
    assert_eq!(customers::fill_search_keys(&t.db).await.unwrap(), 2);
    let found = customers::search(&t.db, "ÅNGSTRÖM", None, 50).await.unwrap();
    assert_eq!(found.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(), [id.as_str()]);
    let found = customers::search(&t.db, "plain", None, 50).await.unwrap();
    assert_eq!(found.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(), [ascii.as_str()]);
    assert_eq!(customers::fill_search_keys(&t.db).await.unwrap(), 0, "nothing left to fill");
}
