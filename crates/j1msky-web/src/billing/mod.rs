//! Billing: customers' billing pages (checkout, plan change, portal, cancellation
//! offers) and the Stripe webhook.

pub(crate) mod hooks;
mod pages;

use axum::routing::{get, post};
use axum::Router;

use crate::nav::NavEntry;
use crate::state::AppState;

pub const NAV: &[NavEntry] = &[NavEntry::customer("billing", "Billing", "/app/billing")];

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/app/billing", get(pages::page))
        .route("/app/billing/checkout", post(pages::start_checkout))
        .route("/app/billing/change", post(pages::change))
        .route("/app/billing/portal", post(pages::portal))
        .route("/app/billing/cancel", post(pages::cancel))
        .route("/app/billing/cancel/{id}/accept", post(pages::accept))
        .route("/app/billing/cancel/{id}/confirm", post(pages::confirm))
        .route("/app/upgrade-offer", get(pages::upgrade_offer).post(pages::accept_upgrade_offer))
        .route("/webhooks/stripe", post(hooks::stripe))
}
