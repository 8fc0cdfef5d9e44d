//! Lifecycle: journeys and their counts, messages and suppressions, staff to-dos,
//! surveys and the newsletter; the public one-click unsubscribe and survey links.

mod journeys;
mod messages;
mod newsletter;
mod preferences;
mod surveys;
mod todos;

use axum::Router;

use crate::nav::NavEntry;
use crate::state::AppState;

pub use todos::with_counts as with_todo_counts;

pub const NAV: &[NavEntry] = &[
    NavEntry::operator("lifecycle", "Lifecycle", "/admin/lifecycle"),
    NavEntry::operator("todos", "To-dos", "/admin/todos"),
];

pub fn router() -> Router<AppState> {
    Router::new()
        .merge(journeys::router())
        .merge(messages::router())
        .merge(todos::router())
        .merge(surveys::router())
        .merge(newsletter::router())
        .merge(preferences::router())
}
