//! Limits shared by 2 and 4 operating-system processes on one database and one simulated
//! provider over loopback: each process is this test binary run again (`gateway_process`,
//! which does nothing in an ordinary run) with its own gateway, pool, reservation owner
//! and, on PostgreSQL, its own slices of the shared caps and day budget. The parent spreads
//! 64 calls over them and checks the books; one process is killed with SIGKILL while it
//! holds a slice and a reservation, and the survivors' sweeper frees what it held only
//! once its lease ran out. Runs on the engine the test run selects (several processes on
//! one SQLite file is a real deployment with `--shared-limits` too).

// A test (or bench) stops at the first surprise: panicking shortcuts, the wall clock
// and untracked tasks are fine here (see [workspace.lints] in Cargo.toml).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

use j1msky_accounts::customers::{self, NewCustomer};
use j1msky_audit::Actor;
use j1msky_core::vocab::Stage;
use j1msky_core::windows;
use j1msky_core::Money;
use j1msky_gateway::limits::RESERVATION_TTL;
use j1msky_gateway::{controls, limits};

use crate::procs;
use procs::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_that_fits_ten_admits_exactly_ten_over_two_and_four_processes() {
    for n in [2, 4] {
        let mut f = fleet(n).await;
        let budget = f.per_call() * 10 + f.per_call() / 2;
        controls::set_daily_budget(&f.t.db, &Actor::cli(), Some(Money::from_micros(budget)), "test", f.now)
            .await
            .unwrap();
        let (ok, refused) = f.race(&format!("req_b{n}_"), MAX_TOKENS, "general");
        assert_eq!((ok, refused), (10, 54), "{n} processes: exactly the ten calls that fit");
        f.flush();
        let ((spent, reserved), (rows, sum), upstream) = f.books().await;
        assert_eq!(reserved, 0, "{n} processes: every reservation settled and every slice given back");
        assert!(spent <= budget, "{n} processes: spent {spent} of {budget}");
        assert_eq!((rows, sum), (10, spent), "{n} processes: the budget's spend is the ledger's, each call once");
        assert_eq!(upstream, 10, "{n} processes: refused calls never reached the provider");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_global_hourly_cap_admits_exactly_its_number_over_two_and_four_processes() {
    for n in [2, 4] {
        let mut f = fleet(n).await;
        controls::set_cap(&f.t.db, &f.catalogue, &Actor::cli(), "global", Some(25), "test", f.now).await.unwrap();
        let (ok, refused) = f.race(&format!("req_c{n}_"), 16, "code");
        assert_eq!((ok, refused), (25, 39), "{n} processes: exactly the cap");
        if f.t.db.backend() == j1msky_db::Backend::Postgres {
            assert!(f.slices().await >= n as i64, "{n} processes: each holds slices of the shared caps");
        }
        f.flush();
        assert_eq!(f.slices().await, 0, "{n} processes: every slice given back at shutdown");
        assert_eq!(limits::used_this_hour(&f.t.db, "global", f.now).await.unwrap(), 25, "{n} processes: counted once");
        let (_, (rows, _), upstream) = f.books().await;
        assert_eq!((rows, upstream), (25, 25), "{n} processes: one ledger row and one upstream call each");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_killed_holding_a_slice_and_a_reservation_is_released_after_its_lease_never_before() {
    for n in [2, 4] {
        let mut f = fleet(n).await;
        let budget = f.per_call() * 10 + f.per_call() / 2;
        controls::set_daily_budget(&f.t.db, &Actor::cli(), Some(Money::from_micros(budget)), "test", f.now)
            .await
            .unwrap();
        let input = NewCustomer {
            name: "Acme".into(),
            stage: Some(Stage::Active),
            plan: Some("pro".into()),
            ..NewCustomer::default()
        };
        let customer = customers::create(&f.t.db, &f.catalogue, &Actor::cli(), input, f.now).await.unwrap().id;
        let month_budget = Money::from_micros(f.per_call() * 100);
        j1msky_accounts::customer_links::set_monthly_budget(
            &f.t.db,
            &Actor::cli(),
            &customer,
            Some(month_budget),
            "process race fixture",
            f.now,
        )
        .await
        .unwrap();
        // The last process admits a customer's call (a slice of the day's budget, a
        // reservation row in the customer's month) and is killed before settling it.
        let mut dead = f.procs.pop().unwrap();
        assert_eq!(dead.ask(&format!("hold req_dead{n} {customer}")), ["held"]);
        let dead_owner = dead.owner_prefix();
        std::process::Command::new("kill").args(["-9", &dead.child.id().to_string()]).status().unwrap();
        assert!(!dead.child.wait().unwrap().success(), "killed, not finished");
        let dead_held = f.held_by(&dead_owner).await;
        assert!(dead_held >= f.per_call(), "{n} processes: the dead process held at least its call");
        let (month, _) = windows::month(chrono_tz::UTC, f.now);
        let month_scope = limits::customer_month_scope(&customer);
        let (_, month_reserved) = limits::budget_state(&f.t.db, &month_scope, month).await.unwrap();
        assert_eq!(month_reserved.micros(), f.per_call(), "{n} processes: its reservation row is held");

        // The survivors race: what the dead process holds still counts while its lease runs.
        let (ok, _) = f.race(&format!("req_d{n}_"), MAX_TOKENS, "general");
        f.flush();
        let ((spent, reserved), (rows, sum), upstream) = f.books().await;
        assert_eq!(reserved, dead_held, "{n} processes: only the dead process's part is still reserved");
        assert!(spent + dead_held <= budget, "{n} processes: never overspent");
        assert!(budget - dead_held - spent < f.per_call(), "{n} processes: everything that fitted was admitted");
        assert_eq!((rows, sum, upstream), (ok as i64, spent, ok as u64), "{n} processes: each admitted call once");

        // The survivors' sweeper: nothing before the lease ends, everything after.
        assert_eq!(f.procs[0].ask("sweep 0"), ["swept", "0"]);
        assert_eq!(f.procs[0].ask(&format!("sweep {}", RESERVATION_TTL - 1)), ["swept", "0"]);
        assert_eq!(f.held_by(&dead_owner).await, dead_held, "{n} processes: kept while the lease runs");
        let dead_day_slice = f.sliced_in(&dead_owner, "business:day").await;
        if f.t.db.backend() == j1msky_db::Backend::Postgres {
            assert!(dead_day_slice >= f.per_call(), "{n} processes: its call came from a slice of the day");
        } else {
            assert_eq!(dead_day_slice, 0, "{n} processes: SQLite takes no slices");
        }
        let swept = f.procs[0].ask("sweep 2");
        assert!(swept[1].parse::<u64>().unwrap() >= 2, "{n} processes: its slice and its reservation: {swept:?}");
        assert_eq!(f.held_by(&dead_owner).await, 0, "{n} processes: released once expired");
        let ((spent_after, reserved_after), _, _) = f.books().await;
        // Its reservation is released; its slice of the day counts as spent in full (what
        // its calls spent since its last flush is in no row but the ledger's).
        assert_eq!(
            (spent_after, reserved_after),
            (spent + dead_day_slice, 0),
            "{n} processes: nothing held, the dead slice spent"
        );
        let (_, month_reserved) = limits::budget_state(&f.t.db, &month_scope, month).await.unwrap();
        assert_eq!(month_reserved, Money::ZERO, "{n} processes: the customer's month is free again");
    }
}
