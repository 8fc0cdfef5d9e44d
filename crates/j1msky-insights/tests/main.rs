//! The integration tests of j1msky-insights, linked as one test binary.
//!
//! Each file beside this one is a module here (one link and one executable instead of
//! one per file: the debug build of the workspace stays a few GB). A test is picked by
//! its file: `cargo test -p j1msky-insights --test integration -- <file>::`.
//! `crates/j1msky/tests/test_layout.rs` fails when a file here is not listed below.

// A test stops at the first surprise: panicking shortcuts, the wall clock and untracked
// tasks are fine here (see [workspace.lints] in Cargo.toml).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

// Helpers shared by several files.
mod mrr_support;
mod usage_support;

mod morning;
mod mrr_fake_stripe;
mod mrr_fixtures;
mod mrr_properties;
mod people;
mod rebuild_batches;
mod rebuild_paths;
mod series;
mod usage;
