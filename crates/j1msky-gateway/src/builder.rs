//! The one way a gateway is put together, so the server, the worker, the demo, the
//! tests and the bench differ only in what they say differently from the defaults.

use std::collections::HashMap;
use std::sync::Arc;

use j1msky_core::catalogue::LiveCatalogue;
use j1msky_core::{Clock, SystemClock};
use j1msky_db::Db;

use crate::gateway::{Gateway, ProviderOverride, RetryPolicy};
use crate::providers::Timeouts;
use crate::GatewayError;

/// Where caps and budgets are held.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Limits {
    /// In memory on SQLite (one process), in the database on PostgreSQL.
    #[default]
    ByBackend,
    /// In this process's memory, persisted by group commit; refused while another
    /// process holds this database's limits.
    InProcess,
    /// As `InProcess`, refusing calls while more than this many ledger rows wait.
    InProcessBounded(usize),
    /// In the database, shared by every process on it.
    Shared,
}

/// Settings for [`Gateway::builder`]; every one has a production default.
pub struct GatewayBuilder {
    db: Db,
    catalogue: LiveCatalogue,
    clock: Arc<dyn Clock>,
    overrides: HashMap<String, ProviderOverride>,
    timeouts: Timeouts,
    retry: RetryPolicy,
    limits: Limits,
}

impl Gateway {
    /// A gateway on `db` routing by `catalogue` (a live handle follows applied versions): the system clock, the providers the
    /// catalogue names with keys from its environment variables, default timeouts and
    /// retries, limits as suits the backend.
    pub fn builder(db: Db, catalogue: impl Into<LiveCatalogue>) -> GatewayBuilder {
        GatewayBuilder {
            db,
            catalogue: catalogue.into(),
            clock: Arc::new(SystemClock),
            overrides: HashMap::new(),
            timeouts: Timeouts::default(),
            retry: RetryPolicy::default(),
            limits: Limits::default(),
        }
    }
}

impl GatewayBuilder {
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Sends some providers elsewhere (a proxy, the simulated provider).
    pub fn overrides(mut self, overrides: HashMap<String, ProviderOverride>) -> Self {
        self.overrides.extend(overrides);
        self
    }

    /// Sends every provider to one server speaking both wire formats (the simulated
    /// provider), see [`ProviderOverride::all_to`].
    pub fn all_providers_at(self, openai_base: &str, anthropic_base: &str, api_key: &str) -> Self {
        let all = ProviderOverride::all_to(&self.catalogue, openai_base, anthropic_base, api_key);
        self.overrides(all)
    }

    pub fn timeouts(mut self, timeouts: Timeouts) -> Self {
        self.timeouts = timeouts;
        self
    }

    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Fails only when limits are to be held in this process and another holds them.
    pub fn build(self) -> Result<Gateway, GatewayError> {
        let gateway = Gateway::new(self.db, self.catalogue, self.clock, &self.overrides, self.timeouts, self.retry);
        match self.limits {
            Limits::ByBackend => gateway.default_limits(),
            Limits::InProcess => gateway.in_process_limits(),
            Limits::InProcessBounded(n) => gateway.in_process_limits_bounded(n),
            Limits::Shared => Ok(gateway),
        }
    }
}
