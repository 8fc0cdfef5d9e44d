//! From lead to trial: the public lead form, qualification, the trial start with an
//! invite link, pilot mode and its waiting list.
//!
//! A lead IS a customer in stage `lead`, created through accounts' `customers::create_in`,
//! so the stage history runs lead → qualified → trial → active on one row and every
//! other part (the board's funnel, billing's checkout) sees it without a second notion of
//! "prospect". `ops_leads` keeps only what the form asked beyond the customer row (the
//! person's name, the use case in their words), the operator's notes and plan
//! suggestion, a digest of the address it came from, and the pilot waiting list. The
//! customer is marked so that its onboarding journeys wait for the trial
//! (`j1msky_lifecycle::journeys::ONBOARD_AT`).

pub mod ending;
mod error;
pub mod mail;
pub mod next;
pub mod trial;

use serde::Serialize;
use sqlx::Row;

use crate::Ctx;
use j1msky_accounts::customers::{self, NewCustomer};
use j1msky_accounts::throttle::{self, Admission, Policy};
use j1msky_accounts::Email;
use j1msky_audit::{audit, Actor};
use j1msky_core::catalogue::Catalogue;
use j1msky_core::clock::SECOND;
use j1msky_core::vocab::{Stage, UseCase};

pub use error::LeadError;
pub use mail::Mailer;

/// Lead forms one client address may send: 3 an hour.
pub const FORMS_PER_ADDRESS: Policy =
    Policy { max_failures: 3, window_micros: 3_600 * SECOND, lock_micros: 3_600 * SECOND };
/// Leads (and so confirmation mails) per recipient address: one a day. The form mails
/// whatever address is typed, so without it anyone could mail anyone from our domain.
pub const FORMS_PER_RECIPIENT: Policy =
    Policy { max_failures: 1, window_micros: 86_400 * SECOND, lock_micros: 86_400 * SECOND };
/// Member invitations (each a mail to an address the owner types) per customer a day.
pub const INVITES_PER_CUSTOMER: Policy =
    Policy { max_failures: 20, window_micros: 86_400 * SECOND, lock_micros: 86_400 * SECOND };

/// A lead as the operator sees it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Lead {
    pub customer_id: String,
    pub company: String,
    pub contact_name: String,
    pub email: String,
    pub use_case: Option<UseCase>,
    pub use_case_text: String,
    pub expected_monthly_tasks: i64,
    pub notes: String,
    pub suggested_plan: Option<String>,
    /// On the pilot waiting list since then.
    pub waiting_since: Option<i64>,
    pub stage: Stage,
    pub created_at: i64,
}

/// The public form, as sent (nothing checked yet).
#[derive(Debug, Clone, Default)]
pub struct NewLead {
    pub contact_name: String,
    pub email: String,
    pub company: String,
    pub use_case: String,
    pub use_case_text: String,
    pub expected_monthly_tasks: String,
    /// A field people never see: a bot that fills it in is answered as usual, and nothing is stored.
    pub honeypot: String,
}

/// What became of a form.
#[derive(Debug, Clone, PartialEq)]
pub enum Submitted {
    Stored(Box<Lead>),
    /// The honeypot was filled in.
    Ignored,
}

fn text(field: &'static str, value: &str, max: usize, required: bool) -> Result<String, LeadError> {
    let v = value.trim();
    if required && v.is_empty() {
        return Err(LeadError::invalid(field, "is required"));
    }
    if v.chars().count() > max {
        return Err(LeadError::invalid(field, format!("must be at most {max} characters")));
    }
    Ok(v.to_string())
}

/// The plan a volume suggests: the cheapest plan (not the pause plan, not one with
/// limits set by contract) whose monthly task allowance covers it, an unlimited one
/// counting as covering everything; a contract plan when none does.
pub fn suggest_plan(catalogue: &Catalogue, expected_monthly_tasks: i64) -> Option<String> {
    let mut standard: Vec<_> =
        catalogue.plans.iter().filter(|(id, p)| **id != catalogue.pause_plan && !p.custom_limits).collect();
    standard.sort_by_key(|(_, p)| p.monthly_price);
    let covers = |allowance: Option<u32>| allowance.is_none_or(|n| i64::from(n) >= expected_monthly_tasks);
    standard
        .iter()
        .find(|(_, p)| covers(p.tasks_per_month))
        .map(|(id, _)| id.to_string())
        .or_else(|| catalogue.plans.iter().find(|(_, p)| p.custom_limits).map(|(id, _)| id.clone()))
}

