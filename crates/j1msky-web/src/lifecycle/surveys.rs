//! Lifecycle: surveys. The public `/s/{token}` page answers an NPS or testimonial survey
//! without a login (the token is the capability; unknown tokens are throttled per client
//! address like failed logins); `/admin/lifecycle/surveys` lists answers and approves
//! testimonials the customer consented to publish.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Form, Router};
use axum_extra::extract::CookieJar;
use j1msky_accounts::sessions::Session;
use j1msky_accounts::throttle::{self, Admission, Policy};
use j1msky_audit::Actor;
use j1msky_core::clock::SECOND;
use j1msky_lifecycle::surveys::{self, Answer, Survey};
use j1msky_lifecycle::LifecycleError;
use minijinja::context;
use serde::Deserialize;

use super::todos::fail;
use crate::auth::{ClientIp, MaybeSession, OperatorUser};
use crate::render::{error_page, page_with_status};
use crate::state::AppState;

/// Unknown survey tokens one client address may try: 20 in 15 minutes, then 15 minutes off.
const GUESSES: Policy = Policy { max_failures: 20, window_micros: 900 * SECOND, lock_micros: 900 * SECOND };
const SHOWN: i64 = 300;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/s/{token}", get(show).post(submit))
        .route("/admin/lifecycle/surveys", get(admin))
        .route("/admin/lifecycle/surveys/{id}/approve", post(approve))
}

type Session0 = Option<std::sync::Arc<Session>>;

fn session(m: Option<Extension<MaybeSession>>) -> Session0 {
    m.and_then(|Extension(m)| m.0)
}

/// Finds the survey a token opens, counting unknown tokens against the client address.
async fn find(state: &AppState, ip: &str, token: &str, s: Option<&Session>) -> Result<Survey, Response> {
    let scope = format!("survey:{ip}");
    match throttle::admit(&state.db, &scope, GUESSES, state.now()).await {
        Ok(Admission::Admitted) => {}
        Ok(Admission::Refused { retry_after_secs }) => {
            let msg =
                format!("Too many invalid survey links. Try again in {} minute(s).", (retry_after_secs + 59) / 60);
            return Err(error_page(state, s, StatusCode::TOO_MANY_REQUESTS, &msg));
        }
        Err(e) => return Err(crate::render::internal_error(state, s, "survey throttle", &e)),
    }
    match surveys::by_token(&state.db, token).await {
        Ok(survey) => {
            if let Err(e) = throttle::refund(&state.db, &scope, GUESSES).await {
                tracing::warn!(error = %e, "refunding a survey attempt");
            }
            Ok(survey)
        }
        Err(LifecycleError::NotFound(_)) => {
            Err(error_page(state, s, StatusCode::NOT_FOUND, "This survey link is not valid."))
        }
        Err(e) => Err(crate::render::internal_error(state, s, "survey", &e)),
    }
}

/// The form's CSRF token: the session's, or (no session) a double-submit cookie.
fn csrf(state: &AppState, headers: &HeaderMap, jar: CookieJar, s: Option<&Session>) -> (CookieJar, String) {
    crate::csrf::form_token(state, headers, jar, s)
}

#[allow(clippy::too_many_arguments)]
fn form_page(
    state: &AppState,
    headers: &HeaderMap,
    jar: CookieJar,
    s: Option<&Session>,
    survey: &Survey,
    token: &str,
    error: Option<String>,
    status: StatusCode,
) -> Response {
    let (jar, csrf) = csrf(state, headers, jar, s);
    let valid_days = state.catalogue.lifecycle.engagement.nps_valid_days;
    let closed = surveys::answerable(survey, valid_days, state.now()).err().map(|e| e.to_string());
    let ctx = context! {
        csrf, token, kind => survey.kind.as_str(), customer_name => survey.customer_name.clone(),
        business => state.catalogue.business.name.clone(), closed, answered => survey.answered_at.is_some(),
        flash => error, flash_kind => "error", scores => (0..=10).collect::<Vec<u8>>(),
    };
    (jar, page_with_status(state, s, status, "public/survey.html", "", ctx)).into_response()
}

/// `GET /s/{token}`.
async fn show(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    m: Option<Extension<MaybeSession>>,
    headers: HeaderMap,
    jar: CookieJar,
    Path(token): Path<String>,
) -> Response {
    let s = session(m);
    match find(&state, &ip, &token, s.as_deref()).await {
        Ok(survey) => form_page(&state, &headers, jar, s.as_deref(), &survey, &token, None, StatusCode::OK),
        Err(resp) => resp,
    }
}

#[derive(Deserialize)]
pub struct AnswerForm {
    #[serde(default)]
    score: Option<String>,
    #[serde(default)]
    comment: String,
    #[serde(default)]
    testimonial: String,
    #[serde(default)]
    consent: Option<String>,
}

/// `POST /s/{token}`: answers once.
async fn submit(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    m: Option<Extension<MaybeSession>>,
    headers: HeaderMap,
    jar: CookieJar,
    Path(token): Path<String>,
    Form(form): Form<AnswerForm>,
) -> Response {
    let s = session(m);
    let survey = match find(&state, &ip, &token, s.as_deref()).await {
        Ok(survey) => survey,
        Err(resp) => return resp,
    };
    let answer = Answer {
        score: form.score.as_deref(),
        comment: &form.comment,
        testimonial: &form.testimonial,
        consent_to_publish: form.consent.as_deref().is_some_and(|v| !v.is_empty() && v != "0"),
    };
    let valid_days = state.catalogue.lifecycle.engagement.nps_valid_days;
    match surveys::answer(&state.db, valid_days, &token, &answer, state.now()).await {
        Ok(done) => form_page(&state, &headers, jar, s.as_deref(), &done, &token, None, StatusCode::OK),
        Err(e @ LifecycleError::Invalid { .. }) => form_page(
            &state,
            &headers,
            jar,
            s.as_deref(),
            &survey,
            &token,
            Some(e.to_string()),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        Err(LifecycleError::Conflict(msg)) => error_page(&state, s.as_deref(), StatusCode::CONFLICT, &msg),
        Err(e) => crate::render::internal_error(&state, s.as_deref(), "answering a survey", &e),
    }
}

#[derive(Deserialize)]
pub struct AdminQuery {
    #[serde(default)]
    customer: String,
}

/// `GET /admin/lifecycle/surveys[?customer=ID]`: answers, and testimonials to approve.
async fn admin(State(state): State<AppState>, OperatorUser(s): OperatorUser, Query(q): Query<AdminQuery>) -> Response {
    let customer = Some(q.customer.trim()).filter(|c| !c.is_empty());
    let answered = surveys::list(&state.db, customer, true, SHOWN).await;
    let pending = surveys::pending_testimonials(&state.db, SHOWN).await;
    match (answered, pending) {
        (Ok(answered), Ok(pending)) => page_with_status(
            &state,
            Some(&s),
            StatusCode::OK,
            "admin/surveys.html",
            "lifecycle",
            context! { answered, pending, customer },
        ),
        (Err(e), _) | (_, Err(e)) => fail(&state, &s, "surveys", e),
    }
}

/// `POST /admin/lifecycle/surveys/{id}/approve`: publishable testimonial.
async fn approve(State(state): State<AppState>, OperatorUser(s): OperatorUser, Path(id): Path<String>) -> Response {
    match surveys::approve_testimonial(&state.db, &Actor::user(&s.user.id), &id, state.now()).await {
        Ok(_) => Redirect::to("/admin/lifecycle/surveys").into_response(),
        Err(e) => fail(&state, &s, "approving a testimonial", e),
    }
}
