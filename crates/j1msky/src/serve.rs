//! `j1msky serve`: the HTTP server, stopped gracefully by SIGTERM or SIGINT.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use j1msky_core::catalogue::Catalogue;
use j1msky_core::SystemClock;
use j1msky_db::Db;
use j1msky_gateway::ProviderOverride;
use j1msky_web::{AppState, WebConfig};

use crate::context::{self, Globals};
use crate::Failure;

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, env = "J1MSKY_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// The public URL users reach (an https URL marks cookies Secure).
    #[arg(long, env = "J1MSKY_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Trust X-Forwarded-For / X-Forwarded-Proto (only behind your own reverse proxy).
    #[arg(long, env = "J1MSKY_TRUST_PROXY")]
    pub trust_proxy: bool,
    /// How many reverse proxies of yours append to X-Forwarded-For (with --trust-proxy):
    /// the client address is the entry that many places from the right.
    #[arg(long, env = "J1MSKY_TRUSTED_PROXIES", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    pub trusted_proxies: u16,
    /// Largest request body accepted, in bytes.
    #[arg(long, default_value_t = 2 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Seconds a request may take before it is answered 408.
    #[arg(long, default_value_t = 30)]
    pub request_timeout_secs: u64,
    /// Send a provider's calls to another base URL (a proxy, or `j1msky sim provider`),
    /// e.g. `--provider-url moonshot=http://127.0.0.1:9100/v1`. The key still comes from
    /// the environment variable the catalogue names.
    #[arg(long, value_name = "PROVIDER=URL")]
    pub provider_url: Vec<String>,
    /// Answer every model call from a simulated provider started inside this process
    /// (no keys needed; answers are not from real models).
    #[arg(long)]
    pub simulated_providers: bool,
    /// Keep caps and budgets in the database, so several processes can share one SQLite
    /// file (slower). PostgreSQL always does; by default SQLite holds them in this
    /// process's memory and persists them every 50 ms.
    #[arg(long)]
    pub shared_limits: bool,
    /// Task workers run inside this process (0: none; run `j1msky worker` instead).
    #[arg(long, env = "J1MSKY_WORKERS", default_value_t = 2)]
    pub workers: usize,
    #[command(flatten)]
    pub stripe: crate::stripe_cmd::Conn,
}

impl ServeArgs {
    fn web_config(&self) -> Result<WebConfig, Failure> {
        let secure_cookies = match &self.public_url {
            Some(url) if url.starts_with("https://") => true,
            Some(url) if url.starts_with("http://") => false,
            Some(url) => {
                return Err(Failure {
                    code: crate::EXIT_INVALID,
                    error: anyhow::anyhow!("--public-url `{url}` must start with http:// or https://"),
                })
            }
            None => false,
        };
        Ok(WebConfig {
            secure_cookies,
            trust_proxy: self.trust_proxy,
            trusted_proxies: usize::from(self.trusted_proxies),
            max_body_bytes: self.max_body_bytes,
            request_timeout: Duration::from_secs(self.request_timeout_secs.max(1)),
            stripe_webhook_secrets: Vec::new(),
            public_url: self.public_url.clone(),
        })
    }
}

