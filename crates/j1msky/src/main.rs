//! `j1msky`: the server, the demo and the operator's command line in one binary.
//! The command line works on the database directly, so it still works when the
//! dashboard is down.

mod accounts_cmd;
mod alert_cmd;
mod config_cmd;
mod context;
mod db_cmd;
mod demo;
mod demo_history;
mod events_cmd;
mod gateway_cmd;
mod kpi_cmd;
mod lead_cmd;
mod lifecycle_cmd;
mod output;
mod report_cmd;
mod roles;
mod serve;
mod shutdown;
mod stripe_cmd;
mod supervisor;
mod task_cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::context::Globals;

/// j1msky: the back office for selling AI agent teams by subscription.
#[derive(Debug, Parser)]
#[command(name = "j1msky", version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(flatten)]
    globals: Globals,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the HTTP server (dashboards and JSON API).
    Serve(serve::ServeArgs),
    /// Run a self-contained demo: SQLite under a data dir, seeded operator and customers.
    Demo(demo::DemoArgs),
    /// Inspect the business catalogue.
    #[command(subcommand)]
    Config(config_cmd::ConfigCommand),
    /// Database maintenance: migrations, backups and restore.
    #[command(subcommand)]
    Db(db_cmd::DbCommand),
    /// Customers and their stage in the revenue workflow.
    #[command(subcommand)]
    Customer(accounts_cmd::CustomerCommand),
    /// Operator and customer users.
    #[command(subcommand)]
    User(accounts_cmd::UserCommand),
    /// Customer API keys.
    #[command(subcommand)]
    Key(accounts_cmd::KeyCommand),
    /// The model gateway's runtime controls: cost mode, hourly caps, budgets.
    #[command(subcommand)]
    Gateway(gateway_cmd::GatewayCommand),
    /// The daily cost review: upstream calls and spend by model, team and customer.
    Costs(gateway_cmd::CostsArgs),
    /// Customers' tasks: submit, list, show, cancel.
    #[command(subcommand)]
    Task(task_cmd::TaskCommand),
    /// Run task workers without the HTTP server.
    Worker(task_cmd::WorkerArgs),
    /// Stripe: catalogue sync, reconcile missed webhooks, event counts, checkout links.
    #[command(subcommand)]
    Stripe(stripe_cmd::StripeCommand),
    /// The event outbox and its consumers: tail, consumers, retry, replay.
    #[command(subcommand)]
    Events(events_cmd::EventsCommand),
    /// Onboarding and retention: journeys, messages, suppressions, to-dos, surveys, newsletter.
    #[command(subcommand)]
    Lifecycle(lifecycle_cmd::LifecycleCommand),
    /// The operator's numbers: MRR and its movements, churn, margins, activation, NPS, CAC.
    Kpi(kpi_cmd::KpiArgs),
    /// The morning and evening reviews as text (what the report mails contain).
    Report(report_cmd::ReportArgs),
    /// Operator alerts: list, acknowledge, resolve.
    #[command(subcommand)]
    Alert(alert_cmd::AlertCommand),
    /// Leads from the start page: list, qualify, start a trial; pilot mode.
    #[command(subcommand)]
    Lead(lead_cmd::LeadCommand),
    /// Simulated third-party services (for the demo, tests and benchmarks).
    #[command(subcommand)]
    Sim(gateway_cmd::SimCommand),
}

/// A failure with the exit code it deserves.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub error: anyhow::Error,
}

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure { code: 1, error: e.into() }
    }
}

/// Exit code for an invalid catalogue or invalid input.
pub const EXIT_INVALID: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            if failure.code != 0 {
                eprintln!("error: {:#}", failure.error);
            }
            ExitCode::from(failure.code)
        }
    }
}

async fn run(cli: Cli) -> Result<(), Failure> {
    let g = cli.globals;
    match cli.command {
        Command::Serve(args) => serve::run(&g, args).await,
        Command::Demo(args) => demo::run(&g, args).await,
        Command::Config(c) => config_cmd::config(&g, c).await,
        Command::Db(c) => db_cmd::db(&g, c).await,
        Command::Report(a) => report_cmd::report(&g, a).await,
        Command::Alert(c) => alert_cmd::alert(&g, c).await,
        Command::Lead(c) => lead_cmd::lead(&g, c).await,
        Command::Customer(c) => accounts_cmd::customer(&g, c).await,
        Command::User(c) => accounts_cmd::user(&g, c).await,
        Command::Key(c) => accounts_cmd::key(&g, c).await,
        Command::Gateway(c) => gateway_cmd::gateway(&g, c).await,
        Command::Costs(a) => gateway_cmd::costs(&g, a).await,
        Command::Stripe(c) => stripe_cmd::stripe(&g, c).await,
        Command::Sim(c) => gateway_cmd::sim(c).await,
        Command::Events(c) => events_cmd::events(&g, c).await,
        Command::Kpi(c) => kpi_cmd::kpi(&g, c).await,
        Command::Lifecycle(c) => lifecycle_cmd::lifecycle(&g, c).await,
        Command::Task(c) => task_cmd::task(&g, c).await,
        Command::Worker(a) => task_cmd::worker(&g, a).await,
    }
}
