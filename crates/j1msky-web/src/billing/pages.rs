//! The customer's billing page `/app/billing`: the subscription as Stripe last told us,
//! checkout for a plan, upgrade, downgrade at the period end, pause and resume, the
//! Stripe Customer Portal, and the cancel path (exit survey → one offer → cancel still
//! one click away). Changes go to Stripe; the page shows them once its webhooks arrive.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use j1msky_billing::{changes, checkout, retention, BillingError, Stripe};
use j1msky_core::vocab::UserRole;
use minijinja::context;

use crate::auth::CustomerUser;
use crate::error::ApiError;
use crate::render::{error_page, error_page_for, page_with_status};
use crate::state::AppState;

type Session = j1msky_accounts::sessions::Session;

/// The account's owner on a billing action, with the Stripe client: members get 403,
/// a server without Stripe says billing is not configured.
pub struct BillingOwner(Arc<Session>, String, Stripe);

impl FromRequestParts<AppState> for BillingOwner {
    type Rejection = Response;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let CustomerUser(s, cid) = CustomerUser::from_request_parts(parts, state).await?;
        if s.user.role != UserRole::Owner {
            return Err(error_page_for(
                state,
                Some(&s),
                ApiError::forbidden("Only the account's owner can change billing."),
            ));
        }
        match &state.stripe {
            Some(stripe) => Ok(BillingOwner(s, cid, stripe.clone())),
            None => Err(error_page_for(
                state,
                Some(&s),
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "billing_not_configured",
                    "Billing is not configured on this server yet.",
                ),
            )),
        }
    }
}

/// Where Stripe sends the customer back: the configured public URL, else this host.
fn base_url(state: &AppState, headers: &HeaderMap) -> String {
    if let Some(u) = &state.config.public_url {
        return u.trim_end_matches('/').to_string();
    }
    let host = headers.get("host").and_then(|h| h.to_str().ok()).unwrap_or("127.0.0.1:8080");
    format!("http://{host}")
}

const NOTICES: &[(&str, &str)] = &[
    ("requested", "Your change is on its way to Stripe; it shows here as soon as Stripe confirms it."),
    ("checkout", "Thank you! Your subscription shows here as soon as Stripe confirms the payment."),
    ("kept", "Glad you are staying — the offer is applied."),
    ("cancelled", "Your subscription ends at the end of the period; you keep access until then."),
];

#[derive(serde::Deserialize)]
pub struct PageQuery {
    notice: Option<String>,
}

/// `GET /app/billing`.
pub async fn page(
    State(state): State<AppState>,
    CustomerUser(s, cid): CustomerUser,
    Query(q): Query<PageQuery>,
) -> Response {
    let loaded = async {
        let customer = j1msky_accounts::customers::get(&state.db, &cid).await?;
        let sub = changes::current(&state.db, &cid).await?;
        let invoices = j1msky_billing::revenue::for_customer(&state.db, &cid, 24).await?;
        let grants = j1msky_billing::offers::for_customer(&state.db, &cid).await?;
        Ok::<_, BillingError>((customer, sub, invoices, grants))
    }
    .await;
    let (customer, sub, invoices, grants) = match loaded {
        Ok(v) => v,
        Err(e) => return error_page_for(&state, Some(&s), e),
    };
    let cat = &state.catalogue;
    let current_price =
        sub.as_ref().and_then(|x| x.plan.as_deref()).and_then(|p| cat.plans.get(p)).map(|p| p.monthly_price);
    let plans: Vec<minijinja::Value> = cat
        .plans
        .iter()
        .filter(|(id, _)| **id != cat.pause_plan)
        .map(|(id, p)| {
            let action = match (current_price, sub.as_ref().and_then(|x| x.plan.as_deref())) {
                (_, Some(cur)) if cur == id => "current",
                (Some(cur), _) if p.monthly_price > cur => "upgrade",
                (Some(_), _) => "downgrade",
                (None, _) => "subscribe",
            };
            context! { id => id, name => p.name.clone(), price => p.monthly_price.to_string(), action => action }
        })
        .collect();
    let sub_view = sub.as_ref().map(|x| {
        context! {
            status => x.status.clone(), plan => x.plan.clone(),
            period_end => x.current_period_end.map(|t| t * 1_000_000),
            cancel_at_period_end => x.cancel_at_period_end, discount => x.discount_coupon.clone(),
            paused => x.plan.as_deref() == Some(cat.pause_plan.as_str()),
            paused_from => x.paused_from_plan.clone(), resume_at => x.resume_at.map(|t| t * 1_000_000),
            pending_plan => x.pending_plan.clone(),
        }
    });
    // An offer granted while there was no subscription is carried by the next checkout.
    let waiting_offer = grants
        .iter()
        .rev()
        .find(|g| g.subscription_id.is_none() && g.offer != j1msky_billing::offers::TRIAL)
        .filter(|_| sub.is_none())
        .and_then(|g| cat.stripe.offers.get(&g.offer))
        .map(|o| o.name.clone());
    let notice = q.notice.and_then(|n| NOTICES.iter().find(|(k, _)| *k == n).map(|(_, t)| *t));
    let reasons: Vec<minijinja::Value> =
        retention::REASONS.iter().map(|(id, label)| context! { id => id, label => label }).collect();
    page_with_status(
        &state,
        Some(&s),
        StatusCode::OK,
        "app/billing.html",
        "billing",
        context! {
            configured => state.stripe.is_some(), owner => s.user.role == UserRole::Owner,
            linked => customer.stripe_customer_id.is_some(), sub => sub_view, plans, invoices, notice, reasons,
            waiting_offer => waiting_offer,
        },
    )
}

