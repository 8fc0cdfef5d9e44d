//! The integration tests of j1msky-db, linked as one test binary.
//!
//! Each file beside this one is a module here (one link and one executable instead of
//! one per file: the debug build of the workspace stays a few GB). A test is picked by
//! its file: `cargo test -p j1msky-db --test integration -- <file>::`.
//! `crates/j1msky/tests/test_layout.rs` fails when a file here is not listed below.

// A test stops at the first surprise: panicking shortcuts, the wall clock and untracked
// tasks are fine here (see [workspace.lints] in Cargo.toml).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

mod consumers;
mod fixture;
mod hourly;
mod lease_and_outbox;
mod outbox_order;
mod ownership;
mod schema_parity;
mod timers;
