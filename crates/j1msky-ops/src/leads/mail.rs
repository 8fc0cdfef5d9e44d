//! The mails of the road to a trial and of accounts: the lead's confirmation, the trial
//! owner's set-password invite, the notice that the trial ended, a password reset, a
//! member's invite. Each is rendered from `config/templates/` and queued through
//! lifecycle delivery (transactional: always sent, never held by quiet hours) in the
//! caller's transaction, so the state change and its mail commit together. Links carry
//! one-time tokens from `accounts::tokens`.

use std::path::PathBuf;

use sqlx::AnyConnection;

use super::{Lead, LeadError};
use crate::Ctx;
use j1msky_accounts::customers::Customer;
use j1msky_accounts::trials::{Started, Trial};
use j1msky_accounts::users::User;
use j1msky_accounts::{throttle, tokens};
use j1msky_audit::Actor;
use j1msky_core::vocab::UserRole;
use j1msky_lifecycle::delivery::{self, Category, NewMessage};
use j1msky_lifecycle::templates;

/// Where the templates are and the public URL the links point to.
#[derive(Debug, Clone)]
pub struct Mailer {
    pub templates_dir: PathBuf,
    pub base_url: String,
}

impl Mailer {
    /// The mailer of a lifecycle context (the server's, when mail is configured).
    pub fn of(l: &j1msky_lifecycle::Ctx) -> Mailer {
        Mailer { templates_dir: l.templates_dir.clone(), base_url: l.base_url.clone() }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url.trim_end_matches('/'))
    }
}

fn base_context(ctx: &Ctx, mailer: &Mailer, customer: &Customer) -> serde_json::Value {
    let c = &ctx.catalogue;
    serde_json::json!({
        "business": {"name": c.business.name, "support_email": c.business.support_email},
        "customer": {"id": customer.id, "name": customer.name, "plan": customer.plan, "time_zone": customer.time_zone},
        "links": templates::links(c, &mailer.base_url),
    })
}

#[allow(clippy::too_many_arguments)]
async fn queue(
    conn: &mut AnyConnection,
    ctx: &Ctx,
    mailer: &Mailer,
    template: &str,
    context: &serde_json::Value,
    customer_id: &str,
    source: &str,
    to: Option<&str>,
    now: i64,
) -> Result<(), LeadError> {
    let rendered = templates::render_from(&mailer.templates_dir, template, context)?;
    let msg = NewMessage {
        customer_id,
        source,
        step: template,
        occurrence: 0,
        category: Category::Transactional,
        template,
        rendered: &rendered,
        not_before: now,
        stale_at: None,
    };
    delivery::enqueue_to(conn, ctx.db.backend(), &msg, to, now).await?;
    Ok(())
}

/// Queues the lead's confirmation.
pub(super) async fn lead_confirmation(
    conn: &mut AnyConnection,
    ctx: &Ctx,
    mailer: &Mailer,
    customer: &Customer,
    lead: &Lead,
    now: i64,
) -> Result<(), LeadError> {
    let mut c = base_context(ctx, mailer, customer);
    c["lead"] = serde_json::json!({
        "contact_name": lead.contact_name, "expected_monthly_tasks": lead.expected_monthly_tasks,
    });
    let source = format!("lead:{}", customer.id);
    queue(conn, ctx, mailer, "lead_confirmation", &c, &customer.id, &source, None, now).await
}

/// Queues the trial owner's invite with the set-password link.
pub(super) async fn trial_invite(
    conn: &mut AnyConnection,
    ctx: &Ctx,
    mailer: &Mailer,
    s: &Started,
    now: i64,
) -> Result<(), LeadError> {
    let mut c = base_context(ctx, mailer, &s.customer);
    c["trial"] = trial_context(ctx, &s.trial);
    c["account"] = serde_json::json!({
        "name": s.owner.display_name, "email": s.owner.email,
        "url": mailer.url(&format!("/set-password/{}", s.token)),
        "valid_days": tokens::INVITE_TTL / (86_400 * 1_000_000),
    });
    let source = format!("trial:{}", s.customer.id);
    queue(conn, ctx, mailer, "trial_invite", &c, &s.customer.id, &source, Some(&s.owner.email), now).await
}

