//! The public lead form (`/start`, `/start/thanks`), and passwords by one-time link:
//! `/set-password/{token}` (a trial's owner, an invited member) and `/reset` +
//! `/reset/{token}`. No login: forms use the pre-login double-submit CSRF cookie, and
//! unknown tokens are throttled per client address like survey links.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Extension, Form, Router};
use axum_extra::extract::CookieJar;
use j1msky_accounts::sessions::Session;
use j1msky_accounts::throttle::{self, Admission, Policy};
use j1msky_accounts::{tokens, AccountsError};
use j1msky_core::clock::SECOND;
use j1msky_ops::leads::{self, LeadError, Mailer, NewLead, Submitted};
use minijinja::{context, Value};
use serde::Deserialize;

use crate::auth::{ClientIp, MaybeSession};
use crate::error::ApiError;
use crate::render::{error_page, error_page_for, internal_error, page_with_status, stamp};
use crate::state::AppState;

/// Unknown link tokens one client address may try: 20 in 15 minutes, then 15 minutes off.
const GUESSES: Policy = Policy { max_failures: 20, window_micros: 900 * SECOND, lock_micros: 900 * SECOND };
/// Approved testimonials shown on the start page.
const TESTIMONIALS: i64 = 6;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/start", get(start_page).post(start_submit))
        .route("/start/thanks", get(thanks))
        .route("/set-password/{token}", get(link_page).post(link_submit))
        .route("/reset", get(reset_page).post(reset_submit))
        .route("/reset/{token}", get(link_page).post(link_submit))
}

type S = Option<std::sync::Arc<Session>>;

fn session(m: Option<Extension<MaybeSession>>) -> S {
    m.and_then(|Extension(m)| m.0)
}

/// The form's CSRF token: the session's, or (no session) a double-submit cookie.
fn csrf(state: &AppState, headers: &HeaderMap, jar: CookieJar, s: Option<&Session>) -> (CookieJar, String) {
    crate::csrf::form_token(state, headers, jar, s)
}

/// The mail settings, or the page saying mail is off on this server.
fn mailer(state: &AppState, s: Option<&Session>) -> Result<Mailer, Box<Response>> {
    match &state.lifecycle {
        Some(l) => Ok(Mailer::of(l)),
        None => Err(Box::new(error_page(
            state,
            s,
            StatusCode::SERVICE_UNAVAILABLE,
            "Mail is not configured on this server, so this form cannot be used now.",
        ))),
    }
}

pub(super) fn ops_ctx(state: &AppState) -> j1msky_ops::Ctx {
    j1msky_ops::Ctx { db: state.db.clone(), catalogue: state.catalogue.clone(), clock: state.clock.clone() }
}

#[derive(Deserialize, Default)]
pub struct LeadForm {
    #[serde(default)]
    contact_name: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    company: String,
    #[serde(default)]
    use_case: String,
    #[serde(default)]
    use_case_text: String,
    #[serde(default)]
    expected_monthly_tasks: String,
    /// The honeypot: hidden from people by the page's style.
    #[serde(default)]
    website: String,
}

#[allow(clippy::too_many_arguments)]
async fn form(
    state: &AppState,
    headers: &HeaderMap,
    jar: CookieJar,
    s: Option<&Session>,
    values: &LeadForm,
    error: Option<&ApiError>,
    status: StatusCode,
) -> Response {
    let (jar, csrf) = csrf(state, headers, jar, s);
    let testimonials =
        match j1msky_lifecycle::surveys::approved_testimonials(&state.db, 0, state.now(), TESTIMONIALS).await {
            Ok(t) => t,
            Err(e) => return internal_error(state, s, "testimonials", &e),
        };
    let ctx = context! {
        csrf, business => state.catalogue.business.name.clone(), testimonials,
        use_cases => j1msky_core::vocab::UseCase::ALL.iter().map(|u| u.as_str()).collect::<Vec<_>>(),
        values => context! {
            contact_name => values.contact_name.clone(), email => values.email.clone(), company => values.company.clone(),
            use_case => values.use_case.clone(), use_case_text => values.use_case_text.clone(),
            expected_monthly_tasks => values.expected_monthly_tasks.clone(),
        },
        flash => error.map(|e| e.message.clone()), flash_kind => "error",
    };
    let resp = (jar, page_with_status(state, s, status, "public/start.html", "", ctx)).into_response();
    match error {
        Some(e) => stamp(resp, e),
        None => resp,
    }
}

