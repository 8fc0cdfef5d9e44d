//! `j1msky stripe …`: catalogue sync, reconcile, event counts, checkout links; and
//! `j1msky sim stripe` (the fake Stripe, for the demo and tests).

use std::net::SocketAddr;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use j1msky_billing::checkout::{self, CheckoutRequest};
use j1msky_billing::{apply, sync, webhook, BillingError, Stripe, StripeConfig};
use j1msky_core::catalogue::Catalogue;
use serde_json::json;

use crate::context::{self, Globals};
use crate::{output, Failure, EXIT_INVALID};

#[derive(Debug, Subcommand)]
pub enum StripeCommand {
    /// Create or update products, monthly prices and offer coupons to match the catalogue.
    Sync(Conn),
    /// List Stripe's recent events, store any delivery we missed, and apply them.
    Reconcile {
        #[command(flatten)]
        conn: Conn,
        /// How far back to look, in hours (Stripe keeps events 30 days).
        #[arg(long, default_value_t = 72)]
        since_hours: i64,
    },
    /// Stored webhook events by state (pending, applied, failed).
    Events,
    /// Open a Checkout Session for a customer and print its URL.
    Checkout {
        #[command(flatten)]
        conn: Conn,
        /// Customer id (`cus_…`).
        customer: String,
        /// Plan id (starter, pro, enterprise).
        #[arg(long)]
        plan: String,
        /// Where Stripe sends the customer back.
        #[arg(long, env = "J1MSKY_PUBLIC_URL", default_value = "http://127.0.0.1:8080")]
        public_url: String,
    },
    /// Grant a customer an offer (recorded as granted by the operator): its coupon goes on
    /// the live subscription now, or on their next checkout. Once per customer unless the
    /// offer has a cool-down.
    Offer {
        #[command(flatten)]
        conn: Conn,
        /// Customer id (`cus_…`).
        customer: String,
        /// Offer id from the catalogue (win_back, we_miss_you, upgrade).
        #[arg(long)]
        offer: String,
    },
}

/// How to reach Stripe.
#[derive(Debug, Clone, Args)]
pub struct Conn {
    /// Stripe's API base URL (a fake Stripe's address in tests and the demo).
    #[arg(long, env = "J1MSKY_STRIPE_API_BASE", default_value = "https://api.stripe.com")]
    pub stripe_api_base: String,
    /// Allow a live key (sk_live_…); without it only test keys are used.
    #[arg(long)]
    pub live: bool,
}

/// The client, keyed from the environment variable the catalogue names.
pub fn client(catalogue: &Catalogue, conn: &Conn) -> Result<Stripe, Failure> {
    let env = &catalogue.stripe.secret_key_env;
    let key = std::env::var(env).map_err(|_| Failure {
        code: EXIT_INVALID,
        error: anyhow::anyhow!("set {env} to your Stripe secret key (sk_test_… for a sandbox)"),
    })?;
    Stripe::new(StripeConfig {
        base_url: conn.stripe_api_base.clone(),
        secret_key: key,
        api_version: catalogue.stripe.api_version.clone(),
        allow_live: conn.live || catalogue.stripe.live,
    })
    .map_err(billing_failure)
}

pub fn billing_failure(e: BillingError) -> Failure {
    let code = if matches!(e, BillingError::Invalid { .. } | BillingError::Config(_)) { EXIT_INVALID } else { 1 };
    Failure { code, error: e.into() }
}

