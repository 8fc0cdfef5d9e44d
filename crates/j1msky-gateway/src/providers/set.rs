//! The provider clients of one gateway, kept in step with the catalogue in force: when an
//! applied version moves an endpoint or names another key variable, the next call builds
//! the set again, so no restart is needed. A call already under way holds its own
//! `Arc` of the client it started with and finishes on it.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use j1msky_core::catalogue::{Catalogue, LiveCatalogue};

use super::{ProviderClient, Timeouts};
use crate::gateway::ProviderOverride;

/// The clients built for one catalogue version.
struct Built {
    version: Option<i64>,
    clients: HashMap<String, Arc<ProviderClient>>,
}

/// Every provider's client, rebuilt on the first call after the catalogue version changes.
pub(crate) struct ProviderSet {
    overrides: HashMap<String, ProviderOverride>,
    timeouts: Timeouts,
    built: ArcSwap<Built>,
}

impl ProviderSet {
    /// Clients for the providers of the catalogue `live` serves now; an override (the
    /// simulated provider, a proxy) wins over the catalogue's endpoint and key variable.
    pub(crate) fn new(live: &LiveCatalogue, overrides: &HashMap<String, ProviderOverride>, timeouts: Timeouts) -> Self {
        let (version, catalogue) = live.versioned();
        let clients = build(catalogue, overrides, timeouts, &HashMap::new());
        ProviderSet { overrides: overrides.clone(), timeouts, built: ArcSwap::from_pointee(Built { version, clients }) }
    }

    /// The client of provider `id` under the catalogue `live` serves now.
    pub(crate) fn get(&self, live: &LiveCatalogue, id: &str) -> Option<Arc<ProviderClient>> {
        let (version, catalogue) = live.versioned();
        let built = self.built.load();
        if built.version == version {
            return built.clients.get(id).cloned();
        }
        // Two calls may both rebuild after a swap; both build the same set and the last
        // store wins, which costs one spare build and loses nothing.
        let clients = build(catalogue, &self.overrides, self.timeouts, &built.clients);
        let client = clients.get(id).cloned();
        self.built.store(Arc::new(Built { version, clients }));
        tracing::info!(version = ?version, "provider clients follow the catalogue version in force");
        client
    }
}

/// One client per provider of `catalogue`. A provider whose endpoint, kind and key did not
/// change keeps its client from `before`, with its warm connections.
fn build(
    catalogue: &Catalogue,
    overrides: &HashMap<String, ProviderOverride>,
    timeouts: Timeouts,
    before: &HashMap<String, Arc<ProviderClient>>,
) -> HashMap<String, Arc<ProviderClient>> {
    catalogue
        .providers
        .iter()
        .map(|(id, p)| {
            let o = overrides.get(id);
            let key = match o {
                Some(o) => o.api_key.clone(),
                None => std::env::var(&p.api_key_env).unwrap_or_default(),
            };
            let fresh = ProviderClient::new(id, p, o.map(|o| o.base_url.as_str()), key, timeouts);
            let client = match before.get(id) {
                Some(old) if same_endpoint(old, &fresh) => old.clone(),
                _ => Arc::new(fresh),
            };
            (id.clone(), client)
        })
        .collect()
}

fn same_endpoint(a: &ProviderClient, b: &ProviderClient) -> bool {
    a.kind == b.kind && a.base_url == b.base_url && a.api_key == b.api_key
}
