//! `j1msky demo`: everything local, nothing to configure. SQLite under a data dir, an
//! operator with a fresh password each run, and a few demo customers.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use j1msky_accounts::customers::{self, NewCustomer};
use j1msky_accounts::users::{self, NewUser};
use j1msky_accounts::{secrets, Actor};
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
    },
];

pub async fn run(g: &Globals, args: DemoArgs) -> Result<(), Failure> {
    context::init_logging(g);
    let catalogue = context::load_catalogue(g)?;
    let url = format!("sqlite://{}", args.data_dir.join("j1msky.db").display());
    let demo_globals = Globals { database_url: url, ..g.clone() };
    let db = context::open_db(&demo_globals).await?;
    let password = seed(&db, &catalogue).await?;
    if args.seed_only {
        print_logins(None, &args.data_dir, &password);
        db.close().await;
        return Ok(());
    }
    let listener = match serve::bind(args.listen).await {
        Ok(l) => l,
        Err(e) if args.listen.port() != 0 => {
            tracing::warn!(error = %e.error, "port taken; using a free port instead");
            serve::bind(SocketAddr::new(args.listen.ip(), 0)).await?
        }
        Err(e) => return Err(e),
    };
    let data_dir = args.data_dir.clone();
    serve::serve_on(listener, db, catalogue, WebConfig::default(), move |addr| {
        print_logins(Some(addr), &data_dir, &password);
    })
    .await
}

fn print_logins(addr: Option<SocketAddr>, data_dir: &std::path::Path, password: &str) {
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
        let id = match existing.iter().find(|c| c.name == demo.name) {
            Some(c) => c.id.clone(),
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
                customers::create(db, catalogue, &actor, input, now).await.map_err(anyhow::Error::from)?.id
            }
        };
        upsert_user(db, &actor, demo.owner, demo.name, UserRole::Owner, Some(id), &password, now).await?;
    }
    Ok(password)
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
