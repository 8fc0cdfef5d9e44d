//! One customer's own limits (its hourly cap and month budget) shared by 2 and 4 real
//! gateway processes on one database: on PostgreSQL a process busy with a customer takes
//! slices of that customer's scopes too ([`j1msky_gateway::leases`]). The 64-way races for
//! one customer admit exactly what fits; a process killed holding a customer's slices keeps
//! them counted until its lease runs out, then its reservations per call are released and
//! its slices count as spent in full (never released early); a lowered month budget makes every
//! process give back what its slices of it hold unused. Runs on the engine the test run
//! selects (on SQLite every call is admitted one by one, and the same books must hold).

// A test (or bench) stops at the first surprise: panicking shortcuts, the wall clock
// and untracked tasks are fine here (see [workspace.lints] in Cargo.toml).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

use std::time::{Duration, Instant};

use j1msky_accounts::customers::{self, NewCustomer};
use j1msky_audit::Actor;
use j1msky_core::vocab::Stage;
use j1msky_core::windows;
use j1msky_core::Money;
use j1msky_db::Backend;
use j1msky_gateway::controls;
use j1msky_gateway::limits::{self, RESERVATION_TTL};

use crate::procs;
use procs::*;

/// An active Pro customer whose month budget fits `month_calls` calls and a half (none
/// when 0), with an hourly cap of `cap` calls and a day's budget that never binds.
async fn customer(f: &Fleet, month_calls: i64, cap: i64) -> String {
    let input = NewCustomer {
        name: "Acme".into(),
        stage: Some(Stage::Active),
        plan: Some("pro".into()),
        ..NewCustomer::default()
    };
    let id = customers::create(&f.t.db, &f.catalogue, &Actor::cli(), input, f.now).await.unwrap().id;
    if month_calls > 0 {
        let budget = Money::from_micros(f.per_call() * month_calls + f.per_call() / 2);
        j1msky_accounts::customer_links::set_monthly_budget(
            &f.t.db,
            &Actor::cli(),
            &id,
            Some(budget),
            "fixture",
            f.now,
        )
        .await
        .unwrap();
    }
    let scope = format!("customer:{id}");
    controls::set_cap(&f.t.db, &f.catalogue, &Actor::cli(), &scope, Some(cap), "fixture", f.now).await.unwrap();
    let day = Money::from_micros(f.per_call() * 10_000);
    controls::set_daily_budget(&f.t.db, &Actor::cli(), Some(day), "fixture", f.now).await.unwrap();
    id
}

/// Slices of `scope` held by any process (lease rows).
async fn slices_of(f: &Fleet, scope: &str) -> i64 {
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM limit_leases WHERE scope = $1")
        .bind(scope)
        .fetch_one(f.t.db.pool())
        .await
        .unwrap();
    n
}

/// The customer's month: (spent, reserved).
async fn month(f: &Fleet, id: &str) -> (i64, i64) {
    let (start, _) = windows::month(chrono_tz::UTC, f.now);
    let (spent, reserved) = limits::budget_state(&f.t.db, &limits::customer_month_scope(id), start).await.unwrap();
    (spent.micros(), reserved.micros())
}

