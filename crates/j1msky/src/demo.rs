//! `j1msky demo`: everything local, nothing to configure. SQLite under a data dir, an
//! operator with a fresh password each run, and a few demo customers.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use j1msky_accounts::customers::{self, NewCustomer, NewOwner};
use j1msky_accounts::secrets;
use j1msky_accounts::users::{self, NewUser};
use j1msky_audit::Actor;
use j1msky_core::catalogue::Catalogue;
use j1msky_core::vocab::{Stage, UseCase, UserRole};
use j1msky_db::Db;
use j1msky_web::WebConfig;

use crate::context::{self, Globals};
use crate::{serve, Failure};

/// The demo operator's login.
pub const DEMO_OPERATOR: &str = "operator@demo.local";

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Address to listen on; when the default port is taken a free one is used.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Where the demo keeps its SQLite database (the global --database-url is not used).
    #[arg(long, default_value = "data/demo")]
    data_dir: PathBuf,
    /// Seed and print the logins, then exit without serving.
    #[arg(long)]
    seed_only: bool,
}

struct DemoCustomer {
    name: &'static str,
    owner: &'static str,
    stage: Stage,
    use_case: UseCase,
    plan: &'static str,
    teams: &'static [&'static str],
    expected: i64,
    time_zone: &'static str,
    /// Signed up this many days ago (the demo's history starts then).
    days_ago: i64,
    /// Cancels in the demo's history: no calls or new tasks today.
    leaves: bool,
}

const CUSTOMERS: &[DemoCustomer] = &[
    DemoCustomer {
        name: "Northwind Software",
        owner: "owner@northwind.demo",
        stage: Stage::Active,
        use_case: UseCase::Code,
        plan: "pro",
        teams: &[],
        expected: 400,
        time_zone: "America/New_York",
        days_ago: 80,
        leaves: false,
    },
    DemoCustomer {
        name: "Bluebird Content Studio",
        owner: "owner@bluebird.demo",
        stage: Stage::Trial,
        use_case: UseCase::Content,
        plan: "starter",
        teams: &["content", "research"],
        expected: 60,
        time_zone: "Europe/London",
        // Within the welcome mail's 48 hours: the demo sends it (London's daytime), and
        // Harbor's exit survey goes in Sydney's, so a demo started at any hour shows mail.
        days_ago: 1,
        leaves: false,
    },
    DemoCustomer {
        name: "Kestrel Ventures",
        owner: "owner@kestrel.demo",
        stage: Stage::Qualified,
        use_case: UseCase::Business,
        plan: "enterprise",
        teams: &[],
        expected: 1500,
        time_zone: "Asia/Singapore",
        days_ago: 20,
        leaves: false,
    },
    DemoCustomer {
        name: "Harbor Analytics",
        owner: "owner@harbor.demo",
        stage: Stage::Active,
        use_case: UseCase::Research,
        plan: "starter",
        teams: &["research", "code"],
        expected: 40,
        time_zone: "Australia/Sydney",
        days_ago: 72,
        leaves: true,
    },
];

/// The demo customers that work and pay today.
fn current(d: &&DemoCustomer) -> bool {
    matches!(d.stage, Stage::Active | Stage::Trial) && !d.leaves
}