/// A form with a field the action does not take (an offer, a trial, a coupon…) is
/// refused whole: prices, offers and trials are the server's to decide.
fn only_fields(state: &AppState, s: &Session, form: &BTreeMap<String, String>, allowed: &[&str]) -> Option<Response> {
    form.keys().find(|k| k.as_str() != crate::csrf::FIELD && !allowed.contains(&k.as_str())).map(|k| {
        error_page(
            state,
            Some(s),
            StatusCode::BAD_REQUEST,
            &format!(
                "{k}: this form takes only {}; offers, trials and prices are decided by us, not by the form",
                allowed.join(", ")
            ),
        )
    })
}

/// `POST /app/billing/checkout` (`plan` and nothing else): off to Stripe Checkout.
pub async fn start_checkout(
    State(state): State<AppState>,
    BillingOwner(s, cid, stripe): BillingOwner,
    headers: HeaderMap,
    Form(form): Form<BTreeMap<String, String>>,
) -> Response {
    if let Some(r) = only_fields(&state, &s, &form, &["plan"]) {
        return r;
    }
    let base = base_url(&state, &headers);
    let req = checkout::CheckoutRequest {
        plan: form.get("plan").cloned().unwrap_or_default(),
        success_url: format!("{base}/app/billing?notice=checkout"),
        cancel_url: format!("{base}/app/billing"),
        attempt: (state.now() / 60_000_000).to_string(),
    };
    match checkout::start(&state.db, &stripe, &state.catalogue, &cid, &req, state.now()).await {
        Ok(link) => Redirect::to(&link.url).into_response(),
        Err(e) => error_page_for(&state, Some(&s), e),
    }
}

/// `POST /app/billing/change` (`action` = upgrade | downgrade | pause | resume, `plan`, `resume_days`).
pub async fn change(
    State(state): State<AppState>,
    BillingOwner(s, cid, stripe): BillingOwner,
    Form(form): Form<BTreeMap<String, String>>,
) -> Response {
    if let Some(r) = only_fields(&state, &s, &form, &["action", "plan", "resume_days"]) {
        return r;
    }
    let (db, cat) = (&state.db, &state.catalogue);
    let plan = form.get("plan").cloned().unwrap_or_default();
    let now = state.now() / 1_000_000;
    let done = match form.get("action").map(String::as_str) {
        Some("upgrade") => changes::upgrade(db, &stripe, cat, &cid, &plan, state.now()).await,
        Some("downgrade") => changes::downgrade(db, &stripe, cat, &cid, &plan).await,
        Some("pause") => match pause_days(form.get("resume_days").map(String::as_str)) {
            Ok(days) => changes::pause(db, &stripe, cat, &cid, now + days * 86_400, now).await,
            Err(e) => Err(e),
        },
        Some("resume") => changes::resume(db, &stripe, cat, &cid, Some(state.now())).await,
        other => Err(BillingError::invalid(
            "action",
            format!("`{}` is not upgrade, downgrade, pause or resume", other.unwrap_or("")),
        )),
    };
    match done {
        Ok(()) => Redirect::to("/app/billing?notice=requested").into_response(),
        Err(e) => error_page_for(&state, Some(&s), e),
    }
}

/// The days a pause lasts: 30 when the form leaves them out (or blank), else a whole
/// number from 1 to 366 (a year and a day is the longest pause `changes::pause` takes).
fn pause_days(given: Option<&str>) -> Result<i64, BillingError> {
    let Some(text) = given.filter(|t| !t.trim().is_empty()) else { return Ok(30) };
    match text.trim().parse::<u16>() {
        Ok(days @ 1..=366) => Ok(i64::from(days)),
        _ => Err(BillingError::invalid("resume_days", format!("`{text}` is not a number of days from 1 to 366"))),
    }
}

/// `POST /app/billing/portal`: off to the Stripe Customer Portal.
pub async fn portal(
    State(state): State<AppState>,
    BillingOwner(s, cid, stripe): BillingOwner,
    headers: HeaderMap,
) -> Response {
    let back = format!("{}/app/billing", base_url(&state, &headers));
    match checkout::portal(&state.db, &stripe, &cid, &back).await {
        Ok(url) => Redirect::to(&url).into_response(),
        Err(e) => error_page_for(&state, Some(&s), e),
    }
}

