//! Lifecycle: journeys and their counts, messages and suppressions, staff to-dos,
//! surveys and the newsletter; the public one-click unsubscribe and survey links.

mod journeys;
mod messages;
mod newsletter;
mod surveys;
mod todos;

use axum::Router;

use crate::nav::NavEntry;
use crate::state::AppState;

pub const NAV: &[NavEntry] = &[NavEntry::operator("lifecycle", "Lifecycle", "/admin/lifecycle")];

pub fn router() -> Router<AppState> {
    Router::new()
        .merge(journeys::router())
        .merge(messages::router())
        .merge(todos::router())
        .merge(surveys::router())
        .merge(newsletter::router())
}
