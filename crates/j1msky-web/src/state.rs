use std::sync::Arc;

use j1msky_core::catalogue::Catalogue;
use j1msky_core::Clock;
use j1msky_db::Db;

/// Deployment settings of the HTTP server.
#[derive(Debug, Clone)]
pub struct WebConfig {
    /// Mark cookies `Secure` (set when the public URL is https).
    pub secure_cookies: bool,
    /// Believe `X-Forwarded-For` / `X-Forwarded-Proto` (only behind your own proxy).
    pub trust_proxy: bool,
    /// Largest request body accepted, in bytes (larger: 413).
    pub max_body_bytes: usize,
    /// Longest a request may take before 408.
    pub request_timeout: std::time::Duration,
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig {
            secure_cookies: false,
            trust_proxy: false,
            max_body_bytes: 2 * 1024 * 1024,
            request_timeout: std::time::Duration::from_secs(30),
        }
    }
}

/// Everything a handler needs; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub db: Db,
    pub catalogue: Arc<Catalogue>,
    pub clock: Arc<dyn Clock>,
    pub config: WebConfig,
    pub(crate) templates: Arc<minijinja::Environment<'static>>,
    pub(crate) metrics: metrics_exporter_prometheus::PrometheusHandle,
}

impl AppState {
    /// Wires the state; installs the Prometheus recorder once per process.
    pub fn new(db: Db, catalogue: Arc<Catalogue>, clock: Arc<dyn Clock>, config: WebConfig) -> AppState {
        AppState {
            db,
            catalogue,
            clock,
            config,
            templates: Arc::new(crate::render::environment()),
            metrics: crate::metrics_layer::recorder(),
        }
    }

    /// Now, in unix microseconds.
    pub fn now(&self) -> i64 {
        self.clock.now_micros()
    }
}
