//! `/admin/review/morning` and `/admin/review/evening` (with the what-if). (Being built.)

use axum::Router;

use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
}
