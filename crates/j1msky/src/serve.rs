//! `j1msky serve`: the HTTP server, stopped gracefully by SIGTERM or SIGINT.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use j1msky_core::catalogue::Catalogue;
use j1msky_gateway::ProviderOverride;
use j1msky_runtime::{Role, Settings};
use j1msky_web::WebConfig;

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
    /// What this process runs, comma-separated: web (the HTTP server), tasks (task
    /// workers), billing (Stripe applier, billing jobs, API usage meter), reactions.
    #[arg(long, env = "J1MSKY_ROLES", default_value = "web,tasks,billing,reactions")]
    pub roles: String,
    #[command(flatten)]
    pub stripe: crate::stripe_cmd::Conn,
    #[command(flatten)]
    pub mail: MailArgs,
    #[command(flatten)]
    pub backup: crate::db_cmd::BackupArgs,
    #[command(flatten)]
    pub supervision: crate::supervisor::SupervisionArgs,
}

/// Where lifecycle mail goes (none given: the lifecycle engine does not run here and
/// its messages wait in the queue for a process that has a transport).
#[derive(Debug, Clone, Args)]
pub struct MailArgs {
    /// SMTP server: `smtp://host:port` (plain, loopback), `smtp://…?tls=required`
    /// (STARTTLS) or `smtps://host:port`, with optional `user:password@`.
    #[arg(long, env = "J1MSKY_SMTP_URL")]
    pub smtp_url: Option<String>,
    /// SMTP connections kept open (and messages sent in parallel).
    #[arg(long, env = "J1MSKY_SMTP_POOL", default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub smtp_pool: u64,
    /// Write each message to DIR/<message-id>.eml instead of sending it (demos, staging).
    #[arg(long, env = "J1MSKY_MAIL_DIR", conflicts_with = "smtp_url")]
    pub mail_dir: Option<std::path::PathBuf>,
}

impl MailArgs {
    /// The transport the flags name: SMTP, a mail directory, or none.
    pub fn transport(&self) -> Result<Option<std::sync::Arc<dyn j1msky_lifecycle::transport::Transport>>, Failure> {
        Ok(match (&self.smtp_url, &self.mail_dir) {
            (Some(url), _) => Some(std::sync::Arc::new(
                j1msky_lifecycle::transport::Smtp::from_url(url, self.smtp_pool as usize)
                    .map_err(|e| Failure { code: crate::EXIT_INVALID, error: anyhow::anyhow!("--smtp-url: {e}") })?,
            )),
            (None, Some(dir)) => Some(std::sync::Arc::new(j1msky_lifecycle::transport::Files::new(dir))),
            (None, None) => None,
        })
    }

    /// The runtime's mail settings; links in mail point to `public_url`.
    pub fn settings(
        &self,
        public_url: Option<&str>,
        templates_dir: std::path::PathBuf,
    ) -> Result<Option<j1msky_runtime::Mail>, Failure> {
        let invalid = |e: String| Failure { code: crate::EXIT_INVALID, error: anyhow::anyhow!(e) };
        let Some(transport) = self.transport()? else {
            tracing::warn!(
                "no --smtp-url or --mail-dir: lifecycle journeys, surveys, offers, staff to-dos and alert mail are off"
            );
            return Ok(None);
        };
        let Some(base_url) = public_url else {
            return Err(invalid(
                "--public-url is needed with --smtp-url or --mail-dir: links in mail point to it".into(),
            ));
        };
        Ok(Some(j1msky_runtime::Mail {
            transport,
            base_url: base_url.trim_end_matches('/').to_string(),
            templates_dir,
        }))
    }
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
    let roles = crate::roles::roles(&args.roles, &Role::ALL, "")?;
    let catalogue = context::load_catalogue(g)?;
    let mut config = args.web_config()?;
    config.stripe_webhook_secrets = webhook_secrets(&catalogue);
    if roles.contains(&Role::Web) && config.stripe_webhook_secrets.is_empty() {
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
    let stripe = stripe_if_configured(&catalogue, &args.stripe)?;
    let db = context::open_db(g).await?;
    tracing::info!(database = %context::redact(&g.database_url), backend = db.backend().name(), "database ready");
    let web = if roles.contains(&Role::Web) { Some((bind(args.listen).await?, config)) } else { None };
    let catalogue = context::live_catalogue(g, &db).await?;
    let gateway = crate::roles::gateway(&db, &catalogue, &overrides, args.shared_limits)?;
    let mail = args.mail.settings(args.public_url.as_deref(), context::templates_dir(g))?;
    let backup = args.backup.schedule(g, &db);
    let settings = Settings { roles, workers: args.workers, stripe, mail, backup, ..Settings::default() };
    let rt = crate::roles::start(gateway, settings).await?;
    crate::roles::run_supervised(rt, web, &args.supervision, |addr| match addr {
        Some(addr) => println!("j1msky listening on http://{addr}"),
        None => println!("j1msky running without the HTTP server (--roles {})", args.roles),
    })
    .await
}

/// Billing is on when a Stripe key is set; a live key needs --live (or the config's flag).
pub fn stripe_if_configured(
    catalogue: &Catalogue,
    conn: &crate::stripe_cmd::Conn,
) -> Result<Option<j1msky_billing::Stripe>, Failure> {
    match std::env::var(&catalogue.stripe.secret_key_env) {
        Ok(_) => Ok(Some(crate::stripe_cmd::client(catalogue, conn)?)),
        Err(_) => {
            tracing::warn!(env = %catalogue.stripe.secret_key_env, "no Stripe key: billing pages and jobs are off");
            Ok(None)
        }
    }
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
