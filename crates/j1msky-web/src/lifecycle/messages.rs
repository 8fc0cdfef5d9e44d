//! Lifecycle: the message queue on `/admin/lifecycle/messages` (filter by state and
//! customer; each message's text and HTML body shown escaped, and its `.eml` when the
//! file transport wrote one), the suppression list on `/admin/lifecycle/suppressions`
//! (add and remove, audited), and the public one-click unsubscribe `/u/{token}`: `GET`
//! only shows a confirm button (mail scanners follow links), `POST` unsubscribes and is
//! the one path the CSRF layer lets through without a token (RFC 8058 one-click POSTs come
//! from mail clients that carry no cookie). Unknown tokens are throttled per client address.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Form, Router};
use j1msky_accounts::sessions::Session;
use j1msky_accounts::throttle::{self, Admission, Policy};
use j1msky_audit::Actor;
use j1msky_core::clock::SECOND;
use j1msky_lifecycle::delivery::{self, Category, SuppressReason};
use j1msky_lifecycle::transport::Files;
use minijinja::context;
use serde::Deserialize;

use super::todos::fail;
use crate::auth::{ClientIp, MaybeSession, OperatorUser};
use crate::render::{error_page, internal_error, page_with_status};
use crate::state::AppState;

/// Bad unsubscribe tokens one client address may try: 20 in 15 minutes, then 15 minutes off.
const GUESSES: Policy = Policy { max_failures: 20, window_micros: 900 * SECOND, lock_micros: 900 * SECOND };
/// Messages listed on the page at most.
const SHOWN: i64 = 300;
/// The largest `.eml` shown inline.
const EML_SHOWN: u64 = 256 * 1024;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin/lifecycle/messages", get(list))
        .route("/admin/lifecycle/messages/{id}", get(show))
        .route("/admin/lifecycle/messages/{id}/requeue", post(requeue))
        .route("/admin/lifecycle/suppressions", get(suppressions).post(add_suppression))
        .route("/admin/lifecycle/suppressions/remove", post(remove_suppression))
        .route("/u/{token}", get(unsubscribe_page).post(unsubscribe))
}

#[derive(Deserialize, Default)]
pub struct ListQuery {
    #[serde(default)]
    state: String,
    #[serde(default)]
    customer: String,
}

/// `GET /admin/lifecycle/messages[?state=S&customer=C]`.
async fn list(State(state): State<AppState>, OperatorUser(s): OperatorUser, Query(q): Query<ListQuery>) -> Response {
    list_page(&state, &s, &q, None, StatusCode::OK).await
}

async fn list_page(
    state: &AppState,
    s: &Session,
    q: &ListQuery,
    flash: Option<String>,
    status: StatusCode,
) -> Response {
    let filter = Some(q.state.trim()).filter(|v| !v.is_empty());
    let customer = Some(q.customer.trim()).filter(|v| !v.is_empty());
    match delivery::list(&state.db, filter, customer, SHOWN).await {
        Ok(messages) => page_with_status(
            state,
            Some(s),
            status,
            "admin/lifecycle_messages.html",
            "lifecycle",
            context! {
                messages, filter, customer, states => delivery::STATES, requeueable => delivery::REQUEUEABLE,
                flash, flash_kind => "error",
                mail_dir => state.lifecycle.as_ref().and_then(|c| c.transport.mail_dir()).map(|d| d.display().to_string()),
            },
        ),
        Err(e) => fail(state, s, "messages", e),
    }
}

#[derive(Deserialize)]
pub struct RequeueForm {
    #[serde(default)]
    confirm: String,
}

/// `POST /admin/lifecycle/messages/{id}/requeue`: sends an `unknown` or `failed` message
/// again (audited); needs the box ticked that says the recipient may get it twice.
async fn requeue(
    State(state): State<AppState>,
    OperatorUser(s): OperatorUser,
    Path(id): Path<String>,
    Form(f): Form<RequeueForm>,
) -> Response {
    let q = ListQuery::default();
    if f.confirm != "yes" {
        let msg = "confirm: tick the box saying the recipient may get this message twice".to_string();
        return list_page(&state, &s, &q, Some(msg), StatusCode::UNPROCESSABLE_ENTITY).await;
    }
    match delivery::requeue(&state.db, &Actor::user(&s.user.id), &id, state.now()).await {
        Ok(_) => Redirect::to(&format!("/admin/lifecycle/messages/{id}")).into_response(),
        Err(e @ j1msky_lifecycle::LifecycleError::Conflict(_)) => {
            list_page(&state, &s, &q, Some(e.to_string()), StatusCode::CONFLICT).await
        }
        Err(e) => fail(&state, &s, "requeueing a message", e),
    }
}

