//! Lifecycle: staff to-dos on `/admin/todos` (due date, customer, reason, assignee,
//! done, reopen) and the open/overdue counts every admin page shows in its header.

use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use j1msky_accounts::sessions::Session;
use j1msky_audit::Actor;
use j1msky_core::vocab::UserRole;
use j1msky_lifecycle::todos::{self, Filter};
use j1msky_lifecycle::LifecycleError;
use minijinja::context;
use serde::Deserialize;

use crate::auth::{MaybeSession, OperatorUser};
use crate::render::{error_page, error_page_for, page_with_status};
use crate::state::AppState;

/// To-dos listed on the page at most.
const SHOWN: i64 = 500;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin/todos", get(page).post(open))
        .route("/admin/todos/{id}/assign", post(assign))
        .route("/admin/todos/{id}/done", post(done))
        .route("/admin/todos/{id}/reopen", post(reopen))
}

/// Middleware: on an operator's `/admin` page, reads the open/overdue counts (one
/// indexed query) for the layout.
pub async fn with_counts(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let operator = req
        .extensions()
        .get::<MaybeSession>()
        .and_then(|m| m.0.as_ref())
        .is_some_and(|s| s.user.role == UserRole::Operator);
    if !operator || !req.uri().path().starts_with("/admin") {
        return next.run(req).await;
    }
    match todos::counts(&state.db, state.now()).await {
        Ok(c) => crate::todo_counts::COUNTS.scope(c, next.run(req)).await,
        Err(e) => {
            tracing::error!(error = %e, "cannot count the to-dos for the header");
            next.run(req).await
        }
    }
}

/// A lifecycle error as a page, through the one mapping of `error.rs` (what was being
/// done is logged with it).
pub(super) fn fail(state: &AppState, s: &Session, what: &str, e: LifecycleError) -> Response {
    tracing::debug!(what, error = %e, "lifecycle page refused");
    error_page_for(state, Some(s), e)
}

#[derive(Deserialize, Default)]
pub struct ListQuery {
    #[serde(default)]
    filter: String,
    #[serde(default)]
    customer: String,
}

/// `GET /admin/todos?filter=open|overdue|done|all&customer=ID`.
async fn page(State(state): State<AppState>, OperatorUser(s): OperatorUser, Query(q): Query<ListQuery>) -> Response {
    render(&state, &s, &q, None, StatusCode::OK).await
}

async fn render(state: &AppState, s: &Session, q: &ListQuery, flash: Option<String>, status: StatusCode) -> Response {
    let filter = if q.filter.is_empty() { Some(Filter::Open) } else { Filter::parse(&q.filter) };
    let Some(filter) = filter else {
        let msg = format!("filter `{}` is not one of open, overdue, done, all", q.filter);
        return error_page(state, Some(s), StatusCode::BAD_REQUEST, &msg);
    };
    let customer = Some(q.customer.trim()).filter(|c| !c.is_empty());
    let now = state.now();
    match todos::list(&state.db, filter, customer, now, SHOWN).await {
        Ok(list) => page_with_status(
            state,
            Some(s),
            status,
            "admin/todos.html",
            "todos",
            context! { todos => list, filter => filter.as_str(), customer, flash, flash_kind => "error", now },
        ),
        Err(e) => fail(state, s, "to-dos", e),
    }
}

#[derive(Deserialize)]
pub struct OpenForm {
    #[serde(default)]
    customer: String,
    #[serde(default)]
    reason: String,
    /// `YYYY-MM-DD` in the business time zone; empty: the catalogue's default delay.
    #[serde(default)]
    due: String,
}

/// `POST /admin/todos`: opens a to-do by hand.
async fn open(State(state): State<AppState>, OperatorUser(s): OperatorUser, Form(form): Form<OpenForm>) -> Response {
    let now = state.now();
    let due_at = match todos::due_at(&state.catalogue, &form.due, now) {
        Ok(d) => d,
        Err(e) => {
            let q = ListQuery::default();
            return render(&state, &s, &q, Some(e.to_string()), StatusCode::UNPROCESSABLE_ENTITY).await;
        }
    };
    let customer = Some(form.customer.trim()).filter(|c| !c.is_empty());
    match todos::open_manual(&state.db, &Actor::user(&s.user.id), customer, &form.reason, due_at, now).await {
        Ok(_) => Redirect::to("/admin/todos").into_response(),
        Err(LifecycleError::Invalid { field, message }) => {
            let q = ListQuery::default();
            render(&state, &s, &q, Some(format!("{field}: {message}")), StatusCode::UNPROCESSABLE_ENTITY).await
        }
        Err(e) => fail(&state, &s, "opening a to-do", e),
    }
}

#[derive(Deserialize)]
pub struct AssignForm {
    #[serde(default)]
    to: String,
}

/// `POST /admin/todos/{id}/assign`: to an operator, by email.
async fn assign(
    State(state): State<AppState>,
    OperatorUser(s): OperatorUser,
    Path(id): Path<String>,
    Form(form): Form<AssignForm>,
) -> Response {
    match todos::assign(&state.db, &Actor::user(&s.user.id), &id, &form.to, state.now()).await {
        Ok(_) => Redirect::to("/admin/todos").into_response(),
        Err(e) => fail(&state, &s, "assigning a to-do", e),
    }
}

/// `POST /admin/todos/{id}/done`: done by the signed-in operator, now.
async fn done(State(state): State<AppState>, OperatorUser(s): OperatorUser, Path(id): Path<String>) -> Response {
    match todos::done(&state.db, &Actor::user(&s.user.id), &id, Some(&s.user.id), state.now()).await {
        Ok(_) => Redirect::to("/admin/todos").into_response(),
        Err(e) => fail(&state, &s, "marking a to-do done", e),
    }
}

/// `POST /admin/todos/{id}/reopen`: open again, due after the catalogue's delay.
async fn reopen(State(state): State<AppState>, OperatorUser(s): OperatorUser, Path(id): Path<String>) -> Response {
    let now = state.now();
    let due = todos::due_at(&state.catalogue, "", now).unwrap_or(now);
    match todos::reopen(&state.db, &Actor::user(&s.user.id), &id, due, now).await {
        Ok(_) => Redirect::to("/admin/todos?filter=open").into_response(),
        Err(e) => fail(&state, &s, "reopening a to-do", e),
    }
}
