//! How every domain error is answered. Each error type has one mapping here (a `From`
//! impl into [`ApiError`]: status, stable `code`, a message safe to show), and both
//! renderers use it: JSON as `{"error":{"code","message"}}` (this module) and HTML as the
//! error page or a form shown again with the message (`render::error_page_for`). So one
//! error gives the same status on the API and in the browser. Internal errors are logged
//! here and answered as 500 `internal` without their details.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use j1msky_accounts::AccountsError;
use j1msky_billing::BillingError;
use j1msky_gateway::controls::ControlError;
use j1msky_gateway::limits::LimitError;
use j1msky_gateway::policy::RouteError;
use j1msky_gateway::providers::UpstreamError;
use j1msky_gateway::GatewayError;
use j1msky_insights::InsightsError;
use j1msky_lifecycle::LifecycleError;
use j1msky_tasks::TaskError;

/// An error answered as JSON.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub retry_after_secs: Option<i64>,
}

impl ApiError {
    /// A new error.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into(), retry_after_secs: None }
    }

    /// 401: no valid credentials.
    pub fn unauthorized() -> ApiError {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid API key (Authorization: Bearer …) or session is required",
        )
    }

    /// 404 for anything missing or not the caller's.
    pub fn not_found(what: &str) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("{what} not found"))
    }

    /// 403: authenticated but not allowed.
    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 500 `internal`: `error` is logged (with `what` failed), never shown.
    pub fn internal(what: &str, error: &dyn std::fmt::Display) -> ApiError {
        tracing::error!(error = %error, what, "internal error");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error; it has been logged")
    }

    /// Is this our failure (5xx) rather than the caller's?
    pub fn is_internal(&self) -> bool {
        self.status == StatusCode::INTERNAL_SERVER_ERROR
    }

    fn with_retry_after(mut self, secs: i64) -> ApiError {
        self.retry_after_secs = Some(secs);
        self
    }
}

impl From<AccountsError> for ApiError {
    fn from(e: AccountsError) -> ApiError {
        match e {
            AccountsError::NotFound(what) => ApiError::not_found(what),
            AccountsError::Invalid { .. } => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", e.to_string()),
            AccountsError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, "conflict", m),
            AccountsError::BadCredentials => ApiError::new(StatusCode::UNAUTHORIZED, "bad_credentials", e.to_string()),
            AccountsError::Throttled { retry_after_secs } => {
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, "throttled", e.to_string())
                    .with_retry_after(retry_after_secs)
            }
            AccountsError::Db(_) | AccountsError::Internal(_) => ApiError::internal("accounts", &e),
        }
    }
}

impl From<TaskError> for ApiError {
    fn from(e: TaskError) -> ApiError {
        let message = e.to_string();
        match e {
            TaskError::UnknownTeam { .. } | TaskError::Invalid { .. } => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", message)
            }
            TaskError::TeamNotInPlan { .. } => ApiError::new(StatusCode::FORBIDDEN, "team_not_in_plan", message),
            TaskError::LimitReached { .. } => ApiError::new(StatusCode::PAYMENT_REQUIRED, "plan_limit", message),
            TaskError::TooManyWaiting { .. } => {
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, "too_many_waiting", message)
            }
            TaskError::NoActivePlan(_) => ApiError::new(StatusCode::PAYMENT_REQUIRED, "no_active_plan", message),
            // Another customer's task is indistinguishable from a missing one.
            TaskError::NotFound(_) | TaskError::NoCustomer(_) => ApiError::not_found("task"),
            TaskError::NotCancellable { .. } => ApiError::new(StatusCode::CONFLICT, "conflict", message),
            TaskError::Accounts(a) => a.into(),
            TaskError::Db(_) | TaskError::Corrupt(_) => ApiError::internal("tasks", &message),
        }
    }
}

