//! `j1msky gateway …` (cost mode, caps, budgets), `j1msky costs` (the daily cost review)
//! and `j1msky sim provider` (the simulated model provider).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use j1msky_core::windows;
use j1msky_core::Money;
use j1msky_gateway::controls;
use j1msky_gateway::ledger::{self, Group};
use j1msky_gateway::policy::Mode;
use j1msky_gateway::{panel, GatewayError};

use crate::context::{self, Globals};
use crate::output::{self, opt, when};
use crate::{Failure, EXIT_INVALID};

#[derive(Debug, Subcommand)]
pub enum GatewayCommand {
    /// The cost mode, every cap with this hour's usage, and today's budget.
    Status,
    /// Switch the cost mode: normal, opus-paused or cheap-only.
    Mode {
        /// normal, opus-paused (Opus requests go to the next model down) or cheap-only.
        mode: String,
        /// Why (kept in the configuration history, the audit log and the event).
        #[arg(long)]
        reason: String,
    },
    /// Set an hourly request cap: `global`, `provider:ID`, `model:ID` or `customer:ID`.
    Cap {
        /// The scope to cap.
        scope: String,
        /// Requests per hour, or `default` to go back to the catalogue's cap.
        #[arg(allow_hyphen_values = true)]
        cap: String,
        /// Why (kept in the configuration history).
        #[arg(long)]
        reason: String,
    },
    /// Set the business's daily spending budget (USD, e.g. `75.00`), or `default`.
    DailyBudget {
        /// USD amount or `default`.
        #[arg(allow_hyphen_values = true)]
        amount: String,
        /// Why (kept in the configuration history).
        #[arg(long)]
        reason: String,
    },
    /// Set a customer's monthly spending budget (USD), or `none` to remove it (its plan's
    /// `monthly_model_budget` then applies).
    CustomerBudget {
        /// Customer id (`cus_…`).
        customer: String,
        /// USD amount or `none`.
        #[arg(allow_hyphen_values = true)]
        amount: String,
        /// Why (kept in the configuration history).
        #[arg(long)]
        reason: String,
    },
}

/// `j1msky costs`.
#[derive(Debug, Args)]
pub struct CostsArgs {
    /// The day to review, `YYYY-MM-DD` in the business's time zone (default: today).
    #[arg(long)]
    day: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum SimCommand {
    /// Run the simulated model provider (OpenAI and Anthropic formats on one port).
    Provider(SimArgs),
    /// Run the fake Stripe (v1 API subset, signed webhooks).
    Stripe(crate::stripe_cmd::SimStripeArgs),
}

#[derive(Debug, Args)]
pub struct SimArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9100")]
    listen: SocketAddr,
    /// Milliseconds to wait before answering.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Milliseconds between streamed chunks.
    #[arg(long, default_value_t = 0)]
    chunk_delay_ms: u64,
    /// Output tokens of a full answer.
    #[arg(long, default_value_t = 32)]
    answer_tokens: u32,
    /// The prompt's token count in percent of one token per 4 bytes (400: a token per
    /// byte, as a byte-level tokenizer counts dense numbers or rare scripts).
    #[arg(long, default_value_t = 100)]
    input_token_percent: u32,
    /// The only API key accepted (default: any non-empty key).
    #[arg(long, env = "J1MSKY_SIM_API_KEY")]
    api_key: Option<String>,
    /// Random faults, e.g. `--fault-rate 429=0.05 --fault-rate 500=0.01`.
    #[arg(long, value_parser = j1msky_sim::parse_rate)]
    fault_rate: Vec<(j1msky_sim::Fault, f64)>,
    /// Seconds a `timeout` fault keeps the caller waiting.
    #[arg(long, default_value_t = 300)]
    hang_secs: u64,
    /// Answer at most this many requests per clock minute; beyond, 429 until the next.
    #[arg(long)]
    rate_limit_per_minute: Option<u32>,
}

