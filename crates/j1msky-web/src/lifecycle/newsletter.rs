//! Lifecycle: the newsletter. `/admin/lifecycle/newsletter` lists newsletters and
//! composes a draft; a draft's page previews exactly what will be queued (rendered from
//! the `newsletter` template with the next office-hours slot and the new case studies),
//! test-sends it to one address, and sends it after a confirmation; progress is counted
//! from the message queue.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use j1msky_accounts::sessions::Session;
use j1msky_audit::Actor;
use j1msky_lifecycle::newsletter;
use j1msky_lifecycle::LifecycleError;
use minijinja::context;
use serde::Deserialize;

use super::todos::fail;
use crate::auth::OperatorUser;
use crate::render::page_with_status;
use crate::state::AppState;

const SHOWN: i64 = 100;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin/lifecycle/newsletter", get(list).post(create))
        .route("/admin/lifecycle/newsletter/{id}", get(show))
        .route("/admin/lifecycle/newsletter/{id}/send", post(send))
        .route("/admin/lifecycle/newsletter/{id}/send-test", post(send_test))
}

async fn list(State(state): State<AppState>, OperatorUser(s): OperatorUser) -> Response {
    render_list(&state, &s, "", "", None, StatusCode::OK).await
}

async fn render_list(
    state: &AppState,
    s: &Session,
    subject: &str,
    body: &str,
    flash: Option<String>,
    status: StatusCode,
) -> Response {
    let office = newsletter::office_hours(&state.catalogue, state.now())
        .map(|(when, zone, minutes, url)| context! { when, zone, minutes, url });
    match (newsletter::list(&state.db, SHOWN).await, newsletter::audience(&state.db).await) {
        (Ok(all), Ok(audience)) => page_with_status(
            state,
            Some(s),
            status,
            "admin/newsletters.html",
            "lifecycle",
            context! { newsletters => all, audience, office, subject, body, flash, flash_kind => "error" },
        ),
        (Err(e), _) | (_, Err(e)) => fail(state, s, "newsletters", e),
    }
}

#[derive(Deserialize)]
pub struct ComposeForm {
    #[serde(default)]
    subject: String,
    #[serde(default)]
    body: String,
}

/// `POST /admin/lifecycle/newsletter`: saves a draft, then shows its preview.
async fn create(State(state): State<AppState>, OperatorUser(s): OperatorUser, Form(f): Form<ComposeForm>) -> Response {
    match newsletter::create(&state.db, &Actor::user(&s.user.id), &f.subject, &f.body, state.now()).await {
        Ok(n) => Redirect::to(&format!("/admin/lifecycle/newsletter/{}", n.id)).into_response(),
        Err(e @ LifecycleError::Invalid { .. }) => {
            render_list(&state, &s, &f.subject, &f.body, Some(e.to_string()), StatusCode::UNPROCESSABLE_ENTITY).await
        }
        Err(e) => fail(&state, &s, "saving a newsletter", e),
    }
}

async fn show(State(state): State<AppState>, OperatorUser(s): OperatorUser, Path(id): Path<String>) -> Response {
    render_one(&state, &s, &id, None, StatusCode::OK).await
}

async fn render_one(state: &AppState, s: &Session, id: &str, flash: Option<String>, status: StatusCode) -> Response {
    let n = match newsletter::get(&state.db, id).await {
        Ok(n) => n,
        Err(e) => return fail(state, s, "newsletter", e),
    };
    let audience = match newsletter::audience(&state.db).await {
        Ok(a) => a,
        Err(e) => return fail(state, s, "newsletter", e),
    };
    let (preview, preview_error) = match &state.lifecycle {
        Some(ctx) => match newsletter::render(ctx, &n, state.now()).await {
            Ok(p) => (Some(context! { subject => p.subject, text => p.text, html => p.html }), None),
            Err(e) => (None, Some(e.to_string())),
        },
        None => (None, Some("mail is not configured on this server: nothing can be previewed or sent".to_string())),
    };
    let flash_kind = if flash.as_deref().is_some_and(|f| f.starts_with("test sent")) { "ok" } else { "error" };
    page_with_status(
        state,
        Some(s),
        status,
        "admin/newsletter.html",
        "lifecycle",
        context! { newsletter => n, audience, flash, flash_kind, preview, preview_error },
    )
}

#[derive(Deserialize)]
pub struct SendTestForm {
    #[serde(default)]
    to: String,
}

/// `POST /admin/lifecycle/newsletter/{id}/send-test`: the newsletter as it would be
/// queued now, to one address, marked as a test; nothing is queued.
async fn send_test(
    State(state): State<AppState>,
    OperatorUser(s): OperatorUser,
    Path(id): Path<String>,
    Form(f): Form<SendTestForm>,
) -> Response {
    let Some(ctx) = state.lifecycle.clone() else {
        let msg = "mail is not configured on this server".to_string();
        return render_one(&state, &s, &id, Some(msg), StatusCode::SERVICE_UNAVAILABLE).await;
    };
    let to = f.to.trim();
    match newsletter::send_test(&ctx, &id, to).await {
        Ok(message_id) => {
            tracing::info!(newsletter = %id, %to, by = %s.user.id, %message_id, "newsletter test sent");
            render_one(&state, &s, &id, Some(format!("test sent to {to}")), StatusCode::OK).await
        }
        Err(e @ (LifecycleError::Invalid { .. } | LifecycleError::Template { .. })) => {
            render_one(&state, &s, &id, Some(e.to_string()), StatusCode::UNPROCESSABLE_ENTITY).await
        }
        Err(e) => fail(&state, &s, "sending a test newsletter", e),
    }
}

#[derive(Deserialize)]
pub struct SendForm {
    #[serde(default)]
    confirm: String,
}

/// `POST /admin/lifecycle/newsletter/{id}/send`: needs the confirmation box ticked.
async fn send(
    State(state): State<AppState>,
    OperatorUser(s): OperatorUser,
    Path(id): Path<String>,
    Form(f): Form<SendForm>,
) -> Response {
    if f.confirm != "yes" {
        let msg = "confirm: tick the box to confirm sending to every recipient".to_string();
        return render_one(&state, &s, &id, Some(msg), StatusCode::UNPROCESSABLE_ENTITY).await;
    }
    match newsletter::send(&state.db, &Actor::user(&s.user.id), &id, state.now()).await {
        Ok(_) => Redirect::to(&format!("/admin/lifecycle/newsletter/{id}")).into_response(),
        Err(e) => fail(&state, &s, "sending a newsletter", e),
    }
}