/// `GET /start`: the form, and testimonials customers approved for publication.
async fn start_page(
    State(state): State<AppState>,
    m: Option<Extension<MaybeSession>>,
    headers: HeaderMap,
    jar: CookieJar,
) -> Response {
    let s = session(m);
    form(&state, &headers, jar, s.as_deref(), &LeadForm::default(), None, StatusCode::OK).await
}

/// `POST /start`: stores the lead (or quietly not, for a bot) and thanks.
async fn start_submit(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    m: Option<Extension<MaybeSession>>,
    headers: HeaderMap,
    jar: CookieJar,
    Form(f): Form<LeadForm>,
) -> Response {
    let s = session(m);
    let mailer = match mailer(&state, s.as_deref()) {
        Ok(m) => m,
        Err(resp) => return *resp,
    };
    let new = NewLead {
        contact_name: f.contact_name.clone(),
        email: f.email.clone(),
        company: f.company.clone(),
        use_case: f.use_case.clone(),
        use_case_text: f.use_case_text.clone(),
        expected_monthly_tasks: f.expected_monthly_tasks.clone(),
        honeypot: f.website.clone(),
    };
    match leads::submit(&ops_ctx(&state), &mailer, &new, &ip, state.now()).await {
        Ok(Submitted::Stored(_) | Submitted::Ignored) => Redirect::to("/start/thanks").into_response(),
        Err(e @ (LeadError::Invalid { .. } | LeadError::Throttled { .. } | LeadError::Accounts(_))) => {
            let e = ApiError::from(e);
            let status = e.status;
            form(&state, &headers, jar, s.as_deref(), &f, Some(&e), status).await
        }
        Err(e) => error_page_for(&state, s.as_deref(), e),
    }
}

/// `GET /start/thanks`.
async fn thanks(State(state): State<AppState>, m: Option<Extension<MaybeSession>>) -> Response {
    let s = session(m);
    let ctx = context! { business => state.catalogue.business.name.clone() };
    page_with_status(&state, s.as_deref(), StatusCode::OK, "public/start_thanks.html", "", ctx)
}

/// Checks a link token, counting unknown ones against the client address.
async fn find(state: &AppState, ip: &str, token: &str, s: Option<&Session>) -> Result<tokens::Link, Response> {
    let scope = format!("link:{}", throttle::address_scope(ip));
    match throttle::admit(&state.db, &scope, GUESSES, state.now()).await {
        Ok(Admission::Admitted) => {}
        Ok(Admission::Refused { retry_after_secs }) => {
            let msg = format!("Too many invalid links. Try again in {} minute(s).", (retry_after_secs + 59) / 60);
            return Err(error_page(state, s, StatusCode::TOO_MANY_REQUESTS, &msg));
        }
        Err(e) => return Err(internal_error(state, s, "link throttle", &e)),
    }
    match tokens::check(&state.db, token, state.now()).await {
        Ok(link) => {
            if let Err(e) = throttle::refund(&state.db, &scope, GUESSES).await {
                tracing::warn!(error = %e, "refunding a link attempt");
            }
            Ok(link)
        }
        Err(AccountsError::NotFound(_)) => {
            Err(error_page(state, s, StatusCode::NOT_FOUND, "This link is not valid. Ask for a new one at /reset."))
        }
        Err(e @ AccountsError::Invalid { .. }) => Err(error_page(state, s, StatusCode::GONE, &e.to_string())),
        Err(e) => Err(error_page_for(state, s, e)),
    }
}

fn link_form(
    state: &AppState,
    headers: &HeaderMap,
    jar: CookieJar,
    s: Option<&Session>,
    link: &tokens::Link,
    action: &str,
    error: Option<String>,
) -> Response {
    let (jar, csrf) = csrf(state, headers, jar, s);
    let status = if error.is_some() { StatusCode::UNPROCESSABLE_ENTITY } else { StatusCode::OK };
    let ctx = context! {
        csrf, action, purpose => link.purpose, email => link.user.email.clone(),
        name => link.user.display_name.clone(), flash => error, flash_kind => "error",
    };
    (jar, page_with_status(state, s, status, "public/set_password.html", "", ctx)).into_response()
}