fn invalid(e: impl std::fmt::Display) -> Failure {
    Failure { code: EXIT_INVALID, error: anyhow::anyhow!("{e}") }
}

fn gateway_failure(e: GatewayError) -> Failure {
    match e {
        GatewayError::Invalid(_) => invalid(e),
        other => Failure { code: 1, error: other.into() },
    }
}

fn control_failure(e: controls::ControlError) -> Failure {
    match e {
        controls::ControlError::Rule { .. } => invalid(e),
        controls::ControlError::Failed(e) => gateway_failure(e),
    }
}

pub async fn gateway(g: &Globals, cmd: GatewayCommand) -> Result<(), Failure> {
    let db = context::open_db(g).await?;
    let catalogue = context::catalogue_in_force(g, &db).await?;
    let actor = context::actor();
    let now = context::now();
    match cmd {
        GatewayCommand::Status => {
            let c = controls::load(&db).await?;
            let p = panel::load(&db, &catalogue, &c, now).await?;
            if g.json {
                output::json(&p);
            } else {
                let by = p.mode_set_by.as_deref().map(|b| format!(" (set by {b}, {})", when(p.mode_set_at)));
                println!("cost mode: {}{}", p.mode, by.unwrap_or_default());
                println!(
                    "daily budget: {} spent + {} reserved of {}{}",
                    p.budget.spent,
                    p.budget.reserved,
                    p.budget.cap,
                    if p.budget.overridden { format!(" (catalogue: {})", p.budget.default) } else { String::new() }
                );
                let rows = p
                    .caps
                    .iter()
                    .map(|r| {
                        vec![
                            r.scope.clone(),
                            r.label.clone(),
                            r.used.to_string(),
                            opt(r.cap).replace('-', "unlimited"),
                            if r.overridden {
                                format!("override (catalogue: {})", opt(r.default))
                            } else {
                                "catalogue".into()
                            },
                        ]
                    })
                    .collect();
                println!("{}", output::table(&["scope", "what", "used this hour", "cap/hour", "source"], rows));
            }
        }
        GatewayCommand::Mode { mode, reason } => {
            let mode: Mode = mode.parse().map_err(invalid)?;
            controls::set_mode_with_reason(&db, &actor, mode, &reason, now).await.map_err(control_failure)?;
            output::done(g, &format!("cost mode is now {mode}"), serde_json::json!({"mode": mode}));
        }
        GatewayCommand::Cap { scope, cap, reason } => {
            let value = controls::set_cap_text(&db, &catalogue, &actor, &scope, &cap, &reason, now)
                .await
                .map_err(control_failure)?;
            let text = match value {
                Some(n) => format!("{scope}: {n} requests/hour"),
                None => format!("{scope}: back to the catalogue's cap"),
            };
            output::done(g, &text, serde_json::json!({"scope": scope, "cap": value}));
        }
        GatewayCommand::DailyBudget { amount, reason } => {
            let value =
                controls::set_daily_budget_text(&db, &actor, &amount, &reason, now).await.map_err(control_failure)?;
            let shown = value.unwrap_or(catalogue.routing.daily_budget);
            output::done(g, &format!("daily budget: {shown}"), serde_json::json!({"daily_budget": shown}));
        }
        GatewayCommand::CustomerBudget { customer, amount, reason } => {
            let value = controls::set_customer_budget_text(&db, &actor, &customer, &amount, &reason, now)
                .await
                .map_err(control_failure)?;
            let text = match value {
                Some(m) => format!("{customer}: monthly budget {m}"),
                None => format!("{customer}: no monthly budget"),
            };
            output::done(g, &text, serde_json::json!({"customer": customer, "monthly_budget": value}));
        }
    }
    db.close().await;
    Ok(())
}