impl From<BillingError> for ApiError {
    fn from(e: BillingError) -> ApiError {
        let message = e.to_string();
        match e {
            BillingError::Invalid { .. } => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", message),
            BillingError::NotFound(what) => ApiError::not_found(what),
            BillingError::Signature(_) => ApiError::new(StatusCode::BAD_REQUEST, "bad_signature", message),
            BillingError::Malformed(_) => ApiError::new(StatusCode::BAD_REQUEST, "malformed", message),
            // Stripe's card errors are the customer's to fix, in their words.
            BillingError::Stripe { status: 402, message: stripe_says, .. } => ApiError::new(
                StatusCode::PAYMENT_REQUIRED,
                "card_declined",
                format!("{stripe_says} Nothing was changed: update your card from Manage billing, then try again."),
            ),
            BillingError::Stripe { .. } | BillingError::Unreachable(_) => {
                ApiError::new(StatusCode::BAD_GATEWAY, "stripe_error", message)
            }
            BillingError::Config(_) => {
                tracing::error!(error = %message, "billing is not configured");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "billing_not_configured",
                    "billing is not fully configured on this server yet; the operator has been told",
                )
            }
            BillingError::Accounts(a) => a.into(),
            BillingError::Db(_) => ApiError::internal("billing", &message),
        }
    }
}

impl From<j1msky_ops::leads::LeadError> for ApiError {
    fn from(e: j1msky_ops::leads::LeadError) -> ApiError {
        use j1msky_ops::leads::LeadError as L;
        match e {
            L::Invalid { .. } => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", e.to_string()),
            L::NotFound(what) => ApiError::not_found(what),
            L::Conflict(m) => ApiError::new(StatusCode::CONFLICT, "conflict", m),
            L::Forbidden(m) => ApiError::forbidden(m),
            L::Throttled { retry_after_secs } => {
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, "throttled", e.to_string())
                    .with_retry_after(retry_after_secs)
            }
            L::Accounts(a) => a.into(),
            L::Lifecycle(l) => l.into(),
            L::Db(_) => ApiError::internal("leads", &e),
        }
    }
}

impl From<LifecycleError> for ApiError {
    fn from(e: LifecycleError) -> ApiError {
        let message = e.to_string();
        match e {
            LifecycleError::NotFound(what) => ApiError::not_found(&what),
            LifecycleError::Invalid { .. } => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", message),
            LifecycleError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, "conflict", m),
            // A template the operator edited does not render: theirs to fix, so say what.
            LifecycleError::Template { .. } => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "template", message),
            LifecycleError::Transport(_) => ApiError::new(StatusCode::BAD_GATEWAY, "mail_transport", message),
            LifecycleError::Accounts(a) => a.into(),
            LifecycleError::Billing(b) => b.into(),
            LifecycleError::Db(_) => ApiError::internal("lifecycle", &message),
        }
    }
}

impl From<InsightsError> for ApiError {
    fn from(e: InsightsError) -> ApiError {
        let message = e.to_string();
        match e {
            InsightsError::NotFound(what) => ApiError::not_found(&what),
            InsightsError::Invalid { .. } => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", message),
            InsightsError::Billing(b) => b.into(),
            InsightsError::Db(_) => ApiError::internal("insights", &message),
        }
    }
}

/// Configuration history: a bad catalogue or field is 422, a missing version 404, a
/// concurrent change 409.
impl From<j1msky_ops::config_history::ConfigError> for ApiError {
    fn from(e: j1msky_ops::config_history::ConfigError) -> ApiError {
        use j1msky_ops::config_history::ConfigError as E;
        let message = e.to_string();
        match e {
            E::Invalid(_) | E::Rule { .. } => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", message),
            E::NotFound(_) => ApiError::new(StatusCode::NOT_FOUND, "not_found", message),
            E::Conflict(_) => ApiError::new(StatusCode::CONFLICT, "conflict", message),
            E::Control(c) => c.into(),
            E::Db(_) => ApiError::internal("configuration history", &message),
        }
    }
}

impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> ApiError {
        match e {
            ControlError::Rule { .. } => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", e.to_string()),
            ControlError::Failed(g) => g.into(),
        }
    }
}

/// The gateway's errors; the model endpoints render the same mapping in OpenAI's and
/// Anthropic's shapes (`gateway::llm::Failure`), whose clients know these codes.
impl From<GatewayError> for ApiError {
    fn from(e: GatewayError) -> ApiError {
        let message = e.to_string();
        match e {
            GatewayError::Route(RouteError::UnknownModel(_)) => {
                ApiError::new(StatusCode::NOT_FOUND, "model_not_found", message)
            }
            GatewayError::Route(RouteError::OutsidePlan { .. }) => {
                ApiError::new(StatusCode::FORBIDDEN, "model_not_in_plan", message)
            }
            GatewayError::Route(RouteError::NotAllowed) => {
                ApiError::new(StatusCode::FORBIDDEN, "model_not_allowed", message)
            }
            GatewayError::Limit(LimitError::Cap { retry_after_secs, .. }) => {
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limit_exceeded", message)
                    .with_retry_after(i64::try_from(retry_after_secs).unwrap_or(i64::MAX))
            }
            GatewayError::Limit(LimitError::Backlog { .. }) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "ledger_unavailable", message).with_retry_after(5)
            }
            GatewayError::Limit(LimitError::Budget { .. }) => {
                ApiError::new(StatusCode::PAYMENT_REQUIRED, "budget_exceeded", message)
            }
            GatewayError::NoActivePlan(_) => ApiError::new(StatusCode::PAYMENT_REQUIRED, "no_active_plan", message),
            GatewayError::Invalid(m) => ApiError::new(StatusCode::BAD_REQUEST, "invalid_request_error", m),
            GatewayError::Upstream(UpstreamError::Timeout) => {
                ApiError::new(StatusCode::GATEWAY_TIMEOUT, "upstream_timeout", message)
            }
            GatewayError::Upstream(UpstreamError::RateLimited { retry_after_secs }) => {
                let secs = retry_after_secs.map_or(1, |s| i64::try_from(s).unwrap_or(i64::MAX));
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, "upstream_rate_limited", message).with_retry_after(secs)
            }
            GatewayError::Upstream(UpstreamError::Overloaded { .. }) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "upstream_overloaded", message)
            }
            GatewayError::Upstream(_) => ApiError::new(StatusCode::BAD_GATEWAY, "upstream_error", message),
            GatewayError::Limit(LimitError::Db(_)) | GatewayError::Db(_) | GatewayError::Accounts(_) => {
                ApiError::internal("gateway", &message)
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"error": {"code": self.code, "message": self.message}});
        let mut resp = (self.status, axum::Json(body)).into_response();
        if let Some(secs) = self.retry_after_secs {
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        resp
    }
}

/// JSON body extractor whose rejections (bad JSON, wrong type, missing field,
/// wrong content type) answer in the same error shape with status 400/415.
pub struct JsonBody<T>(pub T);

impl<S, T> axum::extract::FromRequest<S> for JsonBody<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        use axum::extract::rejection::JsonRejection;
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(JsonBody(v)),
            Err(JsonRejection::MissingJsonContentType(_)) => Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as JSON with Content-Type: application/json",
            )),
            Err(JsonRejection::BytesRejection(r)) if r.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(too_large()),
            Err(r) => Err(ApiError::new(StatusCode::BAD_REQUEST, "bad_json", r.body_text())),
        }
    }
}

/// 413 in the common shape.
pub fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        "the request body is larger than this server accepts",
    )
}

/// Query string extractor whose rejection (a value of the wrong type) answers in the
/// same error shape with status 400, naming what was wrong, instead of axum's text.
pub struct QueryParams<T>(pub T);

impl<S, T> axum::extract::FromRequestParts<S> for QueryParams<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(QueryParams(v)),
            Err(r) => Err(ApiError::new(StatusCode::BAD_REQUEST, "bad_query", r.body_text())),
        }
    }
}
