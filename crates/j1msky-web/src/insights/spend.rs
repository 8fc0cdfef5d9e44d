//! `/admin/spend`: acquisition spend per month, behind CAC. (Being built.)

use axum::Router;

use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
}
