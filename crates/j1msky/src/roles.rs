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

use crate::supervisor::{self, SupervisionArgs};
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

/// Runs until SIGTERM/SIGINT with the default self-checks (see [`run_supervised`]).
pub async fn run_until_signal(
    rt: Runtime,
    web: Option<(tokio::net::TcpListener, WebConfig)>,
    announce: impl FnOnce(Option<SocketAddr>),
) -> Result<(), Failure> {
    run_supervised(rt, web, &SupervisionArgs::default(), announce).await
}

/// Runs until SIGTERM/SIGINT: the HTTP server on `listener` when given (in-flight
/// requests finish first), then every background role stops together. Tells a
/// supervisor when it is ready and stopping, pings its watchdog while healthy, and
/// stops with [`supervisor::EXIT_UNHEALTHY`] when unhealthy (see [`supervisor::watch`]) or
/// when the HTTP server ends by itself.
pub async fn run_supervised(
    rt: Runtime,
    web: Option<(tokio::net::TcpListener, WebConfig)>,
    supervision: &SupervisionArgs,
    announce: impl FnOnce(Option<SocketAddr>),
) -> Result<(), Failure> {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let until_stopped = {
        let mut stopped = stopped.clone();
        async move {
            let _ = stopped.wait_for(|s| *s).await;
        }
    };
    let web = match web {
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
            supervisor::ready(&format!("listening on {addr}"));
            Some((listener, state))
        }
        None => {
            announce(None);
            supervisor::ready("running");
            None
        }
    };
    let server = async move {
        match web {
            Some((listener, state)) => j1msky_web::serve(listener, state, until_stopped).await,
            None => {
                until_stopped.await;
                Ok(())
            }
        }
    };
    tokio::pin!(server);
    let mut unhealthy = None;
    let served = tokio::select! {
        served = &mut server => {
            // Only we stop the server; ending on its own, it no longer serves.
            let why = match served {
                Ok(()) => "the HTTP server stopped by itself".to_string(),
                Err(e) => format!("the HTTP server failed: {e}"),
            };
            unhealthy = Some(supervisor::Unhealthy(why));
            Ok(())
        }
        _ = crate::shutdown::shutdown_signal() => {
            let _ = stop.send(true);
            (&mut server).await
        }
        u = supervisor::watch(&rt, supervision) => {
            tracing::error!(reason = %u.0, "unhealthy: stopping so that the supervisor restarts this process");
            unhealthy = Some(u);
            let _ = stop.send(true);
            (&mut server).await
        }
    };
    supervisor::stopping();
    match &unhealthy {
        // Its database may be gone: do not wait on it for ever.
        Some(_) => {
            if tokio::time::timeout(std::time::Duration::from_secs(20), rt.shutdown()).await.is_err() {
                tracing::error!("the background loops did not stop within 20 s");
            }
        }
        None => rt.shutdown().await,
    }
    if let Some(u) = unhealthy {
        return Err(Failure { code: supervisor::EXIT_UNHEALTHY, error: anyhow::anyhow!("unhealthy: {}", u.0) });
    }
    Ok(served.context("server failed")?)
}
