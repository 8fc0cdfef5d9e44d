//! The shipped catalogue lists every Stripe event the applier acts on, so an operator who
//! enables the listed events on their webhook endpoint misses none (a pay-per-task
//! customer's card on file arrives as `customer.updated`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use j1msky_core::catalogue::Catalogue;

const SHIPPED: &str = include_str!("../../../config/business.json");

#[test]
fn the_shipped_catalogue_asks_stripe_for_every_event_the_applier_acts_on() {
    let c = Catalogue::from_json_str(SHIPPED).expect("valid shipped catalogue");
    let missing: Vec<&str> = j1msky_billing::apply::APPLIED_EVENTS
        .iter()
        .copied()
        .filter(|e| !c.stripe.webhook_events.iter().any(|w| w == e))
        .collect();
    assert!(missing.is_empty(), "stripe.webhook_events lacks {missing:?}");
}
