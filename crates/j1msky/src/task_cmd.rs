//! `j1msky task submit|list|show|cancel` (through the same domain functions as the API
//! and the dashboard) and `j1msky worker` (task workers in their own process).

use std::collections::BTreeMap;
use std::sync::Arc;

use clap::{Args, Subcommand};
use j1msky_core::Money;
use j1msky_runtime::{Role, Settings};
use j1msky_tasks::{NewTask, Priority, TaskError, TaskState};

use crate::context::{self, Globals};
use crate::output::{self, opt, when};
use crate::{Failure, EXIT_INVALID};

#[derive(Debug, Subcommand)]
pub enum TaskCommand {
    /// Submit a task for a customer: a prompt, or a template with its fields.
    Submit {
        /// Customer id (`cus_…`).
        #[arg(long)]
        customer: String,
        /// The team: code, content, research, business…
        #[arg(long)]
        team: String,
        /// The prompt (or use --template with --field).
        #[arg(long)]
        prompt: Option<String>,
        /// A template of the team.
        #[arg(long)]
        template: Option<String>,
        /// A template field, `name=value` (repeatable).
        #[arg(long = "field", value_name = "NAME=VALUE")]
        fields: Vec<String>,
        #[arg(long)]
        title: Option<String>,
        /// high, normal or low.
        #[arg(long, default_value = "normal")]
        priority: String,
        /// A retried submit with the same key makes no second task.
        #[arg(long)]
        idempotency_key: Option<String>,
    },
    /// Tasks, newest first.
    List {
        #[arg(long)]
        customer: Option<String>,
        /// queued, running, succeeded, failed or cancelled.
        #[arg(long)]
        state: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// A task with each step's output, cost and time.
    Show { id: String },
    /// Cancel a queued or running task.
    Cancel { id: String },
}

/// `j1msky worker`.
#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// Workers in this process.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// Answer every model call from a simulated provider in this process.
    #[arg(long)]
    pub simulated_providers: bool,
    /// Latency of each simulated answer, in milliseconds.
    #[arg(long, default_value_t = 0, requires = "simulated_providers")]
    pub sim_latency_ms: u64,
    /// Seconds a claim lasts without a heartbeat (a dead worker's task is taken again after it).
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub lease_secs: u64,
    /// What this process runs, comma-separated: tasks, billing (Stripe applier, billing
    /// jobs when a Stripe key is set, API usage meter), reactions.
    #[arg(long, default_value = "tasks,billing,reactions")]
    pub roles: String,
    /// The public base URL links in mail point to.
    #[arg(long, env = "J1MSKY_PUBLIC_URL")]
    pub public_url: Option<String>,
    #[command(flatten)]
    pub mail: crate::serve::MailArgs,
    #[command(flatten)]
    pub stripe: crate::stripe_cmd::Conn,
    #[command(flatten)]
    pub backup: crate::db_cmd::BackupArgs,
    #[command(flatten)]
    pub supervision: crate::supervisor::SupervisionArgs,
}

fn fail(e: TaskError) -> Failure {
    let code = match e {
        TaskError::Invalid { .. }
        | TaskError::UnknownTeam { .. }
        | TaskError::TeamNotInPlan { .. }
        | TaskError::LimitReached { .. }
        | TaskError::NoActivePlan(_)
        | TaskError::NotFound(_)
        | TaskError::NoCustomer(_)
        | TaskError::NotCancellable { .. } => EXIT_INVALID,
        _ => 1,
    };
    Failure { code, error: e.into() }
}

pub async fn task(g: &Globals, cmd: TaskCommand) -> Result<(), Failure> {
    let db = context::open_db(g).await?;
    let catalogue = context::catalogue_in_force(g, &db).await?;
    let result = run(g, &db, &catalogue, cmd).await;
    db.close().await;
    result
}

