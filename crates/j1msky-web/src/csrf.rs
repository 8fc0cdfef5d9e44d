//! CSRF protection for every form POST: a synchronizer token per session (or, before
//! login, a double-submit cookie) that each form carries in a `csrf_token` field.
//! Cookie-authenticated POSTs that are not forms must be JSON, which browsers cannot
//! send cross-site without a CORS preflight; DELETE, PUT and PATCH always need a
//! preflight cross-site, and the server answers no CORS, so they pass.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum_extra::extract::CookieJar;
use j1msky_accounts::secrets;

use crate::auth::{MaybeSession, SESSION_COOKIE};
use crate::error::{too_large, ApiError};
use crate::state::AppState;

/// The pre-login double-submit cookie.
pub const LOGIN_CSRF_COOKIE: &str = "j1msky_csrf";
/// The form field every form carries.
pub const FIELD: &str = "csrf_token";

fn forbidden(why: &str) -> Response {
    ApiError::new(StatusCode::FORBIDDEN, "csrf", format!("{why}; reload the page and try again")).into_response()
}

/// The middleware.
pub async fn guard(State(state): State<AppState>, jar: CookieJar, req: Request, next: Next) -> Response {
    if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        return next.run(req).await;
    }
    let content_type =
        req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_ascii_lowercase();
    let is_form = content_type.starts_with("application/x-www-form-urlencoded");
    if !is_form {
        if *req.method() != Method::POST {
            return next.run(req).await;
        }
        let cookie_auth = jar.get(SESSION_COOKIE).is_some() && !req.headers().contains_key(header::AUTHORIZATION);
        if cookie_auth && !content_type.starts_with("application/json") {
            return forbidden("a signed-in browser request must be a form with its CSRF token or JSON");
        }
        return next.run(req).await;
    }
    let expected = match req.extensions().get::<MaybeSession>().and_then(|m| m.0.clone()) {
        Some(session) => Some(session.csrf_token.clone()),
        None => jar.get(LOGIN_CSRF_COOKIE).map(|c| c.value().to_string()),
    };
    let (parts, body) = req.into_parts();
    let bytes = match axum::body::to_bytes(body, state.config.max_body_bytes).await {
        Ok(b) => b,
        Err(_) => return too_large().into_response(),
    };
    let presented = serde_urlencoded::from_bytes::<Vec<(String, String)>>(&bytes)
        .ok()
        .and_then(|fields| fields.into_iter().find(|(k, _)| k == FIELD).map(|(_, v)| v));
    match (expected, presented) {
        (Some(e), Some(p)) if !e.is_empty() && secrets::same(&e, &p) => {
            next.run(Request::from_parts(parts, Body::from(bytes))).await
        }
        (_, None) => forbidden("the form has no CSRF token"),
        _ => forbidden("the form's CSRF token is invalid or expired"),
    }
}
