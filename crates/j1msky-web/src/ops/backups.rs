//! Backups: the list and their checks (`/admin/backups`): each backup's kind, status,
//! size, SHA-256, copy and error, and the restores this database came from.

use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use minijinja::context;

use crate::auth::OperatorUser;
use crate::render::{internal_error, page};
use crate::state::AppState;

/// Backups listed on the page at most (pruned ones included).
const SHOWN: i64 = 200;

pub fn router() -> Router<AppState> {
    Router::new().route("/admin/backups", get(list))
}

/// `GET /admin/backups`.
async fn list(State(state): State<AppState>, OperatorUser(s): OperatorUser) -> Response {
    let backups = j1msky_ops::backup::list(&state.db, true, SHOWN).await;
    let restores = j1msky_ops::backup::restores(&state.db).await;
    match (backups, restores) {
        (Ok(backups), Ok(restores)) => {
            let failed = backups.iter().take_while(|b| b.status != "done").filter(|b| b.status == "failed").count();
            page(&state, Some(&s), "admin/backups.html", "backups", context! { backups, restores, failed })
        }
        (Err(e), _) | (_, Err(e)) => internal_error(&state, Some(&s), "backups", &e),
    }
}
