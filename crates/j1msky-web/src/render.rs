//! Page rendering: one shared layout around each page's template.

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use j1msky_accounts::sessions::Session;
use j1msky_core::vocab::UserRole;
use minijinja::{context, Value};

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
        todo_counts => crate::lifecycle::header_counts().map(|c| context! { open => c.open, overdue => c.overdue }),
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

/// A 500 page for an unexpected failure, which is logged with `what` (the page).
pub fn internal_error(state: &AppState, session: Option<&Session>, what: &str, e: &dyn std::fmt::Display) -> Response {
    tracing::error!(error = %e, page = what, "page failed");
    error_page(state, session, StatusCode::INTERNAL_SERVER_ERROR, "Something went wrong; it has been logged.")
}

/// An error page in the shared layout.
pub fn error_page(state: &AppState, session: Option<&Session>, status: StatusCode, message: &str) -> Response {
    let ctx = context! { status => status.as_u16(), message };
    page_with_status(state, session, status, "error.html", "", ctx)
}
