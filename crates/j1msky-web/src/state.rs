use std::sync::Arc;

use j1msky_core::catalogue::LiveCatalogue;
use j1msky_core::Clock;
use j1msky_db::Db;

/// Deployment settings of the HTTP server.
#[derive(Debug, Clone)]
pub struct WebConfig {
    /// Mark cookies `Secure` (set when the public URL is https).
    pub secure_cookies: bool,
    /// Believe `X-Forwarded-For` / `X-Forwarded-Proto` (only behind your own proxy).
    pub trust_proxy: bool,
    /// How many proxies of ours append to `X-Forwarded-For` (with `trust_proxy`): the
    /// client is the entry that many places from the right.
    pub trusted_proxies: usize,
    /// Largest request body accepted, in bytes (larger: 413).
    pub max_body_bytes: usize,
    /// Longest a request may take before 408.
    pub request_timeout: std::time::Duration,
    /// Stripe webhook endpoint secrets accepted (several while one is rotated out).
    pub stripe_webhook_secrets: Vec<String>,
    /// The URL users reach this server at (Stripe sends customers back there).
    pub public_url: Option<String>,
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig {
            secure_cookies: false,
            trust_proxy: false,
            trusted_proxies: 1,
            max_body_bytes: 2 * 1024 * 1024,
            request_timeout: std::time::Duration::from_secs(30),
            stripe_webhook_secrets: Vec::new(),
            public_url: None,
        }
    }
}

/// Everything a handler needs; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub db: Db,
    pub catalogue: LiveCatalogue,
    pub clock: Arc<dyn Clock>,
    pub config: WebConfig,
    /// The model gateway behind `/v1/*` (absent: those endpoints answer 503).
    pub gateway: Option<Arc<j1msky_gateway::Gateway>>,
    /// The areas' navigation entries, filled in by the router.
    pub(crate) nav: Arc<[crate::nav::NavEntry]>,
    /// API keys recently checked.
    pub keys: Arc<j1msky_accounts::api_keys::KeyCache>,
    /// Woken when a Stripe event is stored, so the applier runs at once.
    pub billing_wake: Arc<tokio::sync::Notify>,
    /// The Stripe client (absent: billing pages say billing is not configured).
    pub stripe: Option<j1msky_billing::Stripe>,
    /// The lifecycle engine (absent: its pages say mail is not configured).
    pub lifecycle: Option<j1msky_lifecycle::Ctx>,
    pub(crate) templates: Arc<minijinja::Environment<'static>>,
    pub(crate) metrics: metrics_exporter_prometheus::PrometheusHandle,
}

impl AppState {
    /// Wires the state; installs the Prometheus recorder once per process.
    pub fn new(db: Db, catalogue: impl Into<LiveCatalogue>, clock: Arc<dyn Clock>, config: WebConfig) -> AppState {
        AppState {
            db,
            catalogue: catalogue.into(),
            clock,
            config,
            gateway: None,
            nav: Arc::new([]),
            keys: Arc::default(),
            billing_wake: Arc::default(),
            stripe: None,
            lifecycle: None,
            templates: Arc::new(crate::templates::environment()),
            metrics: crate::metrics_layer::recorder(),
        }
    }

    /// Adds the Stripe client.
    pub fn with_stripe(mut self, stripe: j1msky_billing::Stripe) -> AppState {
        self.stripe = Some(stripe);
        self
    }

    /// Adds the lifecycle engine.
    pub fn with_lifecycle(mut self, lifecycle: j1msky_lifecycle::Ctx) -> AppState {
        self.lifecycle = Some(lifecycle);
        self
    }

    /// The insights' context (the board, the reviews, the exports).
    pub fn insights(&self) -> j1msky_insights::Ctx {
        j1msky_insights::Ctx { db: self.db.clone(), catalogue: self.catalogue.clone(), clock: self.clock.clone() }
    }

    /// Adds the model gateway.
    pub fn with_gateway(mut self, gateway: Arc<j1msky_gateway::Gateway>) -> AppState {
        self.gateway = Some(gateway);
        self
    }

    /// Now, in unix microseconds.
    pub fn now(&self) -> i64 {
        self.clock.now_micros()
    }
}
