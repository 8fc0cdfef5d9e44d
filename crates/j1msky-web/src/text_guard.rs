//! Text a database cannot store is refused at the edge, the same on both engines.
//! PostgreSQL rejects the NUL character in `text` (SQLite keeps it), so without this a
//! NUL in a path, query, form or JSON body was a 500 on one engine and a stored oddity
//! on the other. One layer checks every request, so no handler has to remember to.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::{too_large, ApiError};
use crate::state::AppState;

fn refused(field: &str) -> Response {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "invalid_text",
        format!("`{field}` contains a NUL character (\\u0000), which cannot be stored; remove it and send again"),
    )
    .into_response()
}

/// How a field whose name itself may hold a NUL is named in the error.
fn shown(name: &str) -> String {
    name.replace('\0', "\\u0000")
}

/// The first form or query field holding a NUL in its name or value.
fn form_field_with_nul(encoded: &[u8]) -> Option<String> {
    form_urlencoded_pairs(encoded).find(|(k, v)| k.contains('\0') || v.contains('\0')).map(|(k, _)| shown(&k))
}

fn form_urlencoded_pairs(encoded: &[u8]) -> impl Iterator<Item = (String, String)> {
    serde_urlencoded::from_bytes::<Vec<(String, String)>>(encoded).unwrap_or_default().into_iter()
}

/// The path (`messages[0].content`) of the first JSON string or key holding a NUL.
fn json_path_with_nul(value: &serde_json::Value, at: &str) -> Option<String> {
    match value {
        serde_json::Value::String(s) if s.contains('\0') => Some(if at.is_empty() { "body".into() } else { at.into() }),
        serde_json::Value::Array(items) => {
            items.iter().enumerate().find_map(|(i, v)| json_path_with_nul(v, &format!("{at}[{i}]")))
        }
        serde_json::Value::Object(map) => map.iter().find_map(|(k, v)| {
            let here = if at.is_empty() { shown(k) } else { format!("{at}.{}", shown(k)) };
            if k.contains('\0') {
                Some(here)
            } else {
                json_path_with_nul(v, &here)
            }
        }),
        _ => None,
    }
}

/// The middleware: 400 naming the field for a NUL anywhere a client can put text.
pub async fn refuse_unstorable(State(state): State<AppState>, req: Request, next: Next) -> Response {
    // Percent-encoding is the only way a NUL reaches a URI.
    if req.uri().path().to_ascii_lowercase().contains("%00") {
        return refused("path");
    }
    if let Some(field) = req.uri().query().and_then(|q| form_field_with_nul(q.as_bytes())) {
        return refused(&field);
    }
    let is_form = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().starts_with("application/x-www-form-urlencoded"));
    let (parts, body) = req.into_parts();
    let bytes = match axum::body::to_bytes(body, state.config.max_body_bytes).await {
        Ok(b) => b,
        Err(_) => return too_large().into_response(),
    };
    let field = if is_form {
        form_field_with_nul(&bytes)
    } else {
        // Any other body is checked as JSON whatever its declared type, since the model
        // endpoints read JSON without asking for the header. What is not JSON is left to
        // the handler, which says what is wrong with it.
        serde_json::from_slice::<serde_json::Value>(&bytes).ok().and_then(|v| json_path_with_nul(&v, ""))
    };
    match field {
        Some(field) => refused(&field),
        None => next.run(Request::from_parts(parts, Body::from(bytes))).await,
    }
}
