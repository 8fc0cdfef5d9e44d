//! The public lead form (`/start`), password set and reset by one-time link.

use axum::Router;

use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
}
