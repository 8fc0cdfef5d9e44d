//! Alerts: the list by status with each channel's delivery (mail, webhook: state,
//! attempts, last error), and acknowledge / resolve buttons (CSRF forms, audited by
//! `audit::alerts`, the same functions as `j1msky alert ack|resolve`) on `/admin/alerts`.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use j1msky_audit::alerts::{self, Status};
use j1msky_audit::Actor;
use minijinja::context;
use serde::Deserialize;

use crate::auth::OperatorUser;
use crate::render::{error_page, internal_error, page};
use crate::state::AppState;

/// Alerts listed at most.
const SHOWN: i64 = 200;
const STATUSES: [&str; 4] = ["open", "acknowledged", "resolved", "all"];

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin/alerts", get(list))
        .route("/admin/alerts/{id}/ack", post(ack))
        .route("/admin/alerts/{id}/resolve", post(resolve))
}

#[derive(Deserialize)]
pub struct ListQuery {
    #[serde(default = "open")]
    status: String,
}

fn open() -> String {
    "open".into()
}

/// `GET /admin/alerts[?status=open|acknowledged|resolved|all]`.
async fn list(State(state): State<AppState>, OperatorUser(s): OperatorUser, Query(q): Query<ListQuery>) -> Response {
    let Some(status) = Status::parse(&q.status) else {
        let message = format!("status: `{}` is not one of {}", q.status, STATUSES.join(", "));
        return error_page(&state, Some(&s), StatusCode::BAD_REQUEST, &message);
    };
    let listed = match alerts::list(&state.db, status, SHOWN).await {
        Ok(l) => l,
        Err(e) => return internal_error(&state, Some(&s), "listing alerts", &e),
    };
    let ids: Vec<String> = listed.iter().map(|a| a.id.clone()).collect();
    let deliveries = match j1msky_ops::notify::deliveries(&state.db, &ids).await {
        Ok(d) => d,
        Err(e) => return internal_error(&state, Some(&s), "listing alert deliveries", &e),
    };
    let rows: Vec<_> = listed
        .iter()
        .map(|a| {
            let mine: Vec<_> = deliveries.iter().filter(|d| d.alert_id == a.id).collect();
            context! { alert => a, status => a.status(), deliveries => mine }
        })
        .collect();
    let ctx = context! { rows, status => q.status, statuses => STATUSES };
    page(&state, Some(&s), "admin/alerts.html", "alerts", ctx)
}

/// `POST /admin/alerts/{id}/ack`.
async fn ack(State(state): State<AppState>, OperatorUser(s): OperatorUser, Path(id): Path<String>) -> Response {
    let done = alerts::acknowledge(&state.db, &Actor::user(&s.user.id), &id, state.now()).await;
    after(&state, &s, &id, done)
}

/// `POST /admin/alerts/{id}/resolve`.
async fn resolve(State(state): State<AppState>, OperatorUser(s): OperatorUser, Path(id): Path<String>) -> Response {
    let done = alerts::resolve(&state.db, &Actor::user(&s.user.id), &id, state.now()).await;
    after(&state, &s, &id, done)
}

fn after(
    state: &AppState,
    s: &j1msky_accounts::sessions::Session,
    id: &str,
    done: Result<Option<alerts::AlertRow>, j1msky_db::DbError>,
) -> Response {
    match done {
        Ok(Some(a)) => Redirect::to(&format!("/admin/alerts?status={}#alert-{}", a.status(), a.id)).into_response(),
        Ok(None) => error_page(state, Some(s), StatusCode::NOT_FOUND, &format!("alert `{id}` not found")),
        Err(e) => internal_error(state, Some(s), "changing an alert", &e),
    }
}
