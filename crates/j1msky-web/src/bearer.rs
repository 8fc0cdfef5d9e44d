//! Reading the caller's API key from the request headers, shared by the JSON API and the
//! model API (a leaf module, so neither surface depends on the other for it, and the same
//! odd header means the same thing on both).

use axum::http::{header, HeaderMap};

/// What a request presented as its API key.
#[derive(Debug, PartialEq, Eq)]
pub enum Presented<'a> {
    /// No credential header at all (a browser may still have a session).
    Absent,
    /// A key, from `Authorization: Bearer …` or else `x-api-key` (Anthropic's SDK).
    Key(&'a str),
    /// A credential header that holds no usable key: refused, never a fall back to the session.
    Unreadable,
}

/// The API key of a request: `Authorization: Bearer …` first, then `x-api-key`.
pub fn presented_key(headers: &HeaderMap) -> Presented<'_> {
    let authorization = headers.get(header::AUTHORIZATION);
    let x_api_key = headers.get("x-api-key");
    let key = authorization
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token)
        .or_else(|| x_api_key.and_then(|v| v.to_str().ok()).map(str::trim).filter(|k| !k.is_empty()));
    match key {
        Some(k) => Presented::Key(k),
        None if authorization.is_some() || x_api_key.is_some() => Presented::Unreadable,
        None => Presented::Absent,
    }
}

/// The credentials of an `Authorization: Bearer …` value; the scheme name is
/// case-insensitive (RFC 9110 §11.1) and may be followed by any run of spaces.
fn bearer_token(authorization: &str) -> Option<&str> {
    let (scheme, rest) = authorization.trim_start().split_once([' ', '\t'])?;
    let token = rest.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}
