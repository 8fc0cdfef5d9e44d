//! Page rendering: minijinja templates compiled into the binary, one shared layout.

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use j1msky_accounts::sessions::Session;
use minijinja::{context, Environment, Value};

use crate::state::AppState;

/// Operator pages beyond Customers, as (id, label, href); later features add theirs here.
const ADMIN_NAV: &[(&str, &str, &str)] = &[
    ("queue", "Queue", "/admin/queue"),
    ("gateway", "Gateway", "/admin/gateway"),
    ("events", "Events", "/admin/events"),
];
/// Customer pages beyond Account.
const APP_NAV: &[(&str, &str, &str)] = &[("tasks", "Tasks", "/app/tasks"), ("billing", "Billing", "/app/billing")];

macro_rules! templates {
    ($env:ident, $($name:literal),+ $(,)?) => {
        $(
            if let Err(e) = $env.add_template($name, include_str!(concat!("../templates/", $name))) {
                // Templates are compiled in; a broken one is caught by every page test.
                tracing::error!(template = $name, error = %e, "template does not compile");
            }
        )+
    };
}

/// The template environment.
pub fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    templates!(
        env,
        "layout.html",
        "login.html",
        "error.html",
        "admin/customers.html",
        "admin/customer.html",
        "admin/gateway.html",
        "app/home.html",
        "app/tasks.html",
        "app/billing.html",
        "app/billing_offer.html",
        "app/task.html",
        "admin/queue.html",
        "admin/events.html"
    );
    env.add_filter("usd", |micros: i64| j1msky_core::Money::from_micros(micros).to_string());
    env.add_filter("age", |micros: i64| {
        let s = micros.max(0) / 1_000_000;
        if s < 120 {
            format!("{s} s")
        } else if s < 7200 {
            format!("{} min", s / 60)
        } else {
            format!("{} h", s / 3600)
        }
    });
    env.add_filter("datetime", |micros: i64| {
        j1msky_core::clock::format_utc(micros).replace('T', " ").replace('Z', " UTC")
    });
    env
}

fn nav(items: &[(&str, &str, &str)]) -> Vec<Value> {
    items.iter().map(|(id, label, href)| context! { id, label, href }).collect()
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
        admin_nav => nav(ADMIN_NAV),
        app_nav => nav(APP_NAV),
        cost_mode => crate::cost_banner::banner_mode().map(|(m, by)| context! { mode => m.as_str(), set_by => by }),
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
