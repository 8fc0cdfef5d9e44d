//! The integration tests of j1msky, linked as one test binary.
//!
//! Each file beside this one is a module here (one link and one executable instead of
//! one per file: the debug build of the workspace stays a few GB). A test is picked by
//! its file: `cargo test -p j1msky --test integration -- <file>::`.
//! `crates/j1msky/tests/test_layout.rs` fails when a file here is not listed below.

// A test stops at the first surprise: panicking shortcuts, the wall clock and untracked
// tasks are fine here (see [workspace.lints] in Cargo.toml).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

// Helpers shared by several files.
mod common;
#[path = "../../j1msky-insights/tests/mrr_support/mod.rs"]
mod mrr_support;
#[path = "../../j1msky-ops/tests/s3_server/mod.rs"]
mod s3_server;
#[path = "../../j1msky-insights/tests/usage_support/mod.rs"]
mod usage_support;

mod alert_cli;
mod backup_drill;
mod backup_s3_cli;
mod browser_board;
mod browser_leads;
mod cli;
mod config_history;
mod crash;
mod events_cli;
mod kpi_cli;
mod lifecycle_engagement_cli;
mod lifecycle_journeys_cli;
mod reactions_workers;
mod soak;
mod supervision;
mod test_layout;
