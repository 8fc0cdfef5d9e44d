//! The router and the server loop.

use std::future::Future;
use std::net::SocketAddr;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::middleware::{from_fn, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::nav::NavEntry;
use crate::state::AppState;
use crate::{
    accounts, auth, billing, csrf, events, gateway, insights, lifecycle, metrics_layer, openapi, ops, security_headers,
    tasks,
};

/// One area of the site: its routes and its navigation entries.
struct Area {
    router: fn() -> Router<AppState>,
    nav: &'static [NavEntry],
}

/// Every area, in navigation order; a new area is registered here and nowhere else.
const AREAS: &[Area] = &[
    Area { router: insights::router, nav: insights::NAV },
    Area { router: accounts::router, nav: accounts::NAV },
    Area { router: tasks::router, nav: tasks::NAV },
    Area { router: gateway::router, nav: gateway::NAV },
    Area { router: billing::router, nav: billing::NAV },
    Area { router: events::router, nav: events::NAV },
    Area { router: lifecycle::router, nav: lifecycle::NAV },
    Area { router: ops::router, nav: ops::NAV },
    Area { router: openapi::router, nav: openapi::NAV },
];

/// Every route of the server, with its middleware.
pub fn router(mut state: AppState) -> Router {
    state.nav = AREAS.iter().flat_map(|a| a.nav.iter().copied()).collect();
    let areas = AREAS.iter().fold(Router::new(), |r, a| r.merge((a.router)()));
    let max_body = state.config.max_body_bytes;
    let timeout = state.config.request_timeout;
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(areas)
        .fallback(accounts::not_found)
        .layer(from_fn_with_state(state.clone(), gateway::with_controls))
        .layer(from_fn_with_state(state.clone(), lifecycle::with_todo_counts))
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
    events::set_lag_gauges(&state).await;
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
