//! Page rendering: one shared layout around each page's template.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use j1msky_accounts::sessions::Session;
use j1msky_core::vocab::UserRole;
use minijinja::{context, Value};

use crate::error::ApiError;
use crate::nav::Audience;
use crate::state::AppState;

/// The navigation entries the session's user sees.
fn nav(state: &AppState, session: Option<&Session>) -> Vec<Value> {
    let Some(s) = session else { return Vec::new() };
    let audience = if s.user.role == UserRole::Operator { Audience::Operator } else { Audience::Customer };
    state
        .nav
        .iter()
        .filter(|e| e.audience == audience)
        .map(|e| context! { id => e.id, label => e.label, href => e.href })
        .collect()
}

/// Renders `template` with the layout's context (user, CSRF token, navigation) merged in.
pub fn page(state: &AppState, session: Option<&Session>, template: &str, section: &str, ctx: Value) -> Response {
    page_with_status(state, session, StatusCode::OK, template, section, ctx)
}

/// Like [`page`] with a status other than 200.
pub fn page_with_status(
    state: &AppState,
    session: Option<&Session>,
    status: StatusCode,
    template: &str,
    section: &str,
    ctx: Value,
) -> Response {
    let base = context! {
        user => session.map(|s| context! { email => s.user.email.clone(), role => s.user.role.as_str(), id => s.user.id.clone() }),
        csrf => session.map(|s| s.csrf_token.clone()),
        section,
        nav => nav(state, session),
        cost_mode => crate::cost_banner::banner_mode().map(|(m, by)| context! { mode => m.as_str(), set_by => by }),
        todo_counts => crate::todo_counts::header_counts().map(|c| context! { open => c.open, overdue => c.overdue }),
    };
    let merged = context! { ..ctx, ..base };
    match state.templates.get_template(template).and_then(|t| t.render(merged)) {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => {
            tracing::error!(template, error = %e, "page failed to render");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                Html("<h1>500</h1><p>The page failed to render; it has been logged.</p>".to_string()),
            )
                .into_response()
        }
    }
}

/// A 500 page for an unexpected failure (a `DbError`, say, which no domain error wraps),
/// logged with `what` (the page): the same answer as [`error_page_for`] gives an internal
/// domain error.
pub fn internal_error(state: &AppState, session: Option<&Session>, what: &str, e: &dyn std::fmt::Display) -> Response {
    error_page_for(state, session, ApiError::internal(what, e))
}

/// An error page in the shared layout.
pub fn error_page(state: &AppState, session: Option<&Session>, status: StatusCode, message: &str) -> Response {
    let ctx = context! { status => status.as_u16(), message };
    page_with_status(state, session, status, "error.html", "", ctx)
}

/// The error page for a domain error, through its one mapping in [`crate::error`]: the
/// status, code and message the JSON API gives for the same error.
pub fn error_page_for(state: &AppState, session: Option<&Session>, e: impl Into<ApiError>) -> Response {
    let e = e.into();
    let ctx = context! { status => e.status.as_u16(), message => e.message.clone(), code => e.code };
    let resp = page_with_status(state, session, e.status, "error.html", "", ctx);
    stamp(resp, &e)
}

/// Marks a page answering a domain error (the error page, or a form shown again with the
/// error's message and status) with the error's code in `x-error-code`, as the JSON body
/// carries it, and its `Retry-After` when it has one.
pub fn stamp(mut resp: Response, e: &ApiError) -> Response {
    if let Ok(v) = HeaderValue::from_str(e.code) {
        resp.headers_mut().insert("x-error-code", v);
    }
    if let Some(v) = e.retry_after_secs.and_then(|s| HeaderValue::from_str(&s.to_string()).ok()) {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    resp
}