/// `POST /app/billing/cancel` (`reason`, `comment`): the survey, then the offer page.
pub async fn cancel(
    State(state): State<AppState>,
    BillingOwner(s, cid, _): BillingOwner,
    Form(form): Form<BTreeMap<String, String>>,
) -> Response {
    let reason = form.get("reason").cloned().unwrap_or_default();
    let comment = form.get("comment").cloned().unwrap_or_default();
    match retention::start_cancel(&state.db, &state.catalogue, &cid, &reason, &comment, state.now()).await {
        Ok(survey) => {
            let offer = survey.offer.as_ref().map(|o| offer_text(&state, o));
            page_with_status(
                &state,
                Some(&s),
                StatusCode::OK,
                "app/billing_offer.html",
                "billing",
                context! { survey, offer },
            )
        }
        Err(e) => error_page_for(&state, Some(&s), e),
    }
}

fn offer_text(state: &AppState, o: &retention::Offer) -> String {
    let cat = &state.catalogue;
    match o {
        retention::Offer::Pause { days } => {
            let price = cat.plans.get(&cat.pause_plan).map(|p| p.monthly_price.to_string()).unwrap_or_default();
            format!("Pause instead: keep your account and your history for {price} a month; you come back by yourself in {days} days.")
        }
        retention::Offer::Downgrade { plan } => {
            let p = cat.plans.get(plan);
            format!(
                "Move to {} instead ({} a month) from your next period.",
                p.map_or(plan.clone(), |p| p.name.clone()),
                p.map(|p| p.monthly_price.to_string()).unwrap_or_default()
            )
        }
        retention::Offer::Discount { offer } => {
            cat.stripe.offers.get(offer).map_or_else(|| offer.clone(), |o| format!("Stay with {}.", o.name))
        }
    }
}

/// `POST /app/billing/cancel/{survey}/accept`.
pub async fn accept(
    State(state): State<AppState>,
    BillingOwner(s, cid, stripe): BillingOwner,
    Path(id): Path<String>,
) -> Response {
    match retention::accept_offer(&state.db, &stripe, &state.catalogue, &cid, &id, state.now()).await {
        Ok(_) => Redirect::to("/app/billing?notice=kept").into_response(),
        Err(e) => error_page_for(&state, Some(&s), e),
    }
}

/// `POST /app/billing/cancel/{survey}/confirm`.
pub async fn confirm(
    State(state): State<AppState>,
    BillingOwner(s, cid, stripe): BillingOwner,
    Path(id): Path<String>,
) -> Response {
    match retention::confirm_cancel(&state.db, &stripe, &cid, &id, state.now()).await {
        Ok(_) => Redirect::to("/app/billing?notice=cancelled").into_response(),
        Err(e) => error_page_for(&state, Some(&s), e),
    }
}

/// `GET /app/upgrade-offer`: where an upgrade prompt's link lands. Shows the discount
/// the server holds for this account (if any, until it expires) and the dearer plans.
pub async fn upgrade_offer(State(state): State<AppState>, BillingOwner(s, cid, _stripe): BillingOwner) -> Response {
    let loaded = async {
        let held = j1msky_billing::offers::held_for_upgrade(&state.db, &cid, state.now()).await?;
        let sub = changes::current(&state.db, &cid).await?;
        Ok::<_, BillingError>((held, sub))
    }
    .await;
    let (held, sub) = match loaded {
        Ok(v) => v,
        Err(e) => return error_page_for(&state, Some(&s), e),
    };
    let cat = &state.catalogue;
    let current = sub.as_ref().and_then(|x| x.plan.as_deref()).and_then(|p| cat.plans.get(p)).map(|p| p.monthly_price);
    let plans: Vec<minijinja::Value> = cat
        .plans
        .iter()
        .filter(|(id, p)| **id != cat.pause_plan && current.is_some_and(|c| p.monthly_price > c))
        .map(|(id, p)| context! { id => id, name => p.name.clone(), price => p.monthly_price.to_string() })
        .collect();
    let offer = held.as_ref().and_then(|(g, expires)| {
        cat.stripe.offers.get(&g.offer).map(|o| context! { name => o.name.clone(), expires => *expires })
    });
    page_with_status(
        &state,
        Some(&s),
        StatusCode::OK,
        "app/upgrade_offer.html",
        "billing",
        context! { offer, plans, subscribed => sub.is_some() },
    )
}

/// `POST /app/upgrade-offer` (`plan` and nothing else): upgrades with the held discount;
/// the coupon is the server's (`offers::upgrade_with_offer`), never the form's.
pub async fn accept_upgrade_offer(
    State(state): State<AppState>,
    BillingOwner(s, cid, stripe): BillingOwner,
    Form(form): Form<BTreeMap<String, String>>,
) -> Response {
    if let Some(r) = only_fields(&state, &s, &form, &["plan"]) {
        return r;
    }
    let plan = form.get("plan").cloned().unwrap_or_default();
    match j1msky_billing::offers::upgrade_with_offer(&state.db, &stripe, &state.catalogue, &cid, &plan, state.now())
        .await
    {
        Ok(_) => Redirect::to("/app/billing?notice=requested").into_response(),
        Err(e) => error_page_for(&state, Some(&s), e),
    }
}
