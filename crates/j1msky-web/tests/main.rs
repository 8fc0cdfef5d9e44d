//! The integration tests of j1msky-web, linked as one test binary.
//!
//! Each file beside this one is a module here (one link and one executable instead of
//! one per file: the debug build of the workspace stays a few GB). A test is picked by
//! its file: `cargo test -p j1msky-web --test integration -- <file>::`.
//! `crates/j1msky/tests/test_layout.rs` fails when a file here is not listed below.

// A test stops at the first surprise: panicking shortcuts, the wall clock and untracked
// tasks are fine here (see [workspace.lints] in Cargo.toml).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

// Helpers shared by several files.
mod common;
#[path = "../../j1msky-insights/tests/mrr_support/mod.rs"]
mod mrr_support;
#[path = "revenue_support/mod.rs"]
mod support;
#[path = "../../j1msky-insights/tests/usage_support/mod.rs"]
mod usage_support;

mod access;
mod accounts_story;
mod admission;
mod bearer;
mod billing;
mod billing_offers;
mod billing_timers;
mod config_admin;
mod customer_pages;
mod detached_panic;
mod error_mapping;
mod events_admin;
mod gateway;
mod hostile_input;
mod insights_board;
mod insights_spend;
mod leads;
mod lifecycle_engagement;
mod lifecycle_journeys;
mod lifecycle_messages;
mod lifecycle_offers;
mod one_path;
mod openapi;
mod ops_alerts;
mod ops_backups;
mod playbook_events;
mod revenue;
mod route_probe;
mod surface;
mod tasks_api;
mod templates_render;
mod trial_ends;
mod upgrade_offer;
mod usage_billing;
mod usage_reissue;