pub async fn run(g: &Globals, args: DemoArgs) -> Result<(), Failure> {
    context::init_logging(g);
    let catalogue = context::load_catalogue(g)?;
    // The demo bills through a fake Stripe only; a live key in the environment is refused.
    if let Ok(key) = std::env::var(&catalogue.stripe.secret_key_env) {
        if key.starts_with("sk_live_") || key.starts_with("rk_live_") {
            return Err(Failure {
                code: crate::EXIT_INVALID,
                error: anyhow::anyhow!(
                    "{} holds a live Stripe key; the demo never uses one (it runs a fake Stripe). Unset it to run the demo",
                    catalogue.stripe.secret_key_env
                ),
            });
        }
    }
    let url = format!("sqlite://{}", args.data_dir.join("j1msky.db").display());
    let demo_globals = Globals { database_url: url, ..g.clone() };
    let db = context::open_db(&demo_globals).await?;
    let password = seed(&db, &catalogue).await?;
    // Model calls go to a simulated provider in this process: no keys, nothing billed.
    let (_sim, overrides) = serve::simulated_providers(&catalogue, std::time::Duration::ZERO).await?;
    // Billing runs against a fake Stripe in this process; the months behind the paying
    // customers are played on it first (its clock moved back), then it runs at today.
    let secret = format!("whsec_demo_{}", &secrets::random_token()[..16]);
    let (fake, stripe) = crate::demo_history::fake_stripe(&catalogue, &secret, context::now()).await?;
    let shared = std::sync::Arc::new(catalogue.clone());
    let made = crate::demo_history::run(&db, &shared, &overrides, &fake, &stripe).await?;
    println!(
        "Played {} days of history: {} Stripe events applied, {} tasks run on their days.",
        crate::demo_history::DAYS,
        made.events,
        made.tasks
    );
    if args.seed_only {
        print_logins(None, &args.data_dir, &password, None);
        db.close().await;
        return Ok(());
    }
    let demo_key = routed_calls(&db, &catalogue, &overrides).await?;
    let queued = seed_tasks(&db, &catalogue).await?;
    println!("Queued {queued} demo tasks; the server's workers run them through their teams (see /app and `j1msky task list`).");
    let tz: chrono_tz::Tz = catalogue.business.time_zone.parse().unwrap_or(chrono_tz::UTC);
    let (from, to) = j1msky_core::windows::day(tz, context::now());
    crate::gateway_cmd::print_review(&demo_globals, &db, &catalogue, from, to).await?;
    let listener = match serve::bind(args.listen).await {
        Ok(l) => l,
        Err(e) if args.listen.port() != 0 => {
            tracing::warn!(error = %e.error, "port taken; using a free port instead");
            serve::bind(SocketAddr::new(args.listen.ip(), 0)).await?
        }
        Err(e) => return Err(e),
    };
    let addr = listener.local_addr().map_err(anyhow::Error::from)?;
    demo_billing(&db, &catalogue, &fake, &stripe, addr).await?;
    let data_dir = args.data_dir.clone();
    let config = WebConfig { stripe_webhook_secrets: vec![secret], ..WebConfig::default() };
    let gateway = crate::roles::gateway(&db, crate::context::live_catalogue(g, &db).await?, &overrides, false)?;
    // Demo mail is written as .eml files under the data dir and shown in /admin.
    let mail = j1msky_runtime::Mail {
        transport: std::sync::Arc::new(j1msky_lifecycle::transport::Files::new(args.data_dir.join("mail"))),
        base_url: format!("http://{addr}"),
        templates_dir: crate::context::templates_dir(g),
    };
    // Hourly backups of the demo database beside it, as a deployment takes them.
    let backups = crate::db_cmd::BackupArgs {
        backup_dir: Some(args.data_dir.join("backups")),
        backup_copy_to: None,
        backup_keep_hourly: 3,
        backup_keep_daily: 1,
    };
    let settings = j1msky_runtime::Settings {
        stripe: Some(stripe),
        mail: Some(mail),
        backup: backups.schedule(&demo_globals, &db),
        ..j1msky_runtime::Settings::default()
    };
    let rt = crate::roles::start(gateway, settings).await?;
    crate::roles::run_until_signal(rt, Some((listener, config)), move |addr| {
        print_logins(addr, &data_dir, &password, Some(&demo_key));
        println!("  Billing runs against a FAKE Stripe in this process (no money moves): see /app/billing.");
        println!();
    })
    .await
}

