//! `j1msky customer|user|key …`: the operator's fallback when the dashboard is down.

use std::io::BufRead;

use clap::{Args, Subcommand};
use j1msky_accounts::customers::{self, Customer, NewCustomer};
use j1msky_accounts::users::{self, NewUser, User};
use j1msky_accounts::{api_keys, secrets, AccountsError};
use j1msky_core::vocab::{Stage, UseCase, UserRole};
use serde_json::json;

use crate::context::{self, Globals};
use crate::output::{self, opt, when};
use crate::{Failure, EXIT_INVALID};

#[derive(Debug, Subcommand)]
pub enum CustomerCommand {
    /// Add a customer (and optionally its owner user).
    Add(CustomerAdd),
    /// List customers, newest first.
    List {
        /// Only customers at this stage (lead, qualified, trial, active, paused, churned).
        #[arg(long)]
        stage: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 200)]
        limit: i64,
        /// Only customers whose name or contact email starts with this (any case), or
        /// whose id or Stripe customer id it is; listed by name.
        #[arg(long)]
        search: Option<String>,
    },
    /// Show one customer with its users and stage history.
    Show {
        /// Customer id (`cus_…`).
        id: String,
    },
    /// Move a customer to another stage of the revenue workflow.
    SetStage {
        /// Customer id (`cus_…`).
        id: String,
        /// lead, qualified, trial, active, paused or churned.
        stage: String,
    },
    /// Set the teams of a customer on a plan of chosen teams (Starter), replacing its choice.
    SetTeams {
        /// Customer id (`cus_…`).
        id: String,
        /// Comma-separated team ids (`code,content`), at most the plan's number.
        #[arg(long, value_delimiter = ',')]
        teams: Vec<String>,
    },
    /// Let the customer of a disputed payment use the service again despite the dispute
    /// (settled with them, or accepted); another open dispute of theirs still pauses them.
    ReleaseDispute {
        /// Dispute id (`du_…`), as `customer show` lists it.
        dispute: String,
    },
    /// Set a contract's limits for a customer on a plan with custom limits (enterprise);
    /// each value may be `plan` to fall back to the plan's own limit.
    Contract {
        /// Customer id (`cus_…`).
        id: String,
        /// Tasks per calendar month (in the customer's time zone), or `unlimited`/`plan`.
        #[arg(long)]
        tasks_per_month: Option<String>,
        /// Model calls per hour, or `plan`.
        #[arg(long)]
        calls_per_hour: Option<String>,
        /// Agreed monthly price in USD (at least the plan's), or `plan`.
        #[arg(long)]
        monthly_price: Option<String>,
    },
}

fn contract_summary(c: &customers::Contract) -> String {
    let shown = |v: Option<String>| v.unwrap_or_else(|| "plan".into());
    format!(
        "tasks/month {}, calls/hour {}, price {}",
        shown(c.tasks_per_month.map(|n| n.to_string())),
        shown(c.calls_per_hour.map(|n| n.to_string())),
        shown(c.monthly_price.map(|m| m.to_string())),
    )
}

/// A contract value: absent keeps the stored one, `plan` clears it.
fn contract_value<T: std::str::FromStr>(
    flag: &str,
    given: Option<String>,
    stored: Option<T>,
) -> Result<Option<T>, Failure>
where
    T::Err: std::fmt::Display,
{
    match given.as_deref() {
        None => Ok(stored),
        Some("plan") => Ok(None),
        Some(text) => text.parse().map(Some).map_err(|e| Failure {
            code: EXIT_INVALID,
            error: anyhow::anyhow!("--{flag} `{text}`: {e} (or `plan` for the plan's own limit)"),
        }),
    }
}

