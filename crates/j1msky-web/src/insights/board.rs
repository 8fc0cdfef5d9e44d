//! The board: `/admin` (tiles, charts, filters, drill-down) and its CSV exports. (Being built.)

use axum::Router;

use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
}
