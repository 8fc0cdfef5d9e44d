//! The router and the server loop.

use std::future::Future;
use std::net::SocketAddr;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::middleware::{from_fn, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Router;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::state::AppState;
use crate::{
    api, auth, billing_hooks, billing_pages, csrf, gateway_pages, llm, metrics_layer, pages, security_headers,
    task_pages, tasks_api,
};

/// Every route of the server, with its middleware.
pub fn router(state: AppState) -> Router {
    let max_body = state.config.max_body_bytes;
    let timeout = state.config.request_timeout;
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/", get(pages::root))
        .route("/login", get(pages::login_form).post(pages::login))
        .route("/logout", post(pages::logout))
        .route("/admin", get(pages::admin_customers))
        .route("/admin/customers", post(pages::admin_create_customer))
        .route("/admin/customers/{id}", get(pages::admin_customer))
        .route("/admin/customers/{id}/stage", post(pages::admin_set_stage))
        .route("/admin/gateway", get(gateway_pages::page))
        .route("/admin/gateway/mode", post(gateway_pages::set_mode))
        .route("/admin/gateway/caps", post(gateway_pages::set_cap))
        .route("/admin/gateway/budget", post(gateway_pages::set_budget))
        .route("/app", get(pages::app_home))
        .route("/app/tasks", get(task_pages::app_tasks).post(task_pages::app_submit))
        .route("/app/tasks/{id}", get(task_pages::app_task))
        .route("/app/tasks/{id}/cancel", post(task_pages::app_cancel))
        .route("/admin/queue", get(task_pages::admin_queue))
        .route("/admin/queue/{id}/retry", post(task_pages::admin_retry))
        .route("/admin/queue/{id}/cancel", post(task_pages::admin_cancel))
        .route("/admin/events", get(crate::events_pages::page))
        .route("/admin/events/{consumer}/{seq}/retry", post(crate::events_pages::retry))
        .route("/app/billing", get(billing_pages::page))
        .route("/app/billing/checkout", post(billing_pages::start_checkout))
        .route("/app/billing/change", post(billing_pages::change))
        .route("/app/billing/portal", post(billing_pages::portal))
        .route("/app/billing/cancel", post(billing_pages::cancel))
        .route("/app/billing/cancel/{id}/accept", post(billing_pages::accept))
        .route("/app/billing/cancel/{id}/confirm", post(billing_pages::confirm))
        .route("/app/keys", post(pages::app_create_key))
        .route("/app/keys/{id}/revoke", post(pages::app_revoke_key))
        .route("/api/v1/me", get(api::me))
        .route("/api/v1/keys", get(api::list_keys).post(api::create_key))
        .route("/api/v1/keys/{id}", delete(api::revoke_key))
        .route("/api/v1/tasks", get(tasks_api::list).post(tasks_api::submit))
        .route("/api/v1/tasks/{id}", get(tasks_api::show))
        .route("/api/v1/tasks/{id}/cancel", post(tasks_api::cancel))
        .route("/api/v1/templates", get(tasks_api::templates))
        .route("/webhooks/stripe", post(billing_hooks::stripe))
        .route("/v1/chat/completions", post(llm::openai::chat_completions))
        .route("/v1/models", get(llm::openai::models))
        .route("/v1/messages", post(llm::anthropic::messages))
        .fallback(pages::not_found)
        .layer(from_fn_with_state(state.clone(), gateway_pages::with_controls))
        .layer(from_fn_with_state(state.clone(), csrf::guard))
        .layer(from_fn_with_state(state.clone(), auth::load_session))
        .layer(from_fn_with_state(state.clone(), crate::text_guard::refuse_unstorable))
        .layer(from_fn(metrics_layer::track))
        .layer(DefaultBodyLimit::max(max_body))
        .layer(RequestBodyLimitLayer::new(max_body))
        .layer(TimeoutLayer::with_status_code(axum::http::StatusCode::REQUEST_TIMEOUT, timeout))
        .layer(TraceLayer::new_for_http())
        .layer(from_fn(security_headers::apply))
        .with_state(state)
}

async fn readyz(State(state): State<AppState>) -> Response {
    match state.db.ping().await {
        Ok(()) => (StatusCode::OK, "ready").into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "database not reachable");
            (StatusCode::SERVICE_UNAVAILABLE, "database unreachable").into_response()
        }
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    let (size, idle) = state.db.pool_stats();
    metrics::gauge!("db_pool_connections", "backend" => state.db.backend().name()).set(size as f64);
    metrics::gauge!("db_pool_idle_connections", "backend" => state.db.backend().name()).set(idle as f64);
    crate::events_pages::set_lag_gauges(&state).await;
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render()).into_response()
}

/// Serves until `shutdown` resolves, then lets in-flight requests finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}