/// The webhook endpoint secrets from the environment variable the catalogue names:
/// one `whsec_…`, or several separated by commas while one is being rotated out.
pub fn webhook_secrets(catalogue: &Catalogue) -> Vec<String> {
    std::env::var(&catalogue.stripe.webhook_secret_env)
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

pub async fn run(g: &Globals, args: ServeArgs) -> Result<(), Failure> {
    context::init_logging(g);
    let catalogue = context::load_catalogue(g)?;
    let mut config = args.web_config()?;
    config.stripe_webhook_secrets = webhook_secrets(&catalogue);
    if config.stripe_webhook_secrets.is_empty() {
        tracing::warn!(
            env = %catalogue.stripe.webhook_secret_env,
            "no Stripe webhook secret: POST /webhooks/stripe refuses every delivery until it is set"
        );
    }
    let mut overrides = provider_urls(&catalogue, &args.provider_url)?;
    let _sim = if args.simulated_providers {
        let (sim, o) = simulated_providers(&catalogue, Duration::ZERO).await?;
        eprintln!("SIMULATED model providers at http://{}: answers do not come from real models", sim.addr);
        overrides.extend(o);
        Some(sim)
    } else {
        None
    };
    // Billing is on when a Stripe key is set; a live key needs --live (or the config's flag).
    let stripe = match std::env::var(&catalogue.stripe.secret_key_env) {
        Ok(_) => Some(crate::stripe_cmd::client(&catalogue, &args.stripe)?),
        Err(_) => {
            tracing::warn!(env = %catalogue.stripe.secret_key_env, "no Stripe key: billing pages are off");
            None
        }
    };
    let db = context::open_db(g).await?;
    tracing::info!(database = %context::redact(&g.database_url), backend = db.backend().name(), "database ready");
    let listener = bind(args.listen).await?;
    serve_on(
        listener,
        db,
        catalogue,
        config,
        &overrides,
        Options { shared_limits: args.shared_limits, workers: args.workers, stripe },
        |addr| {
            println!("j1msky listening on http://{addr}");
        },
    )
    .await
}

/// Parses `--provider-url ID=URL` flags; the key stays the catalogue's environment variable.
fn provider_urls(catalogue: &Catalogue, flags: &[String]) -> Result<HashMap<String, ProviderOverride>, Failure> {
    let mut out = HashMap::new();
    for flag in flags {
        let invalid = |why: String| Failure {
            code: crate::EXIT_INVALID,
            error: anyhow::anyhow!("--provider-url `{flag}`: {why}"),
        };
        let (id, url) = flag.split_once('=').ok_or_else(|| invalid("expected PROVIDER=URL".into()))?;
        let provider = catalogue.providers.get(id).ok_or_else(|| {
            invalid(format!(
                "unknown provider; the catalogue has {}",
                catalogue.providers.keys().cloned().collect::<Vec<_>>().join(", ")
            ))
        })?;
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(invalid("the URL must start with http:// or https://".into()));
        }
        let api_key = std::env::var(&provider.api_key_env).unwrap_or_default();
        out.insert(id.to_string(), ProviderOverride { base_url: url.to_string(), api_key });
    }
    Ok(out)
}

/// Starts a simulated provider in this process and points every provider at it.
pub async fn simulated_providers(
    catalogue: &Catalogue,
    latency: Duration,
) -> Result<(j1msky_sim::Running, HashMap<String, ProviderOverride>), Failure> {
    let sim = j1msky_sim::spawn(j1msky_sim::SimConfig { latency, ..j1msky_sim::SimConfig::default() })
        .await
        .context("cannot start the simulated provider")?;
    let overrides = ProviderOverride::all_to(catalogue, &sim.openai_base(), &sim.anthropic_base(), "simulated");
    Ok((sim, overrides))
}

/// Binds the listening socket.
pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, Failure> {
    Ok(tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?)
}

/// Serves until SIGTERM/SIGINT, then lets in-flight requests finish and closes the pool.
pub async fn serve_on(
    listener: tokio::net::TcpListener,
    db: Db,
    catalogue: Catalogue,
    config: WebConfig,
    overrides: &HashMap<String, ProviderOverride>,
    options: Options,
    announce: impl FnOnce(SocketAddr),
) -> Result<(), Failure> {
    let addr = listener.local_addr().context("listening socket has no address")?;
    let catalogue = Arc::new(catalogue);
    let clock: Arc<dyn j1msky_core::Clock> = Arc::new(SystemClock);
    let gateway = j1msky_gateway::Gateway::new(
        db.clone(),
        catalogue.clone(),
        clock.clone(),
        overrides,
        j1msky_gateway::providers::Timeouts::default(),
        j1msky_gateway::RetryPolicy::default(),
    );
    let gateway = Arc::new(if options.shared_limits {
        gateway
    } else {
        gateway.default_limits().map_err(|e| Failure { code: crate::EXIT_INVALID, error: e.into() })?
    });
    tracing::info!(in_process = gateway.limits_in_process(), "caps and budgets");
    take_back_abandoned_tasks(&gateway, &db, clock.now_micros()).await?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let workers = spawn_workers(&db, &catalogue, &gateway, &clock, options.workers, Default::default(), &stopped);
    let sweeper = spawn_reservation_sweeper(&gateway, &stopped);
    // Pay-per-task customers' direct API calls become charges once their day is over.
    // Spawned loops here are tracked: each takes `stopped` and is awaited below.
    #[allow(clippy::disallowed_methods)]
    let meter = tokio::spawn(j1msky_tasks::api_usage::run_meter(
        db.clone(),
        catalogue.clone(),
        clock.clone(),
        Duration::from_secs(600),
        stopped.clone(),
    ));
    let mut state = AppState::new(db.clone(), catalogue.clone(), clock.clone(), config).with_gateway(gateway.clone());
    #[allow(clippy::disallowed_methods)] // tracked: awaited at shutdown below
    let billing_jobs = options.stripe.clone().map(|stripe| {
        state = state.clone().with_stripe(stripe.clone());
        tokio::spawn(j1msky_billing::jobs::run_billing_jobs(
            db.clone(),
            catalogue.clone(),
            clock.clone(),
            stripe,
            stopped.clone(),
        ))
    });
    // Event consumers (accounts applies the plan and stage billing derived), woken by
    // the applier as soon as it applied something.
    let reactions_wake = Arc::new(tokio::sync::Notify::new());
    #[allow(clippy::disallowed_methods)] // tracked: awaited at shutdown below
    let reactions = tokio::spawn(j1msky_db::consumers::run(
        db.clone(),
        j1msky_accounts::reactions::consumers(),
        clock.clone(),
        reactions_wake.clone(),
        stopped.clone(),
    ));
    #[allow(clippy::disallowed_methods)] // tracked: awaited at shutdown below
    let applier = tokio::spawn(j1msky_billing::jobs::run_applier(
        db.clone(),
        catalogue,
        clock,
        state.billing_wake.clone(),
        reactions_wake,
        Duration::from_secs(5),
        stopped.clone(),
    ));
    tracing::info!(%addr, workers = options.workers, "listening");
    announce(addr);
    j1msky_web::serve(listener, state, crate::shutdown::shutdown_signal()).await.context("server failed")?;
    // Workers finish the task in hand; an unfinished one resumes from its last step.
    let _ = stop.send(true);
    for w in workers {
        let _ = w.await;
    }
    let _ = applier.await;
    let _ = reactions.await;
    let _ = sweeper.await;
    let _ = meter.await;
    if let Some(j) = billing_jobs {
        let _ = j.await;
    }
    tracing::info!("in-flight requests finished; writing the last ledger rows and closing the database");
    gateway.flush().await;
    db.close().await;
    Ok(())
}