/// `GET /set-password/{token}` and `GET /reset/{token}`: the new-password form.
async fn link_page(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    m: Option<Extension<MaybeSession>>,
    headers: HeaderMap,
    jar: CookieJar,
    uri: axum::http::Uri,
    Path(token): Path<String>,
) -> Response {
    let s = session(m);
    match find(&state, &ip, &token, s.as_deref()).await {
        Ok(link) => link_form(&state, &headers, jar, s.as_deref(), &link, uri.path(), None),
        Err(resp) => resp,
    }
}

#[derive(Deserialize)]
pub struct PasswordForm {
    #[serde(default)]
    password: String,
    #[serde(default)]
    confirm: String,
}

/// `POST /set-password/{token}` and `POST /reset/{token}`: sets the password once, then
/// sends to the login page.
#[allow(clippy::too_many_arguments)]
async fn link_submit(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    m: Option<Extension<MaybeSession>>,
    headers: HeaderMap,
    jar: CookieJar,
    uri: axum::http::Uri,
    Path(token): Path<String>,
    Form(f): Form<PasswordForm>,
) -> Response {
    let s = session(m);
    let link = match find(&state, &ip, &token, s.as_deref()).await {
        Ok(link) => link,
        Err(resp) => return resp,
    };
    if f.password != f.confirm {
        let msg = "confirm: the two passwords differ".to_string();
        return link_form(&state, &headers, jar, s.as_deref(), &link, uri.path(), Some(msg));
    }
    match tokens::redeem(&state.db, &token, &f.password, state.now()).await {
        Ok(user) => Redirect::to(&format!("/login?email={}", crate::auth::urlencode(&user.email))).into_response(),
        Err(e @ AccountsError::Invalid { field: "password", .. }) => {
            link_form(&state, &headers, jar, s.as_deref(), &link, uri.path(), Some(e.to_string()))
        }
        Err(e @ AccountsError::Invalid { .. }) => error_page(&state, s.as_deref(), StatusCode::GONE, &e.to_string()),
        Err(e) => error_page_for(&state, s.as_deref(), e),
    }
}

fn reset_form(
    state: &AppState,
    headers: &HeaderMap,
    jar: CookieJar,
    s: Option<&Session>,
    sent: bool,
    error: Option<&ApiError>,
) -> Response {
    let (jar, csrf) = csrf(state, headers, jar, s);
    let status = error.map_or(StatusCode::OK, |e| e.status);
    let ctx: Value = context! { csrf, sent, flash => error.map(|e| e.message.clone()), flash_kind => "error" };
    let resp = (jar, page_with_status(state, s, status, "public/reset.html", "", ctx)).into_response();
    match error {
        Some(e) => stamp(resp, e),
        None => resp,
    }
}

/// `GET /reset`: asks for the address.
async fn reset_page(
    State(state): State<AppState>,
    m: Option<Extension<MaybeSession>>,
    headers: HeaderMap,
    jar: CookieJar,
) -> Response {
    let s = session(m);
    reset_form(&state, &headers, jar, s.as_deref(), false, None)
}

#[derive(Deserialize)]
pub struct ResetForm {
    #[serde(default)]
    email: String,
}

/// `POST /reset`: the same page whether the address has an account or not.
async fn reset_submit(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    m: Option<Extension<MaybeSession>>,
    headers: HeaderMap,
    jar: CookieJar,
    Form(f): Form<ResetForm>,
) -> Response {
    let s = session(m);
    let mailer = match mailer(&state, s.as_deref()) {
        Ok(m) => m,
        Err(resp) => return *resp,
    };
    match leads::mail::request_reset(&ops_ctx(&state), &mailer, &f.email, &ip, state.now()).await {
        Ok(()) => reset_form(&state, &headers, jar, s.as_deref(), true, None),
        Err(e @ LeadError::Throttled { .. }) => {
            reset_form(&state, &headers, jar, s.as_deref(), false, Some(&ApiError::from(e)))
        }
        Err(e) => error_page_for(&state, s.as_deref(), e),
    }
}