/// The `.eml` the file transport wrote for a message: `(path, text)` when it exists.
async fn eml(state: &AppState, message_id: &str) -> Option<(String, String)> {
    let dir = state.lifecycle.as_ref()?.transport.mail_dir()?;
    let path = dir.join(Files::file_name(message_id));
    let meta = tokio::fs::metadata(&path).await.ok()?;
    let text = if meta.len() > EML_SHOWN {
        format!("({} bytes: too large to show here)", meta.len())
    } else {
        match tokio::fs::read(&path).await {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(e) => format!("(cannot read: {e})"),
        }
    };
    Some((path.display().to_string(), text))
}

/// `GET /admin/lifecycle/messages/{id}`: one message, its bodies escaped, its `.eml`.
async fn show(State(state): State<AppState>, OperatorUser(s): OperatorUser, Path(id): Path<String>) -> Response {
    let mut message = match delivery::get(&state.db, &id).await {
        Ok(m) => m,
        Err(e) => return fail(&state, &s, "message", e),
    };
    // A one-time link (a password to set, a survey to answer) is the customer's alone.
    let text = delivery::without_link_tokens(&message.body_text);
    let secret = text != message.body_text;
    message.body_text = text;
    message.body_html = delivery::without_link_tokens(&message.body_html);
    let file = eml(&state, &message.message.message_id).await.map(|(path, text)| {
        // The file may carry the link encoded (base64, quoted-printable): not shown then.
        let shown = if secret { "(not shown: it carries a one-time link)".to_string() } else { text };
        (path, delivery::without_link_tokens(&shown))
    });
    let file_transport = state.lifecycle.as_ref().is_some_and(|c| c.transport.mail_dir().is_some());
    page_with_status(
        &state,
        Some(&s),
        StatusCode::OK,
        "admin/lifecycle_message.html",
        "lifecycle",
        context! {
            message, file_transport, requeueable => delivery::REQUEUEABLE,
            eml_path => file.as_ref().map(|f| f.0.clone()), eml => file.map(|f| f.1),
        },
    )
}

async fn suppression_page(state: &AppState, s: &Session, flash: Option<String>, status: StatusCode) -> Response {
    match delivery::suppressions(&state.db, SHOWN).await {
        Ok(suppressions) => page_with_status(
            state,
            Some(s),
            status,
            "admin/lifecycle_suppressions.html",
            "lifecycle",
            context! { suppressions, flash },
        ),
        Err(e) => fail(state, s, "suppressions", e),
    }
}

/// `GET /admin/lifecycle/suppressions`.
async fn suppressions(State(state): State<AppState>, OperatorUser(s): OperatorUser) -> Response {
    suppression_page(&state, &s, None, StatusCode::OK).await
}

#[derive(Deserialize)]
pub struct SuppressForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    detail: String,
}

/// `POST /admin/lifecycle/suppressions`: adds an address (audited).
async fn add_suppression(
    State(state): State<AppState>,
    OperatorUser(s): OperatorUser,
    Form(form): Form<SuppressForm>,
) -> Response {
    let detail = form.detail.trim();
    if detail.chars().count() > 500 {
        let msg = "detail: at most 500 characters".to_string();
        return suppression_page(&state, &s, Some(msg), StatusCode::UNPROCESSABLE_ENTITY).await;
    }
    let actor = Actor::user(&s.user.id);
    match delivery::suppress(&state.db, &actor, &form.email, SuppressReason::Operator, detail, state.now()).await {
        Ok(_) => Redirect::to("/admin/lifecycle/suppressions").into_response(),
        Err(e @ j1msky_lifecycle::LifecycleError::Invalid { .. }) => {
            suppression_page(&state, &s, Some(e.to_string()), StatusCode::UNPROCESSABLE_ENTITY).await
        }
        Err(e) => fail(&state, &s, "suppressing an address", e),
    }
}