/// The demo's trial customers subscribe through checkout once the server is up (their
/// webhooks arrive then); customers already subscribed (the history) are left alone.
async fn demo_billing(
    db: &Db,
    catalogue: &Catalogue,
    fake: &j1msky_sim::stripe::RunningStripe,
    stripe: &j1msky_billing::Stripe,
    addr: SocketAddr,
) -> Result<(), Failure> {
    let base = fake.base();
    let hooks = serde_json::json!({"url": format!("http://{addr}/webhooks/stripe")});
    let set = reqwest::Client::new().post(format!("{base}/_sim/webhooks")).json(&hooks).send().await;
    set.and_then(reqwest::Response::error_for_status).map_err(anyhow::Error::from)?;
    let all = customers::list(db, None, 10_000).await.map_err(anyhow::Error::from)?;
    let mut sessions = Vec::new();
    for demo in CUSTOMERS.iter().filter(current) {
        let Some(c) = all.iter().find(|c| c.name == demo.name) else { continue };
        if crate::demo_history::bills(demo.name)
            || j1msky_billing::changes::current(db, &c.id).await.map_err(anyhow::Error::from)?.is_some()
        {
            continue;
        }
        if demo.stage == Stage::Active {
            // An active customer had their trial before paying; the server gives none again.
            j1msky_billing::offers::record_trial_had(db, &c.id, "cli", context::now())
                .await
                .map_err(anyhow::Error::from)?;
        }
        let req = j1msky_billing::checkout::CheckoutRequest {
            plan: demo.plan.into(),
            success_url: format!("http://{addr}/app/billing?notice=checkout"),
            cancel_url: format!("http://{addr}/app/billing"),
            attempt: "demo".into(),
        };
        let link = j1msky_billing::checkout::start(db, stripe, catalogue, &c.id, &req, context::now())
            .await
            .map_err(anyhow::Error::from)?;
        sessions.push(link.session_id);
    }
    // Not awaited, but bounded: at most ~5 s of polling, then one request per session.
    #[allow(clippy::disallowed_methods)]
    tokio::spawn(async move {
        // The customers "pay" once the server answers, so the webhooks find it.
        let http = reqwest::Client::new();
        for _ in 0..100 {
            if http.get(format!("http://{addr}/healthz")).send().await.is_ok() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        for s in sessions {
            let done =
                http.post(format!("{base}/_sim/checkout/{s}/complete")).json(&serde_json::json!({})).send().await;
            if let Err(e) = done {
                tracing::warn!(error = %e, "demo checkout not completed");
            }
        }
    });
    Ok(())
}

fn print_logins(addr: Option<SocketAddr>, data_dir: &std::path::Path, password: &str, key: Option<&str>) {
    println!();
    match addr {
        Some(addr) => println!("j1msky demo is running at http://{addr}/"),
        None => println!("j1msky demo data is ready"),
    }
    println!();
    println!("  Operator login:  {DEMO_OPERATOR}");
    println!("  Password:        {password}");
    println!("  Customer owners: {} (same password)", CUSTOMERS.iter().map(|c| c.owner).collect::<Vec<_>>().join(", "));
    println!("  Data:            {} (delete it to start over)", data_dir.display());
    println!();
    if let (Some(addr), Some(key)) = (addr, key) {
        println!("  Model calls are answered by a SIMULATED provider (no keys, no real models). Try:");
        println!("    curl http://{addr}/v1/chat/completions -H 'Authorization: Bearer {key}' \\");
        println!(
            r#"      -H 'content-type: application/json' -d '{{"model":"auto","messages":[{{"role":"user","content":"hello"}}]}}'"#
        );
        println!("  Daily cost review: j1msky --database-url sqlite://{}/j1msky.db costs", data_dir.display());
        println!();
    }
    if addr.is_some() {
        println!("Press Ctrl-C to stop.");
    }
}

/// Creates the operator and demo customers when missing and gives every demo login a
/// fresh password, which is returned to be printed.
async fn seed(db: &Db, catalogue: &Catalogue) -> Result<String, Failure> {
    let actor = Actor::system();
    let now = context::now();
    let password = secrets::random_token()[..16].to_string();
    upsert_user(db, &actor, DEMO_OPERATOR, "Demo operator", UserRole::Operator, None, &password, now).await?;
    let existing = customers::list(db, None, 10_000).await.map_err(anyhow::Error::from)?;
    for demo in CUSTOMERS {
        match existing.iter().find(|c| c.name == demo.name) {
            // An earlier run made it: refresh the owner's password (and add the owner
            // if a database from before `create_with_owner` lacks one).
            Some(c) => {
                let id = Some(c.id.clone());
                upsert_user(db, &actor, demo.owner, demo.name, UserRole::Owner, id, &password, now).await?;
            }
            None => {
                let input = NewCustomer {
                    name: demo.name.into(),
                    contact_email: Some(demo.owner.into()),
                    stage: Some(demo.stage),
                    use_case: Some(demo.use_case),
                    plan: Some(demo.plan.into()),
                    chosen_teams: demo.teams.iter().map(|t| t.to_string()).collect(),
                    expected_monthly_tasks: Some(demo.expected),
                    time_zone: Some(demo.time_zone.into()),
                };
                let owner =
                    NewOwner { email: demo.owner.into(), display_name: demo.name.into(), password: password.clone() };
                let signed_up = now - demo.days_ago * 86_400_000_000;
                customers::create_with_owner(db, catalogue, &actor, input, Some(owner), signed_up)
                    .await
                    .map_err(anyhow::Error::from)?;
            }
        }
    }
    // A staff to-do per demo customer, so /admin/todos has something to show from the start
    // (the journeys open more: a stalled customer after a day, outreach after a quiet week).
    let mut tx = db.begin().await.map_err(anyhow::Error::from)?;
    for c in customers::list(db, None, 10_000).await.map_err(anyhow::Error::from)? {
        if !CUSTOMERS.iter().any(|d| d.name == c.name && !d.leaves) {
            continue;
        }
        let reason = format!("Onboarding call with {}: walk through their first tasks", c.name);
        let key = format!("demo:onboarding_call:{}", c.id);
        let todo = j1msky_lifecycle::todos::NewTodo {
            customer_id: Some(&c.id),
            reason: &reason,
            dedupe_key: &key,
            due_at: now + 86_400_000_000,
        };
        j1msky_lifecycle::todos::create(&mut tx, db.backend(), &todo, now).await.map_err(anyhow::Error::from)?;
    }
    tx.commit().await.map_err(anyhow::Error::from)?;
    Ok(password)
}

/// The category a team's calls are routed by.
fn team_category(team: &str) -> &'static str {
    match team {
        "code" => "code",
        "content" => "writing",
        "research" => "analysis",
        _ => "strategy",
    }
}