/// Stores a lead from the public form: a customer in stage `lead` with its details, and
/// a confirmation mail, in one transaction. Throttled per client address.
pub async fn submit(
    ctx: &Ctx,
    mailer: &Mailer,
    form: &NewLead,
    client_ip: &str,
    now: i64,
) -> Result<Submitted, LeadError> {
    if !form.honeypot.trim().is_empty() {
        tracing::info!("lead form: honeypot filled in, nothing stored");
        return Ok(Submitted::Ignored);
    }
    let contact_name = text("contact_name", &form.contact_name, 200, true)?;
    let company = text("company", &form.company, 200, true)?;
    let email = Email::parse(&form.email).map_err(|_| LeadError::invalid("email", "is not an email address"))?;
    let use_case: UseCase = form.use_case.trim().parse().map_err(|_| {
        let known: Vec<&str> = UseCase::ALL.iter().map(|u| u.as_str()).collect();
        LeadError::invalid("use_case", format!("choose one of: {}", known.join(", ")))
    })?;
    let use_case_text = text("use_case_text", &form.use_case_text, 2000, false)?;
    let expected: i64 = form
        .expected_monthly_tasks
        .trim()
        .parse()
        .ok()
        .filter(|n| (1..=1_000_000).contains(n))
        .ok_or_else(|| LeadError::invalid("expected_monthly_tasks", "a whole number from 1 to 1000000"))?;
    let scope = format!("lead:{}", throttle::address_scope(client_ip));
    if let Admission::Refused { retry_after_secs } = throttle::admit(&ctx.db, &scope, FORMS_PER_ADDRESS, now).await? {
        return Err(LeadError::Throttled { retry_after_secs });
    }
    let to = format!("lead-to:{}", email.mailbox());
    if let Admission::Refused { .. } = throttle::admit(&ctx.db, &to, FORMS_PER_RECIPIENT, now).await? {
        return Err(LeadError::invalid(
            "email",
            "a request for this address came in today already; we will be in touch at it",
        ));
    }
    let suggested = suggest_plan(&ctx.catalogue, expected);
    let input = NewCustomer {
        name: company.clone(),
        contact_email: Some(email.as_str().to_string()),
        stage: Some(Stage::Lead),
        use_case: Some(use_case),
        expected_monthly_tasks: Some(expected),
        ..NewCustomer::default()
    };
    let actor = Actor::system();
    let mut tx = ctx.db.begin().await?;
    let customer = customers::create_in(&mut tx, ctx.db.backend(), &ctx.catalogue, &actor, input, now).await?;
    j1msky_lifecycle::journeys::attributes::set(
        &mut tx,
        &customer.id,
        j1msky_lifecycle::journeys::ONBOARD_AT,
        j1msky_lifecycle::journeys::ONBOARD_AT_TRIAL,
        now,
    )
    .await?;
    sqlx::query(
        "INSERT INTO ops_leads (customer_id, contact_name, email, company, use_case_text, expected_monthly_tasks,
             source_digest, notes, suggested_plan, waiting_since, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, '', $8, NULL, $9, $9)",
    )
    .bind(&customer.id)
    .bind(&contact_name)
    .bind(email.as_str())
    .bind(&company)
    .bind(&use_case_text)
    .bind(expected)
    .bind(j1msky_accounts::secrets::digest(client_ip))
    .bind(&suggested)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    let lead = Lead {
        customer_id: customer.id.clone(),
        company,
        contact_name,
        email: email.as_str().to_string(),
        use_case: Some(use_case),
        use_case_text,
        expected_monthly_tasks: expected,
        notes: String::new(),
        suggested_plan: suggested,
        waiting_since: None,
        stage: Stage::Lead,
        created_at: now,
    };
    mail::lead_confirmation(&mut tx, ctx, mailer, &customer, &lead, now).await?;
    tx.commit().await?;
    Ok(Submitted::Stored(Box::new(lead)))
}

