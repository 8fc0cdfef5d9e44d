//! Tasks: customers' task pages, the operators' queue, and `/api/v1/tasks`.

pub(crate) mod api;
mod pages;

use axum::routing::{get, post};
use axum::Router;

use crate::nav::NavEntry;
use crate::state::AppState;

pub const NAV: &[NavEntry] =
    &[NavEntry::operator("queue", "Queue", "/admin/queue"), NavEntry::customer("tasks", "Tasks", "/app/tasks")];

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/app/tasks", get(pages::app_tasks).post(pages::app_submit))
        .route("/app/tasks/{id}", get(pages::app_task))
        .route("/app/tasks/{id}/cancel", post(pages::app_cancel))
        .route("/app/teams", post(pages::app_choose_teams))
        .route("/admin/queue", get(pages::admin_queue))
        .route("/admin/queue/{id}/retry", post(pages::admin_retry))
        .route("/admin/queue/{id}/cancel", post(pages::admin_cancel))
        .route("/api/v1/tasks", get(api::list).post(api::submit))
        .route("/api/v1/tasks/{id}", get(api::show))
        .route("/api/v1/tasks/{id}/cancel", post(api::cancel))
        .route("/api/v1/templates", get(api::templates))
}