/// Holding a SQLite database's limits means no other process runs on it: a task still
/// running was left by one that died (kill -9, power loss), so it is taken back now.
pub async fn take_back_abandoned_tasks(gateway: &j1msky_gateway::Gateway, db: &Db, now: i64) -> Result<(), Failure> {
    if gateway.limits_in_process() {
        j1msky_tasks::reclaim::reclaim_abandoned(db, now).await.context("cannot take back abandoned tasks")?;
    }
    Ok(())
}

/// Every minute, releases the budget reservations of processes that died (limits in
/// the database only; in-memory limits carry theirs over as spent).
// Tracked: the caller keeps the handle, stops the loop through `stop` and awaits it.
#[allow(clippy::disallowed_methods)]
pub fn spawn_reservation_sweeper(
    gateway: &Arc<j1msky_gateway::Gateway>,
    stop: &tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let gateway = gateway.clone();
    let mut stop = stop.clone();
    tokio::spawn(async move {
        if gateway.limits_in_process() {
            return;
        }
        while !*stop.borrow() {
            if let Err(e) = gateway.release_expired_reservations().await {
                tracing::error!(error = %e, "cannot release expired budget reservations");
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_micros(
                    j1msky_gateway::limits::RESERVATION_RENEW_EVERY.unsigned_abs(),
                )) => {}
                _ = stop.changed() => {}
            }
        }
    })
}

/// How `serve_on` runs.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The Stripe client, when billing is configured.
    pub stripe: Option<j1msky_billing::Stripe>,
    /// Caps and budgets in the database even on SQLite (several processes on one file).
    pub shared_limits: bool,
    /// Task workers in this process.
    pub workers: usize,
}

/// Starts `n` task workers that stop when `stop` turns true.
// Tracked: the caller keeps the handles, stops them through `stop` and awaits them.
#[allow(clippy::disallowed_methods)]
pub fn spawn_workers(
    db: &Db,
    catalogue: &Arc<Catalogue>,
    gateway: &Arc<j1msky_gateway::Gateway>,
    clock: &Arc<dyn j1msky_core::Clock>,
    n: usize,
    config: j1msky_tasks::WorkerConfig,
    stop: &tokio::sync::watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let host = std::process::id();
    (0..n)
        .map(|i| {
            let worker = j1msky_tasks::Worker::new(
                db.clone(),
                catalogue.clone(),
                gateway.clone(),
                clock.clone(),
                format!("serve-{host}-{i}-{}", j1msky_core::ids::new_id("w")),
                config,
            );
            tokio::spawn(worker.run(stop.clone()))
        })
        .collect()
}
