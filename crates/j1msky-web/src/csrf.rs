//! CSRF protection for everything a signed-in browser session can do: a synchronizer
//! token per session (or, before login, a double-submit cookie). Forms carry it in a
//! `csrf_token` field; any other state-changing request with a live session cookie
//! carries it in the `X-CSRF-Token` header, whatever else it sends (an `Authorization`
//! or `X-Requested-With` header proves nothing about who made the browser send it).
//! A request without a live session acts as no one through the cookie, so it only
//! needs the token when it is a form (the login form).
//!
//! One exemption: `POST /u/{token}`, the RFC 8058 one-click unsubscribe, which mail
//! clients send without cookies; it acts on the signed token alone, never on a session.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum_extra::extract::CookieJar;
use j1msky_accounts::secrets;

use crate::auth::MaybeSession;
use crate::error::{too_large, ApiError};
use crate::state::AppState;

/// The pre-login double-submit cookie.
pub const LOGIN_CSRF_COOKIE: &str = "j1msky_csrf";
/// The form field every form carries.
pub const FIELD: &str = "csrf_token";
/// The header requests other than forms carry it in.
pub const HEADER: &str = "x-csrf-token";

fn forbidden(why: &str) -> Response {
    ApiError::new(StatusCode::FORBIDDEN, "csrf", format!("{why}; reload the page and try again")).into_response()
}

/// The middleware.
pub async fn guard(State(state): State<AppState>, jar: CookieJar, req: Request, next: Next) -> Response {
    if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        return next.run(req).await;
    }
    if *req.method() == Method::POST && is_one_click(req.uri().path()) {
        return next.run(req).await;
    }
    let content_type =
        req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_ascii_lowercase();
    let is_form = content_type.starts_with("application/x-www-form-urlencoded");
    let session = req.extensions().get::<MaybeSession>().and_then(|m| m.0.clone());
    if !is_form {
        let Some(session) = session else {
            return next.run(req).await;
        };
        return match req.headers().get(HEADER).and_then(|v| v.to_str().ok()) {
            Some(p) if !session.csrf_token.is_empty() && secrets::same(&session.csrf_token, p) => next.run(req).await,
            Some(_) => forbidden("the X-CSRF-Token header is invalid or expired"),
            None => forbidden("a signed-in request that is not a form must carry its CSRF token in X-CSRF-Token"),
        };
    }
    let expected = match session {
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

/// Whether `path` is the one-click unsubscribe endpoint (`/u/` and one non-empty segment):
/// RFC 8058 one-click POSTs come from mail clients, without cookies, so exactly that path
/// is exempt; its token is the capability.
pub(crate) fn is_one_click(path: &str) -> bool {
    path.strip_prefix("/u/").is_some_and(|t| !t.is_empty() && !t.contains('/'))
}

/// The CSRF token a form page embeds: the session's when there is one, else the
/// double-submit cookie's (set, or kept, on `jar`) for pages served without a login.
pub fn form_token(
    state: &AppState,
    headers: &axum::http::HeaderMap,
    jar: CookieJar,
    s: Option<&j1msky_accounts::sessions::Session>,
) -> (CookieJar, String) {
    if let Some(s) = s {
        return (jar, s.csrf_token.clone());
    }
    let token = match jar.get(LOGIN_CSRF_COOKIE) {
        Some(c) if !c.value().is_empty() => c.value().to_string(),
        _ => secrets::random_token(),
    };
    let secure = crate::auth::is_https(state, headers);
    let jar = jar.add(crate::auth::cookie(LOGIN_CSRF_COOKIE, token.clone(), secure, 3600));
    (jar, token)
}

#[cfg(test)]
mod tests {
    use super::is_one_click;

    #[test]
    fn only_the_unsubscribe_path_itself_is_one_click() {
        assert!(is_one_click("/u/abc.def"));
        for p in ["/u/", "/u", "/u/a/b", "/admin/u/x", "/uu/x", "/login"] {
            assert!(!is_one_click(p), "{p}");
        }
    }
}
