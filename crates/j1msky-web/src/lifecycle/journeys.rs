//! `/admin/lifecycle`: the journeys with their enrollments counted per step and state,
//! a preview of each template (sample context, or a chosen customer's own) and a test
//! send to an address (operator only; the form carries the CSRF token).

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Form, Router};
use j1msky_accounts::sessions::Session;
use minijinja::context;
use serde::Deserialize;

use crate::auth::OperatorUser;
use crate::render::{error_page, internal_error, page_with_status};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/admin/lifecycle", get(page)).route("/admin/lifecycle/send-test", post(send_test))
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct PreviewQuery {
    template: Option<String>,
    customer: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(super) struct SendTestForm {
    template: String,
    to: String,
    #[serde(default)]
    customer: Option<String>,
}

fn non_empty(s: Option<String>) -> Option<String> {
    s.map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

/// `GET /admin/lifecycle[?template=T&customer=C]`.
async fn page(State(state): State<AppState>, OperatorUser(s): OperatorUser, Query(q): Query<PreviewQuery>) -> Response {
    render(&state, &s, non_empty(q.template), non_empty(q.customer), None).await
}

async fn render(
    state: &AppState,
    s: &Session,
    template: Option<String>,
    customer: Option<String>,
    flash: Option<String>,
) -> Response {
    let counts = match j1msky_lifecycle::journeys::counts(&state.db).await {
        Ok(c) => c,
        Err(e) => return internal_error(state, Some(s), "journey enrollments", &e),
    };
    let journeys: Vec<_> = state
        .catalogue
        .lifecycle
        .journeys
        .iter()
        .map(|(id, j)| {
            let here: Vec<_> = counts.iter().filter(|c| &c.journey == id).collect();
            context! {
                id, version => j.version, entry => j.entry.on, exit_on => j.exit_on, description => j.description,
                steps => j.steps.iter().map(|st| st.id().to_string()).collect::<Vec<_>>(),
                templates => j.templates(),
                counts => here,
            }
        })
        .collect();
    let (templates, mail, preview, preview_error) = match &state.lifecycle {
        Some(ctx) => {
            let names = j1msky_lifecycle::templates::list(&ctx.templates_dir);
            let (preview, error) = match &template {
                Some(t) => match j1msky_lifecycle::journeys::preview::preview(ctx, t, customer.as_deref()).await {
                    Ok(r) => (Some(context! { subject => r.subject, text => r.text, html => r.html }), None),
                    Err(e) => (None, Some(e.to_string())),
                },
                None => (None, None),
            };
            (names, true, preview, error)
        }
        None => (Vec::new(), false, None, None),
    };
    page_with_status(
        state,
        Some(s),
        StatusCode::OK,
        "admin/lifecycle_journeys.html",
        "lifecycle",
        context! { journeys, templates, mail, preview, preview_error, template, customer, flash },
    )
}

/// `POST /admin/lifecycle/send-test`: renders a template and sends it to one address.
async fn send_test(
    State(state): State<AppState>,
    OperatorUser(s): OperatorUser,
    Form(form): Form<SendTestForm>,
) -> Response {
    let Some(ctx) = state.lifecycle.clone() else {
        return error_page(&state, Some(&s), StatusCode::SERVICE_UNAVAILABLE, "mail is not configured on this server");
    };
    let customer = non_empty(form.customer);
    let to = form.to.trim().to_string();
    match j1msky_lifecycle::journeys::preview::send_test(&ctx, form.template.trim(), &to, customer.as_deref()).await {
        Ok(id) => {
            tracing::info!(template = %form.template, %to, by = %s.user.id, message_id = %id, "lifecycle test mail sent");
            let flash = format!("test of {} sent to {to}", form.template.trim());
            render(&state, &s, Some(form.template.trim().to_string()), customer, Some(flash)).await
        }
        Err(
            e @ (j1msky_lifecycle::LifecycleError::Invalid { .. } | j1msky_lifecycle::LifecycleError::Template { .. }),
        ) => error_page(&state, Some(&s), StatusCode::UNPROCESSABLE_ENTITY, &e.to_string()),
        Err(j1msky_lifecycle::LifecycleError::Accounts(j1msky_accounts::AccountsError::NotFound(what))) => {
            error_page(&state, Some(&s), StatusCode::NOT_FOUND, &format!("{what} not found"))
        }
        Err(e) => internal_error(&state, Some(&s), "sending a test mail", &e),
    }
}
