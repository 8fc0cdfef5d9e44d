//! The cancel path (plan §4, churn prevention): an exit survey, then one offer routed by
//! the reason — pause, a cheaper plan, or the win-back discount — with cancelling still
//! one click away. Every step is recorded and emitted as an event.

use j1msky_core::catalogue::Catalogue;
use j1msky_core::events::{RetentionExitSurvey, SurveyDecided, Typed};
use j1msky_db::{outbox, Db};
use serde::Serialize;
use sqlx::Row;

use crate::changes::{self, Current};
use crate::{offers, BillingError, Stripe};

/// Why a customer is leaving (the survey's choices).
pub const REASONS: &[(&str, &str)] = &[
    ("too_expensive", "It costs too much"),
    ("not_using", "We are not using it enough"),
    ("temporary", "We only need a break"),
    ("missing_feature", "A feature we need is missing"),
    ("quality", "The results were not good enough"),
    ("switching", "We are moving to another service"),
    ("other", "Something else"),
];

/// The discount offered to those who would otherwise leave.
pub const DISCOUNT_OFFER: &str = "win_back";
/// How long an accepted pause lasts before it resumes by itself.
pub const PAUSE_DAYS: i64 = 30;

/// What is offered instead of cancelling (the shape its events carry).
pub use j1msky_core::events::RetentionOffer as Offer;

fn word(offer: &Offer) -> &'static str {
    match offer {
        Offer::Pause { .. } => "pause",
        Offer::Downgrade { .. } => "downgrade",
        Offer::Discount { .. } => "discount",
    }
}

/// A survey answered and what it led to.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Survey {
    pub id: String,
    pub customer_id: String,
    pub reason: String,
    pub comment: String,
    pub offer: Option<Offer>,
    pub outcome: String,
}

/// The offer for a reason: its preferred kind first, then pause → downgrade → discount,
/// skipping what does not apply to this subscription (`discount_grantable`: the customer
/// has not had the discount within its cool-down).
pub fn route(catalogue: &Catalogue, sub: &Current, reason: &str, discount_grantable: bool) -> Option<Offer> {
    let paused = sub.plan.as_deref() == Some(catalogue.pause_plan.as_str());
    let price = sub.plan.as_deref().and_then(|p| catalogue.plans.get(p)).map(|p| p.monthly_price);
    let cheaper = catalogue
        .plans
        .iter()
        .filter(|(id, p)| **id != catalogue.pause_plan && price.is_some_and(|cur| p.monthly_price < cur))
        .max_by_key(|(_, p)| p.monthly_price)
        .map(|(id, _)| id.clone());
    let candidates = [
        (!paused).then_some(Offer::Pause { days: PAUSE_DAYS }),
        cheaper.filter(|_| !paused).map(|plan| Offer::Downgrade { plan }),
        // A discount keeps a paying customer; one still in its free trial has paid nothing.
        (sub.status != "trialing"
            && sub.discount_coupon.is_none()
            && discount_grantable
            && catalogue.stripe.offers.contains_key(DISCOUNT_OFFER))
        .then(|| Offer::Discount { offer: DISCOUNT_OFFER.into() }),
    ];
    let preferred = match reason {
        "too_expensive" => "downgrade",
        "not_using" | "temporary" => "pause",
        _ => "discount",
    };
    let available: Vec<Offer> = candidates.into_iter().flatten().collect();
    available.iter().find(|o| word(o) == preferred).or(available.first()).cloned()
}

/// Records the survey and picks the offer.
pub async fn start_cancel(
    db: &Db,
    catalogue: &Catalogue,
    customer_id: &str,
    reason: &str,
    comment: &str,
    now: i64,
) -> Result<Survey, BillingError> {
    if !REASONS.iter().any(|(r, _)| *r == reason) {
        let known = REASONS.iter().map(|(r, _)| *r).collect::<Vec<_>>().join(", ");
        return Err(BillingError::invalid("reason", format!("`{reason}` is not one of: {known}")));
    }
    if comment.chars().count() > 2000 {
        return Err(BillingError::invalid("comment", "at most 2000 characters"));
    }
    let sub = changes::current(db, customer_id)
        .await?
        .ok_or_else(|| BillingError::invalid("subscription", "no active subscription to cancel"))?;
    let grantable = catalogue.stripe.offers.contains_key(DISCOUNT_OFFER)
        && offers::refusal(db, catalogue, customer_id, DISCOUNT_OFFER, now).await?.is_none();
    let offer = route(catalogue, &sub, reason, grantable);
    let survey = Survey {
        id: j1msky_core::ids::new_id("srv"),
        customer_id: customer_id.into(),
        reason: reason.into(),
        comment: comment.trim().into(),
        offer,
        outcome: "open".into(),
    };
    let mut tx = db.begin().await?;
    sqlx::query(
        "INSERT INTO exit_surveys (id, customer_id, reason, comment, offer, outcome, created_at)
         VALUES ($1, $2, $3, $4, $5, 'open', $6)",
    )
    .bind(&survey.id)
    .bind(customer_id)
    .bind(reason)
    .bind(&survey.comment)
    .bind(survey.offer.as_ref().map(|o| serde_json::to_string(o).unwrap_or_default()))
    .bind(now)
    .execute(&mut *tx)
    .await?;
    let event = RetentionExitSurvey {
        survey: survey.id.clone(),
        reason: reason.into(),
        offer: survey.offer.clone(),
        subscription: Some(sub.id.clone()),
    };
    outbox::emit_typed(&mut tx, db.backend(), event, Some(customer_id), now).await?;
    tx.commit().await?;
    Ok(survey)
}