/// Runs a round of routed, metered calls through the gateway — every role of each demo
/// customer's teams, plus one API-style call each — so the ledger and the cost review have
/// something to show. Returns a fresh API key of the first demo customer for trying the API.
async fn routed_calls(
    db: &Db,
    catalogue: &Catalogue,
    overrides: &std::collections::HashMap<String, j1msky_gateway::ProviderOverride>,
) -> Result<String, Failure> {
    use j1msky_gateway::chat::{ChatRequest, Speaker, Turn};
    let gateway = j1msky_gateway::Gateway::builder(db.clone(), std::sync::Arc::new(catalogue.clone()))
        .overrides(overrides.clone())
        .build()
        .map_err(anyhow::Error::from)?;
    let all = customers::list(db, None, 10_000).await.map_err(anyhow::Error::from)?;
    let mut first_customer = None;
    let mut calls = 0;
    // Prospects have no plan in force yet: the gateway would refuse them.
    for demo in CUSTOMERS.iter().filter(current) {
        let Some(c) = all.iter().find(|c| c.name == demo.name) else { continue };
        first_customer.get_or_insert_with(|| c.id.clone());
        let teams: Vec<String> = if c.chosen_teams.is_empty() {
            catalogue.teams.keys().take(2).cloned().collect()
        } else {
            c.chosen_teams.clone()
        };
        // (team, role, model, category)
        type Job = (Option<String>, Option<String>, Option<String>, String);
        let mut jobs: Vec<Job> = Vec::new();
        for team in &teams {
            let Some(t) = catalogue.teams.get(team) else { continue };
            for role in &t.roles {
                jobs.push((
                    Some(team.clone()),
                    Some(role.role.clone()),
                    Some(role.model.clone()),
                    team_category(team).into(),
                ));
            }
        }
        jobs.push((None, None, None, "general".into()));
        for (team, role, model, category) in jobs {
            let ctx = j1msky_gateway::CallContext {
                request_id: j1msky_core::ids::new_id("req"),
                customer_id: Some(c.id.clone()),
                category: category.clone(),
                task_id: None,
                team: team.clone(),
                role: role.clone(),
            };
            let req = ChatRequest {
                system: Some(format!(
                    "You are the {} of the {} team.",
                    role.as_deref().unwrap_or("assistant"),
                    team.as_deref().unwrap_or("api")
                )),
                turns: vec![Turn { speaker: Speaker::User, text: format!("Demo {category} request for {}", c.name) }],
                max_tokens: 400,
                temperature: None,
                stop: vec![],
            };
            match gateway.complete(&ctx, model.as_deref(), &req).await {
                Ok(done) => {
                    calls += 1;
                    tracing::debug!(model = %done.model, cost = %done.cost, "demo call");
                }
                Err(e) => eprintln!("demo call for {} ({category}) refused: {e}", c.name),
            }
        }
    }
    // The ledger is written behind the calls; the review below must see all of it, and
    // the server started next takes over this database's limits.
    gateway.flush().await;
    drop(gateway);
    println!("Ran {calls} routed model calls through the gateway (simulated provider).");
    let customer = first_customer.ok_or_else(|| anyhow::anyhow!("no demo customer"))?;
    let (_, secret) = j1msky_accounts::api_keys::create(db, &Actor::system(), &customer, "demo", context::now())
        .await
        .map_err(anyhow::Error::from)?;
    Ok(secret)
}

