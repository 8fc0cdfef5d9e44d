//! Configuration history: changes, diffs and rollback (`/admin/config`).

use axum::Router;

use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
}