/// The customer's survey (someone else's is not found).
pub async fn get(db: &Db, customer_id: &str, id: &str) -> Result<Survey, BillingError> {
    let r = sqlx::query("SELECT reason, comment, offer, outcome FROM exit_surveys WHERE id = $1 AND customer_id = $2")
        .bind(id)
        .bind(customer_id)
        .fetch_optional(db.pool())
        .await?
        .ok_or(BillingError::NotFound("exit survey"))?;
    let offer: Option<String> = r.try_get(2)?;
    Ok(Survey {
        id: id.into(),
        customer_id: customer_id.into(),
        reason: r.try_get(0)?,
        comment: r.try_get(1)?,
        offer: offer.and_then(|o| serde_json::from_str(&o).ok()),
        outcome: r.try_get(3)?,
    })
}

async fn decide(
    db: &Db,
    survey: &Survey,
    outcome: &str,
    decided: fn(SurveyDecided) -> Typed,
    now: i64,
) -> Result<(), BillingError> {
    let mut tx = db.begin().await?;
    let done = sqlx::query("UPDATE exit_surveys SET outcome = $1, decided_at = $2 WHERE id = $3 AND outcome = 'open'")
        .bind(outcome)
        .bind(now)
        .bind(&survey.id)
        .execute(&mut *tx)
        .await?;
    if done.rows_affected() == 1 {
        let detail =
            SurveyDecided { survey: survey.id.clone(), reason: survey.reason.clone(), offer: survey.offer.clone() };
        outbox::emit_typed(&mut tx, db.backend(), decided(detail), Some(&survey.customer_id), now).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Takes the offer: pause, downgrade or discount, and the cancellation is off.
pub async fn accept_offer(
    db: &Db,
    stripe: &Stripe,
    catalogue: &Catalogue,
    customer_id: &str,
    survey_id: &str,
    now: i64,
) -> Result<Survey, BillingError> {
    let mut survey = get(db, customer_id, survey_id).await?;
    if survey.outcome != "open" {
        return Err(BillingError::invalid("survey", format!("already decided: {}", survey.outcome)));
    }
    let offer = survey.offer.clone().ok_or_else(|| BillingError::invalid("survey", "no offer was made"))?;
    let now_secs = crate::secs(now);
    match &offer {
        Offer::Pause { days } => {
            changes::pause(db, stripe, catalogue, customer_id, now_secs + days * 86_400, now_secs).await?
        }
        Offer::Downgrade { plan } => changes::downgrade(db, stripe, catalogue, customer_id, plan).await?,
        Offer::Discount { offer } => {
            let by = format!("retention:{}", survey.id);
            offers::grant_to_stay(db, stripe, catalogue, customer_id, offer, &by, now).await?;
        }
    }
    decide(db, &survey, "accepted_offer", Typed::RetentionOfferAccepted, now).await?;
    survey.outcome = "accepted_offer".into();
    Ok(survey)
}

/// Cancels anyway (at the period end).
pub async fn confirm_cancel(
    db: &Db,
    stripe: &Stripe,
    customer_id: &str,
    survey_id: &str,
    now: i64,
) -> Result<Survey, BillingError> {
    let mut survey = get(db, customer_id, survey_id).await?;
    if survey.outcome != "open" {
        return Err(BillingError::invalid(
            "survey",
            format!("already decided: {}; start again from the billing page to cancel", survey.outcome),
        ));
    }
    changes::cancel(db, stripe, customer_id).await?;
    decide(db, &survey, "cancelled", Typed::RetentionCancelled, now).await?;
    survey.outcome = "cancelled".into();
    Ok(survey)
}