async fn run(
    g: &Globals,
    db: &j1msky_db::Db,
    catalogue: &j1msky_core::catalogue::Catalogue,
    cmd: TaskCommand,
) -> Result<(), Failure> {
    match cmd {
        TaskCommand::Submit { customer, team, prompt, template, fields, title, priority, idempotency_key } => {
            let mut map = BTreeMap::new();
            for f in fields {
                let (k, v) = f.split_once('=').ok_or_else(|| Failure {
                    code: EXIT_INVALID,
                    error: anyhow::anyhow!("--field `{f}`: expected NAME=VALUE"),
                })?;
                map.insert(k.to_string(), v.to_string());
            }
            let input = NewTask {
                team,
                title,
                prompt,
                template,
                fields: map,
                priority: priority.parse::<Priority>().map_err(fail)?,
                category: None,
            };
            let done =
                j1msky_tasks::submit(db, catalogue, &customer, &input, idempotency_key.as_deref(), context::now())
                    .await
                    .map_err(fail)?;
            let verb = if done.replayed { "already submitted" } else { "queued" };
            output::done(
                g,
                &format!("{} {verb}: {} ({} team)", done.task.id, done.task.title, done.task.team),
                serde_json::json!({"task": done.task, "replayed": done.replayed}),
            );
        }
        TaskCommand::List { customer, state, limit } => {
            let state = state.as_deref().map(str::parse::<TaskState>).transpose().map_err(fail)?;
            let tasks = j1msky_tasks::list(db, customer.as_deref(), state, limit).await.map_err(fail)?;
            output::list(
                g,
                &tasks,
                &["id", "customer", "team", "state", "title", "cost", "queued", "waiting for"],
                |t| {
                    vec![
                        t.id.clone(),
                        t.customer_id.clone(),
                        t.team.clone(),
                        t.state.as_str().to_string(),
                        t.title.chars().take(40).collect(),
                        Money::from_micros(t.cost_micros).to_string(),
                        when(Some(t.queued_at)),
                        opt(t.wait_reason.clone().or(t.error.clone())),
                    ]
                },
            );
        }
        TaskCommand::Show { id } => {
            let d = j1msky_tasks::get(db, &id, None).await.map_err(fail)?;
            if g.json {
                output::json(&d);
            } else {
                let t = &d.task;
                println!("{} — {} ({} team, {})", t.id, t.title, t.team, t.state.as_str());
                println!("customer {}  priority {:?}  attempts {}", t.customer_id, t.priority, t.attempts);
                println!(
                    "queued {}  started {}  finished {}",
                    when(Some(t.queued_at)),
                    when(t.started_at),
                    when(t.finished_at)
                );
                println!(
                    "model cost {}  tier {}  charge {}",
                    Money::from_micros(t.cost_micros),
                    opt(t.tier.clone()),
                    opt(t.charge_micros.map(Money::from_micros))
                );
                if let Some(w) = &t.wait_reason {
                    println!("waiting: {w} (until {})", when(Some(t.not_before)));
                }
                if let Some(e) = &t.error {
                    println!("last error: {e}");
                }
                for s in &d.steps {
                    println!(
                        "\n[{}] {} on {} — {} in / {} out tokens, {}, {} ms\n{}",
                        s.step,
                        s.role,
                        s.model,
                        s.input_tokens,
                        s.output_tokens,
                        Money::from_micros(s.cost_micros),
                        s.latency_micros / 1000,
                        s.output
                    );
                }
            }
        }
        TaskCommand::Cancel { id } => {
            let t = j1msky_tasks::cancel(db, &id, None, "operator", context::now()).await.map_err(fail)?;
            output::done(g, &format!("{} cancelled", t.id), serde_json::json!({"task": t}));
        }
    }
    Ok(())
}

/// `j1msky worker`: every background role without the HTTP server (any number of these
/// beside `serve` on PostgreSQL). Stops on SIGTERM/SIGINT after the task in hand.
pub async fn worker(g: &Globals, args: WorkerArgs) -> Result<(), Failure> {
    context::init_logging(g);
    let roles = crate::roles::roles(&args.roles, &Role::BACKGROUND, "run `j1msky serve` for the HTTP server")?;
    let catalogue = Arc::new(context::load_catalogue(g)?);
    let stripe = crate::serve::stripe_if_configured(&catalogue, &args.stripe)?;
    let db = context::open_db(g).await?;
    let (_sim, overrides) = if args.simulated_providers {
        let (sim, o) =
            crate::serve::simulated_providers(&catalogue, std::time::Duration::from_millis(args.sim_latency_ms))
                .await?;
        eprintln!("SIMULATED model providers at http://{}: answers do not come from real models", sim.addr);
        (Some(sim), o)
    } else {
        (None, Default::default())
    };
    // PostgreSQL: limits shared in the database with every other process. SQLite: this
    // process must hold them (refused, with the reason, while a server holds them).
    let live = context::live_catalogue(g, &db).await?;
    let gateway = crate::roles::gateway(&db, live, &overrides, false)?;
    let worker_config = j1msky_tasks::WorkerConfig {
        lease: std::time::Duration::from_secs(args.lease_secs),
        ..j1msky_tasks::WorkerConfig::default()
    };
    let workers = args.workers.max(1);
    let mail = args.mail.settings(args.public_url.as_deref(), context::templates_dir(g))?;
    let backup = args.backup.schedule(g, &db);
    let settings = Settings { roles, workers, worker_config, worker_prefix: "worker", stripe, mail, backup };
    let rt = crate::roles::start(gateway, settings).await?;
    let backend = db.backend().name();
    crate::roles::run_supervised(rt, None, &args.supervision, |_| {
        println!("j1msky worker: roles {}, {workers} task workers on {backend}", args.roles);
    })
    .await
}
