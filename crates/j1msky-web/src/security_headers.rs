//! Headers every response carries: no framing (clickjacking on the dashboards' forms),
//! no MIME sniffing, no URLs leaking to other sites in `Referer`, and a CSP that lets
//! the pages' own inline styles apply but no script at all (the pages have none, so an
//! injected one never runs).

use axum::extract::Request;
use axum::http::header::{CONTENT_SECURITY_POLICY, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;

/// The pages use a `<style>` block and `style=""` attributes, hence `'unsafe-inline'`
/// for styles only. No `form-action`: checkout forms end in a redirect to Stripe.
pub const CSP: &str =
    "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; base-uri 'none'; frame-ancestors 'none'";

/// The middleware; a handler that set one of these headers itself keeps its value.
pub async fn apply(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    for (name, value) in [
        (X_FRAME_OPTIONS, "DENY"),
        (X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (REFERRER_POLICY, "same-origin"),
        (CONTENT_SECURITY_POLICY, CSP),
    ] {
        h.entry(name).or_insert(HeaderValue::from_static(value));
    }
    resp
}
