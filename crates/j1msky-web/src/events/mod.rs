//! Events: the operator's view of the event backbone (consumers, lag, parked events).

mod pages;

use axum::routing::{get, post};
use axum::Router;

use crate::nav::NavEntry;
use crate::state::AppState;

pub use pages::set_lag_gauges;

pub const NAV: &[NavEntry] = &[NavEntry::operator("events", "Events", "/admin/events")];

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin/events", get(pages::page))
        .route("/admin/events/{consumer}/{seq}/retry", post(pages::retry))
}
