//! Stripe billing (business plan §1, §2, §4, §6): a thin Stripe client, webhook
//! verification, storage and application, the subscription mirror, catalogue sync and
//! the revenue ledger.

pub mod apply;
pub mod changes;
pub mod checkout;
pub mod client;
pub mod contracts;
pub mod disputes;
mod error;
pub mod fees;
pub mod form;
pub mod history;
pub mod invoice_lines;
mod invoices;
pub mod item_lookup;
pub mod jobs;
pub mod offers;
mod refs;
pub mod retention;
pub mod revenue;
pub mod signature;
mod standing;
pub mod sync;
pub mod tax;
pub mod usage;
pub mod webhook;

pub use client::{KeyMode, Stripe, StripeConfig};
pub use error::BillingError;

/// The `lookup_key` our monthly price for `plan` carries at Stripe.
pub fn price_lookup_key(plan: &str) -> String {
    format!("j1msky_{plan}_monthly")
}

/// The plan a price `lookup_key` names, if it is one of ours.
pub fn plan_of_lookup_key(key: &str) -> Option<&str> {
    key.strip_prefix("j1msky_")?.strip_suffix("_monthly")
}

/// Unix seconds (Stripe's time) from our microseconds.
pub fn secs(micros: i64) -> i64 {
    micros.div_euclid(1_000_000)
}