/// The customer's month once every process has flushed what its calls spent from its
/// slices (a few times a second, `leases::FLUSH_EVERY`): until then a live process's
/// unflushed spend still counts as what its slice holds. Waits until the month's spend is
/// the ledger's, with every call settled.
async fn flushed_month(f: &Fleet, id: &str) -> (i64, i64) {
    let since = Instant::now();
    loop {
        let (spent, reserved) = month(f, id).await;
        let (ledger,): (i64,) = sqlx::query_as(
            "SELECT CAST(COALESCE(SUM(cost_micros), 0) AS BIGINT) FROM llm_calls WHERE customer_id = $1",
        )
        .bind(id)
        .fetch_one(f.t.db.pool())
        .await
        .unwrap();
        if spent == ledger {
            return (spent, reserved);
        }
        assert!(since.elapsed() < Duration::from_secs(10), "spend never flushed: {spent} of the ledger's {ledger}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_customers_hourly_cap_admits_exactly_its_number_over_two_and_four_processes() {
    for n in [2, 4] {
        // A cap with room: every process is busy with the customer and slices its cap.
        let mut f = fleet(n).await;
        let id = customer(&f, 0, 1000).await;
        let scope = format!("customer:{id}");
        assert_eq!(f.race_for(&format!("req_w{n}_"), 16, "general", &id), (64, 0));
        if f.t.db.backend() == Backend::Postgres {
            assert!(slices_of(&f, &scope).await >= 1, "{n} processes: the busy customer's cap is sliced");
        }
        f.flush();
        assert_eq!(slices_of(&f, &scope).await, 0, "{n} processes: given back at shutdown");
        assert_eq!(limits::used_this_hour(&f.t.db, &scope, f.now).await.unwrap(), 64, "{n} processes: counted once");

        // A cap of 15 for 64 calls spread over the processes: fewer than each process
        // sends, so none is done while its slice still holds some (see the last test).
        let mut f = fleet(n).await;
        let id = customer(&f, 0, 15).await;
        let scope = format!("customer:{id}");
        let (ok, refused) = f.race_for(&format!("req_c{n}_"), 16, "general", &id);
        assert_eq!((ok, refused), (15, 49), "{n} processes: exactly the customer's cap");
        f.flush();
        assert_eq!(limits::used_this_hour(&f.t.db, &scope, f.now).await.unwrap(), 15, "{n} processes: counted once");
        let (_, (rows, _), upstream) = f.books().await;
        assert_eq!((rows, upstream), (15, 15), "{n} processes: one ledger row and one upstream call each");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_customers_month_budget_that_fits_ten_admits_exactly_ten_over_two_and_four_processes() {
    for n in [2, 4] {
        let mut f = fleet(n).await;
        let id = customer(&f, 10, 1000).await;
        let (ok, refused) = f.race_for(&format!("req_m{n}_"), MAX_TOKENS, "general", &id);
        assert_eq!((ok, refused), (10, 54), "{n} processes: exactly the ten calls that fit");
        f.flush();
        let (spent, reserved) = month(&f, &id).await;
        assert_eq!(reserved, 0, "{n} processes: every reservation settled and every slice given back");
        assert!(spent <= f.per_call() * 10 + f.per_call() / 2, "{n} processes: never overspent");
        let (_, (rows, sum), upstream) = f.books().await;
        assert_eq!((rows, sum, upstream), (10, spent, 10), "{n} processes: the month's spend is the ledger's");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_killed_holding_a_customers_slices_is_released_after_its_lease_never_before() {
    for n in [2, 4] {
        let mut f = fleet(n).await;
        // What is left after the dead process's part is fewer calls than each survivor
        // sends, so no survivor is done while its slice still holds some (see the last test).
        let id = customer(&f, 30, 1000).await;
        let scope = limits::customer_month_scope(&id);
        // The last process admits 16 of the customer's calls at once (busy: slices of its
        // month budget and cap on PostgreSQL) and is killed before settling any.
        let mut dead = f.procs.pop().unwrap();
        assert_eq!(dead.ask(&format!("holdn req_dead{n} 16 {id}")), ["held", "16"]);
        let dead_owner = dead.owner_prefix();
        std::process::Command::new("kill").args(["-9", &dead.child.id().to_string()]).status().unwrap();
        assert!(!dead.child.wait().unwrap().success(), "killed, not finished");
        let dead_held = f.held_in(&dead_owner, &scope).await;
        assert!(dead_held >= 16 * f.per_call(), "{n} processes: the dead process held its 16 calls at least");
        let dead_sliced = f.sliced_in(&dead_owner, &scope).await;
        if f.t.db.backend() == Backend::Postgres {
            assert!(slices_of(&f, &scope).await >= 1, "{n} processes: from a slice of the customer's month");
        }

        // The survivors race for the same customer: what the dead process holds still counts.
        let (ok, _) = f.race_for(&format!("req_s{n}_"), MAX_TOKENS, "general", &id);
        f.flush();
        let budget = f.per_call() * 30 + f.per_call() / 2;
        let (spent, reserved) = month(&f, &id).await;
        assert_eq!(reserved, dead_held, "{n} processes: only the dead process's part is still reserved");
        assert!(spent + dead_held <= budget, "{n} processes: never overspent");
        assert!(budget - dead_held - spent < f.per_call(), "{n} processes: everything that fitted was admitted");
        let (_, (rows, sum), upstream) = f.books().await;
        assert_eq!((rows, sum, upstream), (ok as i64, spent, ok as u64), "{n} processes: each admitted call once");

        // The survivors' sweeper: nothing before the lease ends, everything after.
        assert_eq!(f.procs[0].ask(&format!("sweep {}", RESERVATION_TTL - 1)), ["swept", "0"]);
        assert_eq!(f.held_in(&dead_owner, &scope).await, dead_held, "{n} processes: kept while the lease runs");
        let swept = f.procs[0].ask("sweep 2");
        assert!(swept[1].parse::<u64>().unwrap() >= 1, "{n} processes: released: {swept:?}");
        assert_eq!(f.held_in(&dead_owner, &scope).await, 0, "{n} processes: released once expired");
        // Its reservations per call are released; its slice of the month counts as spent
        // (what its calls spent since its last flush is in no row but the ledger's).
        assert_eq!(month(&f, &id).await, (spent + dead_sliced, 0), "{n} processes: nothing held, a dead slice spent");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lowered_month_budget_makes_the_other_processes_give_back_their_slices_of_it() {
    let mut f = fleet(2).await;
    let id = customer(&f, 100, 1000).await;
    let scope = limits::customer_month_scope(&id);
    // The first process is busy with the customer: on PostgreSQL it keeps a slice of the
    // month with room to spare once its calls are settled.
    let owner = f.procs[0].owner_prefix();
    assert_eq!(f.procs[0].ask(&format!("race req_a 16 {MAX_TOKENS} general {id}")), ["race", "16", "0"]);
    let (spent, _) = flushed_month(&f, &id).await;
    let spare = f.held_in(&owner, &scope).await;
    if f.t.db.backend() == Backend::Postgres {
        assert!(spare >= f.per_call(), "a slice with room for more calls is held: {spare}");
    }
    // Another process (the CLI here) lowers the budget to what is spent and five calls and
    // a half: the first process hears of it and gives back what it held unused.
    let lowered = Money::from_micros(spent + f.per_call() * 5 + f.per_call() / 2);
    j1msky_accounts::customer_links::set_monthly_budget(&f.t.db, &Actor::cli(), &id, Some(lowered), "lowered", f.now)
        .await
        .unwrap();
    let since = Instant::now();
    while f.held_in(&owner, &scope).await > 0 {
        assert!(since.elapsed() < Duration::from_secs(10), "the slice was never given back");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The second process's calls fit in exactly what the lowered budget leaves.
    assert_eq!(f.procs[1].ask(&format!("race req_b 16 {MAX_TOKENS} general {id}")), ["race", "5", "11"]);
    f.flush();
    let (spent_after, reserved) = month(&f, &id).await;
    assert_eq!(reserved, 0, "nothing held after shutdown");
    assert!(spent_after <= lowered.micros(), "never over the lowered budget");
}

/// What slices promise across processes, and what they do not: a call is refused only when
/// the shared row has no room, but that row counts in full what another process's slice
/// holds unused, so that part can be refused elsewhere until the slice goes idle (5 s,
/// at its sweeper's pass) and is given back. Then it is admitted, and never more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_slice_holds_unused_is_admitted_elsewhere_once_it_goes_idle() {
    let mut f = fleet(2).await;
    let id = customer(&f, 100, 1000).await;
    let scope = limits::customer_month_scope(&id);
    let budget = f.per_call() * 100 + f.per_call() / 2;
    let first = f.procs[0].owner_prefix();
    assert_eq!(f.procs[0].ask(&format!("race req_a 16 {MAX_TOKENS} general {id}")), ["race", "16", "0"]);
    flushed_month(&f, &id).await;
    let spare = f.held_in(&first, &scope).await;
    // The second process calls for more than is left: everything but the first one's
    // unused part is admitted.
    let b = f.procs[1].ask(&format!("race req_b 100 {MAX_TOKENS} general {id}"));
    let (spent, reserved) = flushed_month(&f, &id).await;
    // Held: the first process's unused part, and what is left in the second's own slice,
    // less than a call (it ran out and went per call).
    assert!(reserved >= spare && reserved - spare < f.per_call(), "held {reserved}, the first's {spare}");
    assert!(spent + reserved <= budget, "never overspent: {b:?}");
    assert!(budget - reserved - spent < f.per_call(), "all but the unused parts was admitted: {b:?}");
    // The first process's slice goes idle and is given back; the second admits what it held.
    f.procs[0].ask(&format!("sweep {}", j1msky_gateway::leases::IDLE + 1));
    assert_eq!(f.held_in(&first, &scope).await, 0, "given back once idle");
    let c = f.procs[1].ask(&format!("race req_c 16 {MAX_TOKENS} general {id}"));
    f.flush();
    let (spent, reserved) = month(&f, &id).await;
    assert_eq!(reserved, 0);
    assert!(spent <= budget && budget - spent < f.per_call(), "everything that fits, no more: {c:?}");
    if f.t.db.backend() == Backend::Postgres && spare >= f.per_call() {
        assert_ne!(c[1], "0", "what the idle slice held was admitted");
    }
}
