//! The customer-facing model endpoints: `/v1/chat/completions` and `/v1/models` in
//! OpenAI's format, `/v1/messages` in Anthropic's, so the official SDKs work unchanged.
//! Each call goes through the gateway exactly like a task's call.

pub mod anthropic;
pub mod openai;

use axum::http::{HeaderMap, StatusCode};
use j1msky_gateway::policy::RouteError;
use j1msky_gateway::{CallContext, GatewayError};

use crate::state::AppState;

/// Largest `max_tokens` accepted.
pub const MAX_TOKENS_LIMIT: u32 = 200_000;
/// `max_tokens` when the caller gives none (OpenAI format only).
pub const DEFAULT_MAX_TOKENS: u32 = 1024;

/// A failure in neutral terms, rendered by each format.
#[derive(Debug)]
pub struct Failure {
    pub status: StatusCode,
    /// OpenAI-style code (`invalid_api_key`, `rate_limit_exceeded`…).
    pub code: &'static str,
    pub message: String,
    pub param: Option<&'static str>,
    pub retry_after_secs: Option<u64>,
    /// Our id of the request, once it reached the gateway (`x-request-id`).
    pub request_id: Option<String>,
}

impl Failure {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Failure {
        Failure { status, code, message: message.into(), param: None, retry_after_secs: None, request_id: None }
    }

    /// Tags the failure with the request id, so the caller can quote it.
    pub fn for_request(mut self, request_id: &str) -> Failure {
        self.request_id = Some(request_id.to_string());
        self
    }

    /// Adds `retry-after` and `x-request-id` to an error response.
    pub fn headers(&self, resp: &mut axum::response::Response) {
        if let Some(v) = self.retry_after_secs.and_then(|s| axum::http::HeaderValue::from_str(&s.to_string()).ok()) {
            resp.headers_mut().insert("retry-after", v);
        }
        if let Some(v) = self.request_id.as_deref().and_then(|s| axum::http::HeaderValue::from_str(s).ok()) {
            resp.headers_mut().insert("x-request-id", v);
        }
    }

    pub fn invalid(param: &'static str, message: impl Into<String>) -> Failure {
        Failure { param: Some(param), ..Failure::new(StatusCode::BAD_REQUEST, "invalid_request_error", message) }
    }
}

/// The mapping of `crate::error` (status, code, message, retry-after), in this format.
impl From<crate::error::ApiError> for Failure {
    fn from(e: crate::error::ApiError) -> Failure {
        Failure {
            retry_after_secs: e.retry_after_secs.map(|s| u64::try_from(s).unwrap_or(0)),
            ..Failure::new(e.status, e.code, e.message)
        }
    }
}

impl From<GatewayError> for Failure {
    fn from(e: GatewayError) -> Failure {
        // Which request field the error is about (OpenAI's `param`).
        let param = match &e {
            GatewayError::Route(RouteError::UnknownModel(_) | RouteError::OutsidePlan { .. }) => Some("model"),
            GatewayError::Invalid(_) => Some("messages"),
            _ => None,
        };
        Failure { param, ..crate::error::ApiError::from(e).into() }
    }
}

/// The gateway, or the error the model endpoints answer without one (here rather than on
/// the state, so the state does not depend on the model API's error type).
pub fn gateway_of(state: &AppState) -> Result<&std::sync::Arc<j1msky_gateway::Gateway>, Failure> {
    state.gateway.as_ref().ok_or_else(|| {
        Failure::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "gateway_disabled",
            "the model gateway is not configured on this server",
        )
    })
}

/// Runs a call in its own task: a client that hangs up mid-call cancels the HTTP handler
/// but not the call, so its reservation is still settled and its ledger rows written.
pub async fn detached_complete(
    gateway: &std::sync::Arc<j1msky_gateway::Gateway>,
    ctx: &CallContext,
    model: Option<&str>,
    req: &j1msky_gateway::chat::ChatRequest,
) -> Result<j1msky_gateway::Completed, Failure> {
    let (gw, ctx, model, req) = (gateway.clone(), ctx.clone(), model.map(str::to_string), req.clone());
    detached(async move { gw.complete(&ctx, model.as_deref(), &req).await }).await
}

/// Opens a stream in its own task (see [`detached_complete`]); once open, dropping the
/// stream settles it.
pub async fn detached_stream(
    gateway: &std::sync::Arc<j1msky_gateway::Gateway>,
    ctx: &CallContext,
    model: Option<&str>,
    req: &j1msky_gateway::chat::ChatRequest,
) -> Result<j1msky_gateway::GatewayStream, Failure> {
    let (gw, ctx, model, req) = (gateway.clone(), ctx.clone(), model.map(str::to_string), req.clone());
    detached(async move { gw.stream(&ctx, model.as_deref(), &req).await }).await
}

