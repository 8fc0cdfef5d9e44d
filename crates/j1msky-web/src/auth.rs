//! Who is calling: a browser session (cookie) or an API key (Bearer).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum_extra::extract::cookie::{Cookie, SameSite};
use axum_extra::extract::CookieJar;
use j1msky_accounts::sessions::{self, Session};
use j1msky_core::vocab::UserRole;

use crate::error::ApiError;
use crate::state::AppState;

/// The session cookie.
pub const SESSION_COOKIE: &str = "j1msky_session";
/// The cookie of a browser that logged in before (`j1msky_accounts::devices`): it
/// outlives sessions and logouts, and spares its holder the account's login lock.
pub const DEVICE_COOKIE: &str = "j1msky_device";

/// The live session of this request, if any (put there by [`load_session`]).
#[derive(Clone)]
pub struct MaybeSession(pub Option<Arc<Session>>);

/// Reads the session cookie once per request and keeps the result in the extensions.
pub async fn load_session(State(state): State<AppState>, jar: CookieJar, mut req: Request, next: Next) -> Response {
    let session = match jar.get(SESSION_COOKIE) {
        Some(c) => match sessions::lookup(&state.db, c.value(), state.now()).await {
            Ok(s) => s.map(Arc::new),
            Err(e) => return ApiError::from(e).into_response(),
        },
        None => None,
    };
    req.extensions_mut().insert(MaybeSession(session));
    next.run(req).await
}

fn session_of(parts: &Parts) -> Option<Arc<Session>> {
    parts.extensions.get::<MaybeSession>().and_then(|m| m.0.clone())
}

/// Whether this request arrived over https (directly configured, or via a trusted proxy).
pub fn is_https(state: &AppState, parts_headers: &axum::http::HeaderMap) -> bool {
    state.config.secure_cookies
        || (state.config.trust_proxy
            && parts_headers.get("x-forwarded-proto").and_then(|v| v.to_str().ok()) == Some("https"))
}

/// A cookie with the attributes every j1msky cookie carries.
pub fn cookie(name: &'static str, value: String, secure: bool, max_age_secs: i64) -> Cookie<'static> {
    Cookie::build((name, value))
        .http_only(true)
        .same_site(SameSite::Lax)
        .secure(secure)
        .path("/")
        .max_age(time::Duration::seconds(max_age_secs))
        .build()
}

/// The client's address: the socket peer, or, behind trusted proxies, the right-most
/// `X-Forwarded-For` hop they did not add themselves. Entries left of it were written
/// by the client and prove nothing.
pub fn client_ip(state: &AppState, parts: &Parts) -> String {
    let peer = || {
        parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip().to_string())
            .unwrap_or_else(|| "unknown".into())
    };
    if !state.config.trust_proxy {
        return peer();
    }
    // Several headers are one list, in order (RFC 9110 field combination).
    let hops: Vec<&str> = parts
        .headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .collect();
    // Fewer hops than proxies: every entry there came from a proxy of ours.
    let index = hops.len().saturating_sub(state.config.trusted_proxies.max(1));
    // Some proxies write the port too (`1.2.3.4:5678`, `[2001:db8::1]:443`).
    let parse = |h: &str| h.parse::<std::net::IpAddr>().ok().or_else(|| h.parse::<SocketAddr>().ok().map(|s| s.ip()));
    match hops.get(index).and_then(|h| parse(h)) {
        Some(ip) => ip.to_string(),
        None => peer(),
    }
}

/// The client address as an extractor.
pub struct ClientIp(pub String);

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        Ok(ClientIp(client_ip(state, parts)))
    }
}

/// A signed-in user on a page; otherwise a redirect to the login page.
pub struct PageUser(pub Arc<Session>);

impl FromRequestParts<AppState> for PageUser {
    type Rejection = Response;
    async fn from_request_parts(parts: &mut Parts, _state: &AppState) -> Result<Self, Self::Rejection> {
        match session_of(parts) {
            Some(s) => Ok(PageUser(s)),
            None => {
                let next = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
                let target = format!("/login?next={}", urlencode(next));
                Err(Redirect::to(&target).into_response())
            }
        }
    }
}

/// A signed-in operator on a page.
pub struct OperatorUser(pub Arc<Session>);

impl FromRequestParts<AppState> for OperatorUser {
    type Rejection = Response;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let PageUser(s) = PageUser::from_request_parts(parts, state).await?;
        if s.user.role == UserRole::Operator {
            Ok(OperatorUser(s))
        } else {
            Err(crate::render::error_page_for(state, Some(&s), ApiError::forbidden("This area is for operators.")))
        }
    }
}

/// A signed-in owner or member of a customer on a page, with that customer's id.
pub struct CustomerUser(pub Arc<Session>, pub String);

impl FromRequestParts<AppState> for CustomerUser {
    type Rejection = Response;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let PageUser(s) = PageUser::from_request_parts(parts, state).await?;
        match s.user.customer_id.clone() {
            Some(cid) => Ok(CustomerUser(s, cid)),
            None => Err(Redirect::to("/admin").into_response()),
        }
    }
}

/// Who calls the JSON API.
pub enum ApiCaller {
    /// A customer's API key.
    Key { key_id: String, customer_id: String },
    /// A browser session.
    User(Arc<Session>),
}

impl ApiCaller {
    /// The customer the caller acts for (None for operators).
    pub fn customer_id(&self) -> Option<&str> {
        match self {
            ApiCaller::Key { customer_id, .. } => Some(customer_id),
            ApiCaller::User(s) => s.user.customer_id.as_deref(),
        }
    }
}

impl FromRequestParts<AppState> for ApiCaller {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let presented = match crate::bearer::presented_key(&parts.headers) {
            crate::bearer::Presented::Absent => None,
            crate::bearer::Presented::Key(k) => Some(k),
            crate::bearer::Presented::Unreadable => return Err(ApiError::unauthorized()),
        };
        if let Some(presented) = presented {
            return match state.keys.authenticate(&state.db, presented, state.now()).await? {
                Some(k) => Ok(ApiCaller::Key { key_id: k.key_id, customer_id: k.customer_id }),
                None => {
                    Err(ApiError::new(StatusCode::UNAUTHORIZED, "invalid_api_key", "the API key is unknown or revoked"))
                }
            };
        }
        session_of(parts).map(ApiCaller::User).ok_or_else(ApiError::unauthorized)
    }
}

/// Percent-encodes a query value (only what `next=` needs).
pub fn urlencode(s: &str) -> String {
    serde_urlencoded::to_string([("v", s)]).map(|q| q[2..].to_string()).unwrap_or_default()
}

/// A safe local redirect target: a path on this site, never another host. Browsers
/// drop tabs and newlines from URLs and read `\` as `/`, so `/\t/evil` or `/\evil`
/// would leave the site: only printable ASCII without backslashes passes, starting with
/// one `/`.
pub fn safe_next(next: Option<&str>) -> Option<String> {
    next.filter(|n| {
        let bytes = n.as_bytes();
        bytes.first() == Some(&b'/')
            && !matches!(bytes.get(1), Some(b'/'))
            && bytes.iter().all(|b| b.is_ascii_graphic() && *b != b'\\')
    })
    .map(str::to_string)
}