pub async fn stripe(g: &Globals, cmd: StripeCommand) -> Result<(), Failure> {
    let db = context::open_db(g).await?;
    let catalogue = context::catalogue_in_force(g, &db).await?;
    let now = context::now();
    match cmd {
        StripeCommand::Sync(conn) => {
            let stripe = client(&catalogue, &conn)?;
            let r = sync::sync(&db, &stripe, &catalogue, now).await.map_err(billing_failure)?;
            let text = if r.changed_nothing() {
                format!("Stripe already matches the catalogue: nothing changed ({} objects checked)", r.unchanged.len())
            } else {
                format!(
                    "created: {}; updated: {}; unchanged: {}",
                    list_or_none(&r.created),
                    list_or_none(&r.updated),
                    r.unchanged.len()
                )
            };
            output::done(g, &text, json!({ "sync": r }));
        }
        StripeCommand::Reconcile { conn, since_hours } => {
            let stripe = client(&catalogue, &conn)?;
            let since = now / 1_000_000 - since_hours.clamp(1, 24 * 30) * 3600;
            let ctx = apply::Ctx { catalogue: &catalogue };
            let r = webhook::reconcile(&db, &stripe, &ctx, since, now).await.map_err(billing_failure)?;
            // What the applied events mean for the customers (their plan and stage).
            j1msky_accounts::reactions::catch_up(&db, &j1msky_core::SystemClock).await?;
            output::done(
                g,
                &format!(
                    "{} events listed, {} were missed and are now stored, {} applied",
                    r.listed, r.missed, r.applied
                ),
                json!({ "reconcile": r }),
            );
        }
        StripeCommand::Events => {
            let counts = webhook::counts(&db).await.map_err(billing_failure)?;
            if g.json {
                output::json(&json!(counts.iter().map(|(s, n)| json!({"state": s, "count": n})).collect::<Vec<_>>()));
            } else {
                let rows = counts.iter().map(|(s, n)| vec![s.clone(), n.to_string()]).collect();
                println!("{}", output::table(&["state", "events"], rows));
            }
        }
        StripeCommand::Offer { conn, customer, offer } => {
            let stripe = client(&catalogue, &conn)?;
            let by = j1msky_audit::Actor::cli().0;
            let grant = j1msky_billing::offers::grant(&db, &stripe, &catalogue, &customer, &offer, &by, now)
                .await
                .map_err(billing_failure)?;
            let text = match &grant.subscription_id {
                Some(sub) => format!("{offer} granted to {customer} and applied to {sub}"),
                None => format!("{offer} granted to {customer}; their next checkout carries it"),
            };
            output::done(g, &text, json!({ "grant": grant }));
        }
        StripeCommand::Checkout { conn, customer, plan, public_url } => {
            let stripe = client(&catalogue, &conn)?;
            let base = public_url.trim_end_matches('/');
            let req = CheckoutRequest {
                plan,
                success_url: format!("{base}/app/billing?checkout=done"),
                cancel_url: format!("{base}/app/billing"),
                attempt: (now / 60_000_000).to_string(),
            };
            let link =
                checkout::start(&db, &stripe, &catalogue, &customer, &req, now).await.map_err(billing_failure)?;
            output::done(g, &link.url, json!({ "checkout": link }));
        }
    }
    db.close().await;
    Ok(())
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items.join(", ")
    }
}

#[derive(Debug, Args)]
pub struct SimStripeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:12111")]
    listen: SocketAddr,
    /// Where to POST signed webhooks (e.g. http://127.0.0.1:8080/webhooks/stripe).
    #[arg(long)]
    webhook_url: Option<String>,
    /// The endpoint secret webhooks are signed with.
    #[arg(long, env = "J1MSKY_STRIPE_WEBHOOK_SECRET", default_value = "whsec_j1msky_fake")]
    webhook_secret: String,
}

pub async fn sim_stripe(a: SimStripeArgs) -> Result<(), Failure> {
    let listener =
        tokio::net::TcpListener::bind(a.listen).await.with_context(|| format!("cannot listen on {}", a.listen))?;
    let config = j1msky_sim::stripe::FakeStripeConfig {
        webhook_url: a.webhook_url.clone(),
        webhook_secret: a.webhook_secret,
        now: None,
    };
    let running = j1msky_sim::stripe::serve_stripe(listener, config).await?;
    println!("j1msky FAKE Stripe (not Stripe) listening on {}", running.base());
    println!(
        "  point j1msky at it: J1MSKY_STRIPE_API_BASE={} J1MSKY_STRIPE_SECRET_KEY=sk_test_anything",
        running.base()
    );
    match &a.webhook_url {
        Some(url) => println!("  webhooks go to {url}"),
        None => println!("  webhooks are kept, not sent (--webhook-url to send them)"),
    }
    crate::shutdown::shutdown_signal().await;
    drop(running);
    Ok(())
}