/// `POST /admin/lifecycle/suppressions/remove`: removes an address (audited).
async fn remove_suppression(
    State(state): State<AppState>,
    OperatorUser(s): OperatorUser,
    Form(form): Form<SuppressForm>,
) -> Response {
    match delivery::unsuppress(&state.db, &Actor::user(&s.user.id), &form.email, state.now()).await {
        Ok(true) => Redirect::to("/admin/lifecycle/suppressions").into_response(),
        Ok(false) => {
            let msg = format!("email: {} is not on the suppression list", form.email.trim());
            suppression_page(&state, &s, Some(msg), StatusCode::NOT_FOUND).await
        }
        Err(e @ j1msky_lifecycle::LifecycleError::Invalid { .. }) => {
            suppression_page(&state, &s, Some(e.to_string()), StatusCode::UNPROCESSABLE_ENTITY).await
        }
        Err(e) => fail(&state, &s, "removing a suppression", e),
    }
}

fn session(m: Option<Extension<MaybeSession>>) -> Option<std::sync::Arc<Session>> {
    m.and_then(|Extension(m)| m.0)
}

/// The category a token unsubscribes from, counting bad tokens against the client address.
async fn check(state: &AppState, ip: &str, token: &str, s: Option<&Session>) -> Result<Category, Response> {
    let scope = format!("unsubscribe:{ip}");
    match throttle::admit(&state.db, &scope, GUESSES, state.now()).await {
        Ok(Admission::Admitted) => {}
        Ok(Admission::Refused { retry_after_secs }) => {
            let msg = format!("Too many invalid links. Try again in {} minute(s).", (retry_after_secs + 59) / 60);
            return Err(error_page(state, s, StatusCode::TOO_MANY_REQUESTS, &msg));
        }
        Err(e) => return Err(internal_error(state, s, "unsubscribe throttle", &e)),
    }
    match delivery::verify_token(&state.db, token, state.now()).await {
        Ok(Some((_, category))) if category != Category::Transactional => {
            if let Err(e) = throttle::refund(&state.db, &scope, GUESSES).await {
                tracing::warn!(error = %e, "refunding an unsubscribe attempt");
            }
            Ok(category)
        }
        Ok(_) => Err(error_page(state, s, StatusCode::NOT_FOUND, "This link is not valid.")),
        Err(e) => Err(internal_error(state, s, "unsubscribe link", &e)),
    }
}

/// `GET /u/{token}`: a confirm button; nothing changes.
async fn unsubscribe_page(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    m: Option<Extension<MaybeSession>>,
    Path(token): Path<String>,
) -> Response {
    let s = session(m);
    match check(&state, &ip, &token, s.as_deref()).await {
        Ok(category) => page_with_status(
            &state,
            s.as_deref(),
            StatusCode::OK,
            "public/unsubscribe.html",
            "",
            context! {
                token, category => category.as_str(), done => false,
                business => state.catalogue.business.name.clone(),
            },
        ),
        Err(resp) => resp,
    }
}

/// `POST /u/{token}`: unsubscribes (RFC 8058 one-click, or the confirm button).
async fn unsubscribe(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    m: Option<Extension<MaybeSession>>,
    Path(token): Path<String>,
) -> Response {
    let s = session(m);
    if let Err(resp) = check(&state, &ip, &token, s.as_deref()).await {
        return resp;
    }
    match delivery::unsubscribe(&state.db, &token, state.now()).await {
        Ok(Some(category)) => page_with_status(
            &state,
            s.as_deref(),
            StatusCode::OK,
            "public/unsubscribe.html",
            "",
            context! {
                token, category => category.as_str(), done => true,
                business => state.catalogue.business.name.clone(),
            },
        ),
        Ok(None) => error_page(&state, s.as_deref(), StatusCode::NOT_FOUND, "This link is not valid."),
        Err(e) => internal_error(&state, s.as_deref(), "unsubscribing", &e),
    }
}
