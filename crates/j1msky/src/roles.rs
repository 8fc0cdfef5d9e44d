//! What `serve`, `worker` and `demo` share: the `--roles` flag, the gateway, and running
//! the roles until SIGTERM/SIGINT under one runtime.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use j1msky_core::catalogue::LiveCatalogue;
use j1msky_db::Db;
use j1msky_gateway::{Gateway, Limits, ProviderOverride};
use j1msky_runtime::{parse_roles, Role, RoleError, Runtime, Settings};
use j1msky_web::{AppState, WebConfig};

use crate::Failure;

/// Parses `--roles`; `allowed` says which roles this command may take.
pub fn roles(flag: &str, allowed: &[Role], why_not: &'static str) -> Result<BTreeSet<Role>, Failure> {
    let invalid = |e: RoleError| Failure { code: crate::EXIT_INVALID, error: anyhow::anyhow!("--roles `{flag}`: {e}") };
    let roles = parse_roles(flag).map_err(invalid)?;
    if let Some(role) = roles.iter().find(|r| !allowed.contains(r)) {
        return Err(invalid(RoleError::NotHere { role: *role, why: why_not }));
    }
    Ok(roles)
}

/// The gateway of a long-running process. `shared_limits` keeps caps and budgets in the
/// database even on SQLite; otherwise SQLite holds them in this process (refused, with
/// the reason, while another process holds them).
pub fn gateway(
    db: &Db,
    catalogue: impl Into<LiveCatalogue>,
    overrides: &HashMap<String, ProviderOverride>,
    shared_limits: bool,
) -> Result<Arc<Gateway>, Failure> {
    let limits = if shared_limits { Limits::Shared } else { Limits::ByBackend };
    let gateway = Gateway::builder(db.clone(), catalogue)
        .overrides(overrides.clone())
        .limits(limits)
        .build()
        .map_err(|e| Failure { code: crate::EXIT_INVALID, error: e.into() })?;
    Ok(Arc::new(gateway))
}

/// Starts the background roles of `settings` on `gateway`: the one place `serve`,
/// `worker` and `demo` get their loops from, so a role's new loop is one line here:
/// `rt.spawn(Role::Reactions, "name", future_taking(rt.stop_signal()));` (it starts
/// only in processes with that role, and `shutdown` waits for it).
pub async fn start(gateway: Arc<Gateway>, settings: Settings) -> Result<Runtime, Failure> {
    let rt = Runtime::start(gateway, settings).await.context("cannot take back abandoned tasks")?;
    Ok(rt)
}

/// Runs until SIGTERM/SIGINT: the HTTP server on `listener` when given (in-flight
/// requests finish first), then every background role stops together.
pub async fn run_until_signal(
    rt: Runtime,
    web: Option<(tokio::net::TcpListener, WebConfig)>,
    announce: impl FnOnce(Option<SocketAddr>),
) -> Result<(), Failure> {
    let served = match web {
        Some((listener, config)) => {
            let addr = listener.local_addr().context("listening socket has no address")?;
            let mut state = AppState::new(rt.db().clone(), rt.catalogue().clone(), rt.clock().clone(), config)
                .with_gateway(rt.gateway().clone());
            if let Some(stripe) = rt.stripe() {
                state = state.with_stripe(stripe.clone());
            }
            if let Some(lifecycle) = rt.lifecycle() {
                state = state.with_lifecycle(lifecycle);
            }
            state.billing_wake = rt.billing_wake().clone();
            tracing::info!(%addr, "listening");
            announce(Some(addr));
            j1msky_web::serve(listener, state, crate::shutdown::shutdown_signal()).await.context("server failed")
        }
        None => {
            announce(None);
            crate::shutdown::shutdown_signal().await;
            Ok(())
        }
    };
    rt.shutdown().await;
    Ok(served?)
}