const SELECT: &str = "SELECT customer_id, company, contact_name, email, use_case_text, expected_monthly_tasks, notes,
    suggested_plan, waiting_since, created_at FROM ops_leads";

async fn from_row(ctx: &Ctx, r: &sqlx::any::AnyRow) -> Result<Lead, LeadError> {
    let customer_id: String = r.try_get(0)?;
    let customer = customers::get(&ctx.db, &customer_id).await?;
    Ok(Lead {
        customer_id,
        company: r.try_get(1)?,
        contact_name: r.try_get(2)?,
        email: r.try_get(3)?,
        use_case: customer.use_case,
        use_case_text: r.try_get(4)?,
        expected_monthly_tasks: r.try_get(5)?,
        notes: r.try_get(6)?,
        suggested_plan: r.try_get(7)?,
        waiting_since: r.try_get(8)?,
        stage: customer.stage,
        created_at: r.try_get(9)?,
    })
}

/// The leads, newest first (every stage: a lead stays listed once it is a customer).
pub async fn list(ctx: &Ctx, limit: i64) -> Result<Vec<Lead>, LeadError> {
    let rows = sqlx::query(&format!("{SELECT} ORDER BY created_at DESC, customer_id DESC LIMIT $1"))
        .bind(limit)
        .fetch_all(ctx.db.pool())
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        out.push(from_row(ctx, r).await?);
    }
    Ok(out)
}

/// One lead by its customer id.
pub async fn get(ctx: &Ctx, customer_id: &str) -> Result<Lead, LeadError> {
    let row = sqlx::query(&format!("{SELECT} WHERE customer_id = $1"))
        .bind(customer_id)
        .fetch_optional(ctx.db.pool())
        .await?;
    match row {
        Some(r) => from_row(ctx, &r).await,
        None => Err(LeadError::NotFound("lead")),
    }
}

/// The operator qualifies a lead: notes and the plan to try (the suggestion from the
/// expected volume when none is named), and the stage moves lead → qualified. Audited.
pub async fn qualify(
    ctx: &Ctx,
    actor: &Actor,
    customer_id: &str,
    notes: &str,
    plan: Option<&str>,
    now: i64,
) -> Result<Lead, LeadError> {
    let lead = get(ctx, customer_id).await?;
    let notes = text("notes", notes, 5000, false)?;
    let plan = match plan.map(str::trim).filter(|p| !p.is_empty()) {
        Some(p) => {
            customers::check_plan(&ctx.catalogue, Some(p), &[])?;
            if p == ctx.catalogue.pause_plan {
                return Err(LeadError::invalid("plan", "the pause plan is not offered to leads"));
            }
            Some(p.to_string())
        }
        None => suggest_plan(&ctx.catalogue, lead.expected_monthly_tasks),
    };
    if !matches!(lead.stage, Stage::Lead | Stage::Qualified) {
        return Err(LeadError::Conflict(format!("{} is already in stage {}", lead.company, lead.stage)));
    }
    let mut tx = ctx.db.begin().await?;
    // The stage as it is in this transaction, so the history records the real move.
    let stage = customers::get_in(&mut tx, customer_id).await?.stage;
    if !matches!(stage, Stage::Lead | Stage::Qualified) {
        return Err(LeadError::Conflict(format!("{} is already in stage {stage}", lead.company)));
    }
    sqlx::query("UPDATE ops_leads SET notes = $1, suggested_plan = $2, updated_at = $3 WHERE customer_id = $4")
        .bind(&notes)
        .bind(&plan)
        .bind(now)
        .bind(customer_id)
        .execute(&mut *tx)
        .await?;
    customers::change_stage(&mut tx, ctx.db.backend(), actor, customer_id, stage, Stage::Qualified, now).await?;
    let detail = serde_json::json!({"plan": plan, "notes": notes});
    audit::record(&mut tx, actor, "lead.qualified", customer_id, Some(customer_id), detail, now).await?;
    tx.commit().await?;
    Ok(Lead { notes, suggested_plan: plan, stage: Stage::Qualified, ..lead })
}