/// Queues the owner's notice that the trial ended without a plan (to the customer's
/// contact address when it has no owner), with the way back: choosing a plan.
pub(super) async fn trial_ended(
    conn: &mut AnyConnection,
    ctx: &Ctx,
    mailer: &Mailer,
    customer: &Customer,
    trial: &Trial,
    owner: Option<&User>,
    now: i64,
) -> Result<(), LeadError> {
    let mut c = base_context(ctx, mailer, customer);
    c["trial"] = trial_context(ctx, trial);
    c["account"] = serde_json::json!({
        "name": owner.map_or(customer.name.as_str(), |o| o.display_name.as_str()),
        "email": owner.map(|o| o.email.as_str()),
    });
    let source = format!("trial_end:{}", customer.id);
    let to = owner.map(|o| o.email.as_str());
    queue(conn, ctx, mailer, "trial_ended", &c, &customer.id, &source, to, now).await
}

fn trial_context(ctx: &Ctx, t: &Trial) -> serde_json::Value {
    let plan_name = ctx.catalogue.plans.get(&t.plan).map_or(t.plan.clone(), |p| p.name.clone());
    let ends = chrono::DateTime::from_timestamp_micros(t.ends_at)
        .map_or_else(String::new, |d| d.format("%-d %B %Y").to_string());
    serde_json::json!({"plan_name": plan_name, "tasks": t.tasks, "ends": ends})
}

/// A password reset asked for `email` from `client_ip`: a link is mailed when the
/// address belongs to a customer's user; the answer is the same either way (only the
/// per-address throttle refuses, for every address alike). Operators reset with
/// `j1msky users set-password`: their mail does not go through customers' lifecycle.
pub async fn request_reset(
    ctx: &Ctx,
    mailer: &Mailer,
    email: &str,
    client_ip: &str,
    now: i64,
) -> Result<(), LeadError> {
    let Some((user, token)) = tokens::request_reset(&ctx.db, email, client_ip, now).await? else {
        return Ok(());
    };
    let Some(customer_id) = user.customer_id.clone() else {
        tracing::info!(user = %user.id, "password reset asked for an operator: no mail");
        return Ok(());
    };
    let customer = j1msky_accounts::customers::get(&ctx.db, &customer_id).await?;
    let mut c = base_context(ctx, mailer, &customer);
    c["account"] = serde_json::json!({
        "name": user.display_name, "email": user.email,
        "url": mailer.url(&format!("/reset/{token}")),
        "valid_minutes": tokens::RESET_TTL / (60 * 1_000_000),
    });
    let source = format!("reset:{}:{}", user.id, j1msky_accounts::secrets::digest(&token));
    let mut tx = ctx.db.begin().await?;
    queue(&mut tx, ctx, mailer, "password_reset", &c, &customer_id, &source, Some(&user.email), now).await?;
    tx.commit().await?;
    Ok(())
}

/// An owner invites a member to their customer account: the member is created without a
/// usable password and mailed a one-time link to choose one. Only owners may invite.
pub async fn invite_member(
    ctx: &Ctx,
    mailer: &Mailer,
    inviter: &User,
    email: &str,
    display_name: &str,
    now: i64,
) -> Result<User, LeadError> {
    let (Some(customer_id), UserRole::Owner) = (inviter.customer_id.as_deref(), inviter.role) else {
        return Err(LeadError::Forbidden("only the account's owner invites members".into()));
    };
    let name = display_name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(LeadError::invalid("display_name", "1 to 200 characters"));
    }
    let budget = format!("invites:{customer_id}");
    if let throttle::Admission::Refused { retry_after_secs } =
        throttle::admit(&ctx.db, &budget, super::INVITES_PER_CUSTOMER, now).await?
    {
        return Err(LeadError::Throttled { retry_after_secs });
    }
    let customer = j1msky_accounts::customers::get(&ctx.db, customer_id).await?;
    let actor = Actor::user(&inviter.id);
    let mut tx = ctx.db.begin().await?;
    let (member, token) =
        j1msky_accounts::trials::invite_member_in(&mut tx, ctx.db.backend(), &actor, customer_id, email, name, now)
            .await?;
    let mut c = base_context(ctx, mailer, &customer);
    c["account"] = serde_json::json!({
        "name": member.display_name, "email": member.email, "invited_by": inviter.display_name,
        "url": mailer.url(&format!("/set-password/{token}")),
        "valid_days": tokens::INVITE_TTL / (86_400 * 1_000_000),
    });
    let source = format!("invite:{}", member.id);
    queue(&mut tx, ctx, mailer, "member_invite", &c, customer_id, &source, Some(&member.email), now).await?;
    tx.commit().await?;
    Ok(member)
}