/// A call's task that panicked (or was aborted) failed on our side, so it is a 500, and
/// the panic's text stays in our log rather than reaching the caller.
async fn detached<T: Send + 'static>(
    call: impl std::future::Future<Output = Result<T, GatewayError>> + Send + 'static,
) -> Result<T, Failure> {
    // Tracked: awaited at once. Its own task only so that a client hanging up does not
    // cancel the call half-way (reservations and ledger rows stay consistent).
    #[allow(clippy::disallowed_methods)]
    let joined = tokio::spawn(call).await;
    match joined {
        Ok(done) => done.map_err(Failure::from),
        Err(e) => Err(crate::error::ApiError::internal("a detached gateway call's task", &e).into()),
    }
}

/// The customer behind an API key given as `Authorization: Bearer …` or `x-api-key`.
pub async fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<String, Failure> {
    let crate::bearer::Presented::Key(presented) = crate::bearer::presented_key(headers) else {
        return Err(Failure::new(
            StatusCode::UNAUTHORIZED,
            "invalid_api_key",
            "no API key: send Authorization: Bearer jk_…",
        ));
    };
    match state.keys.authenticate(&state.db, presented, state.now()).await {
        Ok(Some(auth)) => Ok(auth.customer_id),
        Ok(None) => Err(Failure::new(StatusCode::UNAUTHORIZED, "invalid_api_key", "the API key is wrong or revoked")),
        Err(e) => Err(crate::error::ApiError::from(e).into()),
    }
}

/// The call context of an API request.
pub fn context(customer_id: String, headers: &HeaderMap) -> CallContext {
    let category = headers
        .get("x-j1msky-category")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_ascii_lowercase())
        .filter(|v| !v.is_empty() && v.len() <= 40)
        .unwrap_or_else(|| "general".into());
    CallContext {
        request_id: j1msky_core::ids::new_id("req"),
        customer_id: Some(customer_id),
        category,
        ..CallContext::default()
    }
}

/// Checks `max_tokens`.
pub fn check_max_tokens(n: u64) -> Result<u32, Failure> {
    if n == 0 || n > u64::from(MAX_TOKENS_LIMIT) {
        return Err(Failure::invalid(
            "max_tokens",
            format!("max_tokens must be between 1 and {MAX_TOKENS_LIMIT}, got {n}"),
        ));
    }
    Ok(n as u32)
}

/// An optional field that must be a boolean when present (null counts as absent): a
/// `"stream": "yes"` is refused rather than silently read as false.
pub fn optional_bool(v: &serde_json::Value, field: &'static str) -> Result<Option<bool>, Failure> {
    match &v[field] {
        serde_json::Value::Null => Ok(None),
        serde_json::Value::Bool(b) => Ok(Some(*b)),
        _ => Err(Failure::invalid(field, format!("{field} must be true or false"))),
    }
}

/// An optional field that must be a number when present (null counts as absent).
pub fn optional_number(v: &serde_json::Value, field: &'static str) -> Result<Option<f64>, Failure> {
    match &v[field] {
        serde_json::Value::Null => Ok(None),
        serde_json::Value::Number(n) => Ok(n.as_f64()),
        _ => Err(Failure::invalid(field, format!("{field} must be a number"))),
    }
}

/// Stop sequences: absent, an array of strings, or (when `one_allowed`) one string.
pub fn stop_sequences(v: &serde_json::Value, field: &'static str, one_allowed: bool) -> Result<Vec<String>, Failure> {
    let wrong = || {
        let what = if one_allowed { "a string or an array of strings" } else { "an array of strings" };
        Failure::invalid(field, format!("{field} must be {what}"))
    };
    match &v[field] {
        serde_json::Value::Null => Ok(vec![]),
        serde_json::Value::String(s) if one_allowed => Ok(vec![s.clone()]),
        serde_json::Value::Array(items) => {
            items.iter().map(|s| s.as_str().map(str::to_string).ok_or_else(wrong)).collect()
        }
        _ => Err(wrong()),
    }
}

/// Text of a message `content`: a string or an array of text parts.
pub fn content_text(value: &serde_json::Value, param: &'static str) -> Result<String, Failure> {
    match value {
        serde_json::Value::String(s) => Ok(s.clone()),
        serde_json::Value::Array(parts) => {
            let mut text = String::new();
            for part in parts {
                match (part["type"].as_str(), part["text"].as_str()) {
                    (Some("text"), Some(t)) => text.push_str(t),
                    (kind, _) => {
                        return Err(Failure::invalid(
                            param,
                            format!("only text content is supported, got a `{}` part", kind.unwrap_or("?")),
                        ))
                    }
                }
            }
            Ok(text)
        }
        serde_json::Value::Null => Ok(String::new()),
        _ => Err(Failure::invalid(param, "content must be a string or an array of text parts")),
    }
}