/// A few tasks per demo customer, for the workers to run once the server starts. Each
/// has an idempotency key, so running the demo again queues nothing twice.
async fn seed_tasks(db: &Db, catalogue: &j1msky_core::catalogue::Catalogue) -> Result<usize, Failure> {
    use j1msky_tasks::{NewTask, Priority};
    let all = customers::list(db, None, 10_000).await.map_err(anyhow::Error::from)?;
    let mut queued = 0;
    for demo in CUSTOMERS.iter().filter(current) {
        let Some(c) = all.iter().find(|c| c.name == demo.name) else { continue };
        let teams: Vec<String> =
            if c.chosen_teams.is_empty() { catalogue.teams.keys().cloned().collect() } else { c.chosen_teams.clone() };
        for (i, team) in teams.iter().enumerate() {
            let Some(t) = catalogue.teams.get(team) else { continue };
            // The team's first template, filled in; else a plain prompt.
            let input = match t.templates.iter().next() {
                Some((tid, tpl)) => NewTask {
                    team: team.clone(),
                    template: Some(tid.clone()),
                    fields: tpl
                        .fields
                        .iter()
                        .map(|f| (f.clone(), format!("{} ({})", f.replace('_', " "), c.name)))
                        .collect(),
                    priority: if i == 0 { Priority::High } else { Priority::Normal },
                    ..NewTask::default()
                },
                None => NewTask {
                    team: team.clone(),
                    prompt: Some(format!("A first {} task for {}", t.name, c.name)),
                    ..NewTask::default()
                },
            };
            let key = format!("demo-{team}");
            match j1msky_tasks::submit(db, catalogue, &c.id, &input, Some(&key), context::now()).await {
                Ok(done) if !done.replayed => queued += 1,
                Ok(_) => {}
                Err(e) => tracing::info!(customer = %c.name, %team, error = %e, "demo task not queued"),
            }
        }
    }
    Ok(queued)
}

#[allow(clippy::too_many_arguments)]
async fn upsert_user(
    db: &Db,
    actor: &Actor,
    email: &str,
    name: &str,
    role: UserRole,
    customer_id: Option<String>,
    password: &str,
    now: i64,
) -> Result<(), Failure> {
    match users::find_by_email(db, email).await {
        Ok(u) => users::set_password(db, actor, &u.id, password, now).await.map_err(anyhow::Error::from)?,
        Err(_) => {
            let new = NewUser {
                email: email.into(),
                display_name: name.into(),
                password: password.into(),
                role,
                customer_id,
            };
            users::create(db, actor, new, now).await.map_err(anyhow::Error::from)?;
        }
    }
    Ok(())
}
