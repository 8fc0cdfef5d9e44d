//! Subscribing and managing: a Checkout Session for a plan, and the Stripe Customer
//! Portal. The customer names only the plan: the free trial (once per customer) and any
//! offer a server path granted them are decided here.

use j1msky_core::catalogue::Catalogue;
use j1msky_db::Db;
use serde::Serialize;
use serde_json::json;

use crate::{sync, BillingError, Stripe};

/// A Checkout Session to send the customer to.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CheckoutLink {
    pub session_id: String,
    pub url: String,
}

/// What a checkout is for.
#[derive(Debug, Clone, Default)]
pub struct CheckoutRequest {
    pub plan: String,
    pub success_url: String,
    pub cancel_url: String,
    /// Distinguishes a deliberate second attempt from a retried click (e.g. a minute
    /// number): the same value gives the same session.
    pub attempt: String,
}

/// Opens a Checkout Session (mode=subscription) for one of our customers.
pub async fn start(
    db: &Db,
    stripe: &Stripe,
    catalogue: &Catalogue,
    customer_id: &str,
    req: &CheckoutRequest,
    now: i64,
) -> Result<CheckoutLink, BillingError> {
    let customer = j1msky_accounts::customers::get(db, customer_id).await?;
    let plan = catalogue.plans.get(&req.plan).ok_or_else(|| {
        BillingError::invalid(
            "plan",
            format!("unknown plan `{}`; plans are: {}", req.plan, keys(catalogue.plans.keys())),
        )
    })?;
    if req.plan == catalogue.pause_plan {
        return Err(BillingError::invalid("plan", format!("`{}` is reached by pausing, not by checkout", req.plan)));
    }
    if let Some(sub) = crate::changes::current(db, customer_id).await? {
        return Err(BillingError::invalid(
            "subscription",
            format!(
                "already subscribed ({}, {}): upgrade, downgrade or resume instead",
                sub.plan.as_deref().unwrap_or("-"),
                sub.status
            ),
        ));
    }
    // Usage charges the customer has not paid keep them out of a new subscription: its
    // standing would replace the one their unpaid invoices gave them (and a first
    // checkout's free trial would let them back in for nothing).
    let mut conn = db.pool().acquire().await?;
    let owing = j1msky_tasks::charges::owed_standing(&mut conn, &customer.id).await?;
    drop(conn);
    if let Some(standing) = owing {
        let why = if standing == "unpaid" { "written off" } else { "failing" };
        return Err(BillingError::invalid(
            "subscription",
            format!("usage charges on this account were not paid (their invoice is {why}): pay them from Manage billing before subscribing"),
        ));
    }
    let price = crate::contracts::price_for(db, stripe, catalogue, &customer.id, &req.plan, plan).await?;
    for (field, url) in [("success_url", &req.success_url), ("cancel_url", &req.cancel_url)] {
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err(BillingError::invalid(field, format!("`{url}` is not an http(s) URL")));
        }
    }
    let mut params = json!({
        "mode": "subscription",
        "line_items": [{"price": price, "quantity": 1}],
        "client_reference_id": customer.id,
        "success_url": req.success_url,
        "cancel_url": req.cancel_url,
        "metadata": {"j1msky_customer": customer.id, "j1msky_plan": req.plan},
        "subscription_data": {"metadata": {"j1msky_customer": customer.id}},
    });
    match &customer.stripe_customer_id {
        Some(sc) => params["customer"] = json!(sc),
        None => {
            if let Some(email) = &customer.contact_email {
                params["customer_email"] = json!(email);
            }
        }
    }
    let trial = catalogue.trial_days > 0 && crate::offers::trial_available(db, stripe, &customer.id).await?;
    if trial {
        params["subscription_data"]["trial_period_days"] = json!(catalogue.trial_days);
    }
    let grant = crate::offers::pending_for_checkout(db, stripe, &customer.id).await?;
    let offer = grant.as_ref().and_then(|g| catalogue.stripe.offers.get(&g.offer).map(|o| (g, o)));
    if let Some((g, o)) = offer {
        params["discounts"] = json!([{"coupon": sync::coupon_id(&g.offer, o.percent_off, o.months)}]);
        params["metadata"]["j1msky_offer"] = json!(g.offer);
        params["metadata"]["j1msky_offer_grant"] = json!(g.id);
    }
    let idem = format!(
        "j1msky-checkout-{}-{}-{}-{}-{}",
        customer.id,
        req.plan,
        offer.map_or("none", |(g, _)| g.id.as_str()),
        trial,
        req.attempt
    );
    let s = stripe.post("checkout/sessions", &params, &idem).await?;
    let link = CheckoutLink {
        session_id: s["id"]
            .as_str()
            .ok_or_else(|| BillingError::Malformed("checkout session without id".into()))?
            .to_string(),
        url: s["url"]
            .as_str()
            .ok_or_else(|| BillingError::Malformed("checkout session without url".into()))?
            .to_string(),
    };
    if let Some((g, _)) = offer {
        if !crate::offers::move_to_checkout(db, stripe, &customer.id, g, &link.session_id, now).await? {
            // The offer's earlier checkout was paid meanwhile: this one must not carry it again.
            let key = format!("j1msky-expire-{}", link.session_id);
            stripe.post(&format!("checkout/sessions/{}/expire", link.session_id), &json!({}), &key).await?;
            return Err(BillingError::invalid("subscription", "already subscribed through an earlier checkout"));
        }
    }
    if trial {
        crate::offers::record_checkout(db, &customer.id, None, &link.session_id, now).await?;
        if !crate::offers::expire_other_trial_checkouts(db, stripe, &customer.id, &link.session_id).await? {
            // An older trial checkout was paid meanwhile: this one must not give a second.
            let key = format!("j1msky-expire-{}", link.session_id);
            stripe.post(&format!("checkout/sessions/{}/expire", link.session_id), &json!({}), &key).await?;
            return Err(BillingError::invalid("subscription", "already subscribed through an earlier checkout"));
        }
    }
    Ok(link)
}

/// A Customer Portal session for a customer who has paid through Stripe, opened with the
/// configuration `stripe sync` keeps (`sync::portal_features`: no plan switch in the
/// portal), never the account's default, which the Dashboard may have opened up.
pub async fn portal(db: &Db, stripe: &Stripe, customer_id: &str, return_url: &str) -> Result<String, BillingError> {
    let customer = j1msky_accounts::customers::get(db, customer_id).await?;
    let sc = customer
        .stripe_customer_id
        .ok_or_else(|| BillingError::invalid("customer", "no Stripe customer yet: subscribe through checkout first"))?;
    let configuration = crate::sync::stored_id(db, "portal").await?.ok_or_else(|| {
        BillingError::Config("no Customer Portal configuration: run `j1msky stripe sync` first".into())
    })?;
    let params = json!({"customer": sc, "return_url": return_url, "configuration": configuration});
    // Each portal session is single-use: a fresh key per request (no side effect to repeat).
    let idem = format!("j1msky-portal-{}-{}", customer.id, j1msky_core::ids::new_id("req"));
    let s = stripe.post("billing_portal/sessions", &params, &idem).await?;
    s["url"].as_str().map(String::from).ok_or_else(|| BillingError::Malformed("portal session without url".into()))
}

fn keys<'a>(k: impl Iterator<Item = &'a String>) -> String {
    k.cloned().collect::<Vec<_>>().join(", ")
}
