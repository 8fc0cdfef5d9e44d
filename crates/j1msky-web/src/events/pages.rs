//! The operator's view of the event backbone: each consumer's cursor, lag and lease,
//! the events consumers failed on, and retrying a parked one; consumer lag in /metrics.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use j1msky_accounts::sessions::Session;
use minijinja::context;

use crate::auth::OperatorUser;
use crate::render::{error_page, internal_error, page_with_status};
use crate::state::AppState;

/// Failing events listed on the page at most.
const FAILURES_SHOWN: i64 = 200;

/// `GET /admin/events`.
pub(super) async fn page(State(state): State<AppState>, OperatorUser(s): OperatorUser) -> Response {
    render(&state, &s, None).await
}

async fn render(state: &AppState, s: &Session, flash: Option<String>) -> Response {
    let status = j1msky_db::consumers::status(&state.db).await;
    let failures = j1msky_db::consumers::failures(&state.db, false, FAILURES_SHOWN).await;
    match (status, failures) {
        (Ok(consumers), Ok(failures)) => page_with_status(
            state,
            Some(s),
            StatusCode::OK,
            "admin/events.html",
            "events",
            context! { consumers, failures, flash, now => state.now() },
        ),
        (Err(e), _) | (_, Err(e)) => internal_error(state, Some(s), "event consumers", &e),
    }
}

/// `POST /admin/events/{consumer}/{seq}/retry`: a parked event gets fresh attempts.
pub(super) async fn retry(
    State(state): State<AppState>,
    OperatorUser(s): OperatorUser,
    Path((consumer, seq)): Path<(String, i64)>,
) -> Response {
    match j1msky_db::consumers::retry(&state.db, &consumer, seq, state.now()).await {
        Ok(true) => {
            tracing::info!(%consumer, seq, by = %s.user.id, "parked event retried");
            render(&state, &s, Some(format!("event {seq} of {consumer} retried"))).await
        }
        Ok(false) => error_page(
            &state,
            Some(&s),
            StatusCode::NOT_FOUND,
            &format!("{consumer} has no parked event {seq} (retried already, or never parked)"),
        ),
        Err(e) => internal_error(&state, Some(&s), "retrying a parked event", &e),
    }
}

/// Sets the lag gauge of every consumer (read when /metrics is scraped).
pub async fn set_lag_gauges(state: &AppState) {
    match j1msky_db::consumers::status(&state.db).await {
        Ok(all) => {
            for c in all {
                metrics::gauge!("event_consumer_lag", "consumer" => c.consumer).set(c.lag as f64);
            }
        }
        Err(e) => tracing::warn!(error = %e, "reading consumer lag for /metrics"),
    }
}