#[derive(Debug, Args)]
pub struct CustomerAdd {
    /// Company or person name.
    #[arg(long)]
    name: String,
    /// Contact email for the account.
    #[arg(long)]
    email: Option<String>,
    /// Starting stage (default: lead).
    #[arg(long)]
    stage: Option<String>,
    /// What they use agent teams for: code, content, research or business.
    #[arg(long)]
    use_case: Option<String>,
    /// Plan id from the catalogue (starter, pro, enterprise, paused).
    #[arg(long)]
    plan: Option<String>,
    /// Teams chosen, comma-separated (for plans with a team choice).
    #[arg(long, value_delimiter = ',')]
    teams: Vec<String>,
    /// Expected tasks per month.
    #[arg(long)]
    expected_tasks: Option<i64>,
    /// IANA time zone used for when to send them mail (default: UTC).
    #[arg(long)]
    time_zone: Option<String>,
    /// Also create the owner user with this email; a password is generated and shown once.
    #[arg(long)]
    owner_email: Option<String>,
    /// A pay-per-task customer billed outside Stripe: the operator vouches for payment,
    /// which admits it without a plan (Stripe customers get this from their card on file).
    #[arg(long)]
    payment_on_file: bool,
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Add a user: an operator, or a customer's owner or member.
    Add {
        #[arg(long)]
        email: String,
        /// operator, owner or member.
        #[arg(long)]
        role: String,
        /// The customer an owner or member belongs to (`cus_…`).
        #[arg(long)]
        customer: Option<String>,
        /// Display name (default: the email).
        #[arg(long)]
        name: Option<String>,
        /// Read the password from the first line of stdin instead of generating one.
        #[arg(long)]
        password_stdin: bool,
    },
    /// List users (all, or one customer's).
    List {
        #[arg(long)]
        customer: Option<String>,
    },
    /// Set a user's password (signs them out everywhere).
    SetPassword {
        /// The user's email.
        email: String,
        /// Read the password from the first line of stdin instead of generating one.
        #[arg(long)]
        password_stdin: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Create an API key for a customer; the secret is shown once.
    Create {
        #[arg(long)]
        customer: String,
        /// A name to recognise the key by.
        #[arg(long)]
        name: String,
    },
    /// List a customer's keys (prefix, name, last use; never the secret).
    List {
        #[arg(long)]
        customer: String,
    },
    /// Revoke a key; calls with it answer 401 from then on.
    Revoke {
        /// Key id (`key_…`).
        id: String,
    },
}

/// Maps a domain error to an exit code: invalid input is 2, everything else 1.
fn fail(e: AccountsError) -> Failure {
    let code = if matches!(e, AccountsError::Invalid { .. }) { EXIT_INVALID } else { 1 };
    Failure { code, error: e.into() }
}

fn billing_fail(e: j1msky_billing::BillingError) -> Failure {
    let code = if matches!(e, j1msky_billing::BillingError::Invalid { .. }) { EXIT_INVALID } else { 1 };
    Failure { code, error: e.into() }
}

fn parse_word<T: std::str::FromStr<Err = j1msky_core::vocab::UnknownWord>>(text: &str) -> Result<T, Failure> {
    text.parse().map_err(|e: j1msky_core::vocab::UnknownWord| Failure { code: EXIT_INVALID, error: e.into() })
}

/// A password from stdin, or a freshly generated one (returned so it can be shown once).
fn password(from_stdin: bool) -> Result<(String, bool), Failure> {
    if !from_stdin {
        return Ok((secrets::random_token()[..20].to_string(), true));
    }
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    let pw = line.trim_end_matches(['\r', '\n']).to_string();
    if pw.is_empty() {
        return Err(Failure { code: EXIT_INVALID, error: anyhow::anyhow!("no password on stdin") });
    }
    Ok((pw, false))
}

fn customer_row(c: &Customer) -> Vec<String> {
    vec![
        c.id.clone(),
        c.name.clone(),
        c.stage.to_string(),
        opt(c.plan.as_deref()),
        opt(c.use_case),
        c.time_zone.clone(),
        when(Some(c.stage_changed_at)),
    ]
}

const CUSTOMER_HEADER: &[&str] = &["id", "name", "stage", "plan", "use case", "time zone", "stage since"];

fn user_row(u: &User) -> Vec<String> {
    vec![u.id.clone(), u.email.clone(), u.role.to_string(), opt(u.customer_id.as_deref()), when(u.last_login_at)]
}

const USER_HEADER: &[&str] = &["id", "email", "role", "customer", "last login"];

pub async fn customer(g: &Globals, cmd: CustomerCommand) -> Result<(), Failure> {
    let db = context::open_db(g).await?;
    let actor = context::actor();
    match cmd {
        CustomerCommand::Add(a) => {
            let catalogue = context::catalogue_in_force(g, &db).await?;
            let input = NewCustomer {
                name: a.name,
                contact_email: a.email,
                stage: a.stage.as_deref().map(parse_word::<Stage>).transpose()?,
                use_case: a.use_case.as_deref().map(parse_word::<UseCase>).transpose()?,
                plan: a.plan,
                chosen_teams: a.teams.into_iter().map(|t| t.trim().to_string()).filter(|t| !t.is_empty()).collect(),
                expected_monthly_tasks: a.expected_tasks,
                time_zone: a.time_zone,
            };
            let generated = a.owner_email.is_some().then(|| password(false)).transpose()?.map(|(pw, _)| pw);
            let owner = a.owner_email.zip(generated.clone()).map(|(email, pw)| customers::NewOwner {
                email: email.clone(),
                display_name: email,
                password: pw,
            });
            let (mut c, owner) = customers::create_with_owner(&db, &catalogue, &actor, input, owner, context::now())
                .await
                .map_err(fail)?;
            if a.payment_on_file {
                let mut tx = db.begin().await.map_err(anyhow::Error::from)?;
                j1msky_accounts::access::set_payment_method(&mut tx, db.backend(), &c.id, true, context::now())
                    .await
                    .map_err(fail)?;
                tx.commit().await.map_err(anyhow::Error::from)?;
                c.payment_method_on_file = true;
            }
            let owner = owner.zip(generated);
            if g.json {
                output::json(
                    &json!({ "customer": c, "owner": owner.as_ref().map(|(u, pw)| json!({"user": u, "password": pw})) }),
                );
            } else {
                println!("{}", output::table(CUSTOMER_HEADER, vec![customer_row(&c)]));
                if let Some((u, pw)) = owner {
                    println!("owner {} can log in with password: {pw}", u.email);
                    println!("(shown once; change it with `j1msky user set-password {}`)", u.email);
                }
            }
        }
        CustomerCommand::List { stage, limit, search } => {
            let stage = stage.as_deref().map(parse_word::<Stage>).transpose()?;
            let limit = limit.clamp(1, 100_000);
            let list = match search {
                Some(text) => customers::search(&db, &text, stage, limit).await,
                None => customers::list(&db, stage, limit).await,
            }
            .map_err(fail)?;
            output::list(g, &list, CUSTOMER_HEADER, customer_row);
        }
        CustomerCommand::Show { id } => {
            let c = customers::get(&db, &id).await.map_err(fail)?;
            let people = users::list(&db, Some(&c.id)).await.map_err(fail)?;
            let history = customers::stage_history(&db, &c.id).await.map_err(fail)?;
            let disputes = j1msky_billing::disputes::of_customer(&db, &c.id).await.map_err(billing_fail)?;
            if g.json {
                output::json(
                    &json!({ "customer": c, "users": people, "stage_history": history, "disputes": disputes }),
                );
            } else {
                let fields = vec![
                    vec!["id".into(), c.id.clone()],
                    vec!["name".into(), c.name.clone()],
                    vec!["contact".into(), opt(c.contact_email.as_deref())],
                    vec!["stage".into(), format!("{} since {}", c.stage, when(Some(c.stage_changed_at)))],
                    vec!["use case".into(), opt(c.use_case)],
                    vec!["plan".into(), opt(c.plan.as_deref())],
                    vec![
                        "teams".into(),
                        if c.chosen_teams.is_empty() { "-".into() } else { c.chosen_teams.join(", ") },
                    ],
                    vec!["expected tasks / month".into(), opt(c.expected_monthly_tasks)],
                    vec!["time zone".into(), c.time_zone.clone()],
                    vec!["created".into(), when(Some(c.created_at))],
                ];
                let mut fields = fields;
                if !c.contract.is_empty() {
                    fields.push(vec!["contract".into(), contract_summary(&c.contract)]);
                }
                if let Some(since) = c.disputed_since {
                    fields.push(vec!["paused by a dispute".into(), format!("since {}", when(Some(since)))]);
                }
                println!("{}", output::table(&["field", "value"], fields));
                println!("users:");
                output::list(g, &people, USER_HEADER, user_row);
                println!("stage history:");
                output::list(g, &history, &["from", "to", "by", "at"], |h| {
                    vec![opt(h.from), h.to.to_string(), h.actor.clone(), when(Some(h.at))]
                });
                if !disputes.is_empty() {
                    println!("disputes:");
                    output::list(
                        g,
                        &disputes,
                        &["id", "charge", "amount", "reason", "status", "evidence due", "released"],
                        |d| {
                            vec![
                                d.id.clone(),
                                d.charge_id.clone(),
                                format!("{} {}", d.amount, d.currency),
                                d.reason.clone(),
                                d.status.clone(),
                                when(d.evidence_due_by),
                                d.released_by.clone().unwrap_or_else(|| "-".into()),
                            ]
                        },
                    );
                }
            }
        }
        CustomerCommand::SetTeams { id, teams } => {
            let catalogue = context::catalogue_in_force(g, &db).await?;
            let teams = teams.into_iter().map(|t| t.trim().to_string()).filter(|t| !t.is_empty()).collect();
            let by = customers::TeamsBy::Operator;
            let c =
                customers::choose_teams(&db, &catalogue, &actor, &id, teams, by, context::now()).await.map_err(fail)?;
            output::done(
                g,
                &format!("customer {id} runs teams {}", c.chosen_teams.join(", ")),
                json!({ "customer": c }),
            );
        }
        CustomerCommand::ReleaseDispute { dispute } => {
            let catalogue = context::catalogue_in_force(g, &db).await?;
            let d = j1msky_billing::disputes::release(&db, &catalogue, &actor, &dispute, context::now())
                .await
                .map_err(billing_fail)?;
            let customer = d.customer_id.clone().unwrap_or_default();
            output::done(g, &format!("dispute {dispute} released for customer {customer}"), json!({ "dispute": d }));
        }
        CustomerCommand::Contract { id, tasks_per_month, calls_per_hour, monthly_price } => {
            let catalogue = context::catalogue_in_force(g, &db).await?;
            let current = customers::get(&db, &id).await.map_err(fail)?.contract;
            // `unlimited` is only meaningful for tasks; the enterprise plan itself has none.
            let tasks =
                if tasks_per_month.as_deref() == Some("unlimited") { Some("plan".into()) } else { tasks_per_month };
            let contract = customers::Contract {
                tasks_per_month: contract_value("tasks-per-month", tasks, current.tasks_per_month)?,
                calls_per_hour: contract_value("calls-per-hour", calls_per_hour, current.calls_per_hour)?,
                monthly_price: contract_value("monthly-price", monthly_price, current.monthly_price)?,
            };
            let c =
                customers::set_contract(&db, &catalogue, &actor, &id, contract, context::now()).await.map_err(fail)?;
            output::done(
                g,
                &format!("{} ({}) contract: {}", c.name, c.id, contract_summary(&c.contract)),
                json!({ "customer": c }),
            );
        }
        CustomerCommand::SetStage { id, stage } => {
            let stage = parse_word::<Stage>(&stage)?;
            let c = customers::set_stage(&db, &actor, &id, stage, context::now()).await.map_err(fail)?;
            output::done(g, &format!("{} ({}) is now {}", c.name, c.id, c.stage), json!({ "customer": c }));
        }
    }
    db.close().await;
    Ok(())
}

pub async fn user(g: &Globals, cmd: UserCommand) -> Result<(), Failure> {
    let db = context::open_db(g).await?;
    let actor = context::actor();
    match cmd {
        UserCommand::Add { email, role, customer, name, password_stdin } => {
            let role = parse_word::<UserRole>(&role)?;
            let (pw, generated) = password(password_stdin)?;
            let new = NewUser {
                display_name: name.unwrap_or_else(|| email.clone()),
                email,
                password: pw.clone(),
                role,
                customer_id: customer,
            };
            let u = users::create(&db, &actor, new, context::now()).await.map_err(fail)?;
            let shown = generated.then_some(pw);
            if g.json {
                output::json(&json!({ "user": u, "password": shown }));
            } else {
                println!("{}", output::table(USER_HEADER, vec![user_row(&u)]));
                if let Some(pw) = shown {
                    println!("password (shown once): {pw}");
                }
            }
        }
        UserCommand::List { customer } => {
            let list = users::list(&db, customer.as_deref()).await.map_err(fail)?;
            output::list(g, &list, USER_HEADER, user_row);
        }
        UserCommand::SetPassword { email, password_stdin } => {
            let u = users::find_by_email(&db, &email).await.map_err(fail)?;
            let (pw, generated) = password(password_stdin)?;
            users::set_password(&db, &actor, &u.id, &pw, context::now()).await.map_err(fail)?;
            let shown = generated.then_some(pw);
            if g.json {
                output::json(&json!({ "user": u, "password": shown }));
            } else {
                println!("password of {} changed; their sessions were signed out", u.email);
                if let Some(pw) = shown {
                    println!("new password (shown once): {pw}");
                }
            }
        }
    }
    db.close().await;
    Ok(())
}

pub async fn key(g: &Globals, cmd: KeyCommand) -> Result<(), Failure> {
    let db = context::open_db(g).await?;
    let actor = context::actor();
    let key_row = |k: &api_keys::ApiKey| {
        vec![
            k.id.clone(),
            k.name.clone(),
            format!("{}…", k.prefix),
            when(Some(k.created_at)),
            when(k.last_used_at),
            if k.revoked_at.is_some() { format!("revoked {}", when(k.revoked_at)) } else { "active".into() },
        ]
    };
    let header = &["id", "name", "prefix", "created", "last used", "status"];
    match cmd {
        KeyCommand::Create { customer, name } => {
            customers::get(&db, &customer).await.map_err(fail)?;
            let (k, secret) = api_keys::create(&db, &actor, &customer, &name, context::now()).await.map_err(fail)?;
            if g.json {
                output::json(&json!({ "key": k, "secret": secret }));
            } else {
                println!("{}", output::table(header, vec![key_row(&k)]));
                println!("secret (shown once, store it now): {secret}");
            }
        }
        KeyCommand::List { customer } => {
            customers::get(&db, &customer).await.map_err(fail)?;
            let list = api_keys::list(&db, &customer).await.map_err(fail)?;
            output::list(g, &list, header, key_row);
        }
        KeyCommand::Revoke { id } => {
            let k = api_keys::revoke(&db, &actor, &id, None, context::now()).await.map_err(fail)?;
            output::done(g, &format!("key {} ({}) revoked", k.id, k.name), json!({ "key": k }));
        }
    }
    db.close().await;
    Ok(())
}
