//! Backups: the list and their checks (`/admin/backups`).

use axum::Router;

use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
}