pub async fn costs(g: &Globals, args: CostsArgs) -> Result<(), Failure> {
    let db = context::open_db(g).await?;
    let result = async {
        // The day is the business's, in the time zone of the catalogue in force.
        let catalogue = context::catalogue_in_force(g, &db).await?;
        let tz: chrono_tz::Tz = catalogue.business.time_zone.parse().unwrap_or(chrono_tz::UTC);
        let (from, to) = match &args.day {
            Some(day) => windows::parse_day(tz, day)
                .ok_or_else(|| invalid(format!("--day `{day}`: expected a date as YYYY-MM-DD")))?,
            None => windows::day(tz, context::now()),
        };
        print_review(g, &db, &catalogue, from, to).await
    }
    .await;
    db.close().await;
    result
}

/// Prints the cost review of `[from, to)`: by model, team and customer.
pub async fn print_review(
    g: &Globals,
    db: &j1msky_db::Db,
    catalogue: &j1msky_core::catalogue::Catalogue,
    from: i64,
    to: i64,
) -> Result<(), Failure> {
    let by_model = ledger::review(db, Group::Model, from, to).await?;
    let by_team = ledger::review(db, Group::Team, from, to).await?;
    let mut by_customer = ledger::review(db, Group::Customer, from, to).await?;
    let names: std::collections::HashMap<String, String> =
        j1msky_accounts::customers::list(db, None, 100_000).await?.into_iter().map(|c| (c.id, c.name)).collect();
    for line in &mut by_customer {
        if let Some(name) = names.get(&line.key) {
            line.key = format!("{name} ({})", line.key);
        }
    }
    let total = by_model.iter().fold(Money::ZERO, |acc, l| acc.checked_add(l.cost).unwrap_or(acc));
    let calls: i64 = by_model.iter().map(|l| l.calls).sum();
    let day = j1msky_core::clock::format_utc(from);
    if g.json {
        output::json(&serde_json::json!({
            "day_start": day, "total": total, "calls": calls,
            "by_model": by_model, "by_team": by_team, "by_customer": by_customer,
        }));
        return Ok(());
    }
    println!(
        "Cost review for the day starting {day} ({}): {calls} upstream calls, {total}",
        catalogue.business.time_zone
    );
    for (title, lines) in [("model", &by_model), ("team", &by_team), ("customer", &by_customer)] {
        let rows = lines
            .iter()
            .map(|l| {
                vec![
                    l.key.clone(),
                    l.calls.to_string(),
                    l.failed.to_string(),
                    l.input_tokens.to_string(),
                    l.output_tokens.to_string(),
                    l.cost.to_string(),
                ]
            })
            .collect::<Vec<_>>();
        println!("\nby {title}");
        if rows.is_empty() {
            println!("(no calls)");
        } else {
            println!("{}", output::table(&[title, "calls", "failed", "tokens in", "tokens out", "cost"], rows));
        }
    }
    Ok(())
}

pub async fn sim(cmd: SimCommand) -> Result<(), Failure> {
    let a = match cmd {
        SimCommand::Provider(a) => a,
        SimCommand::Stripe(a) => return crate::stripe_cmd::sim_stripe(a).await,
    };
    let config = j1msky_sim::SimConfig {
        latency: Duration::from_millis(a.latency_ms),
        chunk_delay: Duration::from_millis(a.chunk_delay_ms),
        answer_tokens: a.answer_tokens,
        api_key: a.api_key,
        rates: a.fault_rate,
        hang: Duration::from_secs(a.hang_secs),
        rate_limit_per_minute: a.rate_limit_per_minute,
        input_token_percent: a.input_token_percent,
    };
    let listener =
        tokio::net::TcpListener::bind(a.listen).await.with_context(|| format!("cannot listen on {}", a.listen))?;
    let addr = listener.local_addr()?;
    println!("j1msky simulated model provider (not a real model) listening on http://{addr}");
    println!("  OpenAI format:    http://{addr}/v1/chat/completions");
    println!("  Anthropic format: http://{addr}/v1/messages");
    j1msky_sim::serve(listener, config, crate::shutdown::shutdown_signal()).await?;
    Ok(())
}
