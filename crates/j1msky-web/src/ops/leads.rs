//! Leads: qualify, suggest a plan, start a trial (`/admin/leads`).

use axum::Router;

use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
}
