//! `j1msky stripe sync`: makes Stripe's products, monthly prices and offer coupons match
//! the catalogue, and holds the Customer Portal's configuration j1msky opens it with. Products and coupons get our own ids, prices our lookup keys, so a
//! second run finds everything and changes nothing. A price is immutable at Stripe: a new
//! amount makes a new price that takes over the lookup key, and the old one is archived.
//! Every POST carries an idempotency key derived from what it asks for, so a sync
//! retried after a crash never makes a second object.

use j1msky_core::catalogue::Catalogue;
use j1msky_db::Db;
use serde::Serialize;
use serde_json::{json, Value};

use crate::{BillingError, Stripe};

/// What a sync did, object by object (`product:pro`, `price:pro`, `coupon:win_back`).
#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct SyncReport {
    pub created: Vec<String>,
    pub updated: Vec<String>,
    pub unchanged: Vec<String>,
}

impl SyncReport {
    pub fn changed_nothing(&self) -> bool {
        self.created.is_empty() && self.updated.is_empty()
    }
}

/// Our product id for a plan.
pub fn product_id(plan: &str) -> String {
    format!("j1msky_{plan}")
}

/// Our coupon id for an offer: its terms are in the id, because a coupon's terms cannot
/// change at Stripe; new terms make a new coupon.
pub fn coupon_id(offer: &str, percent_off: u32, months: u32) -> String {
    format!("j1msky_{offer}_{percent_off}pct_{months}m")
}

/// Runs the sync and records the Stripe ids in `stripe_objects`.
pub async fn sync(db: &Db, stripe: &Stripe, catalogue: &Catalogue, now: i64) -> Result<SyncReport, BillingError> {
    let mut report = SyncReport::default();
    let currency = &catalogue.stripe.currency;
    for (plan_id, plan) in &catalogue.plans {
        let pid = product_id(plan_id);
        let key = format!("product:{plan_id}");
        match stripe.find(&format!("products/{pid}")).await? {
            None => {
                let params = json!({"id": pid, "name": plan.name, "metadata": {"j1msky_plan": plan_id}});
                stripe.post("products", &params, &format!("j1msky-sync-{pid}-create")).await?;
                report.created.push(key.clone());
            }
            Some(p) if p["name"].as_str() != Some(plan.name.as_str()) || p["active"] == Value::Bool(false) => {
                let params = json!({"name": plan.name, "active": true});
                let idem = format!("j1msky-sync-{pid}-rename-{}", plan.name.replace(' ', "_"));
                stripe.post(&format!("products/{pid}"), &params, &idem).await?;
                report.updated.push(key.clone());
            }
            Some(_) => report.unchanged.push(key.clone()),
        }
        remember(db, &key, &pid, &plan.name, now).await?;

        let cents = plan.monthly_price.to_cents_rounded();
        let lookup = crate::price_lookup_key(plan_id);
        let key = format!("price:{plan_id}");
        let fingerprint = format!("{currency}:{cents}:month");
        // One list of the product's active prices: ours is the one with our lookup key;
        // every other is archived (also one left behind by a sync that failed between
        // making a new price and archiving the old).
        let active = stripe.get("prices", &json!({"product": pid, "active": true, "limit": 100})).await?;
        let active: Vec<Value> = active["data"].as_array().cloned().unwrap_or_default();
        let existing = active.iter().find(|p| p["lookup_key"].as_str() == Some(lookup.as_str()));
        let same = existing.is_some_and(|p| {
            p["unit_amount"].as_i64() == Some(cents)
                && p["currency"].as_str() == Some(currency.as_str())
                && p["recurring"]["interval"].as_str() == Some("month")
        });
        let price_id = match existing.and_then(|p| p["id"].as_str()).filter(|_| same) {
            Some(id) => id.to_string(),
            None => {
                let old = existing.and_then(|p| p["id"].as_str()).unwrap_or("none");
                let params = json!({
                    "product": pid, "unit_amount": cents, "currency": currency, "recurring": {"interval": "month"},
                    "lookup_key": lookup, "transfer_lookup_key": true, "metadata": {"j1msky_plan": plan_id},
                });
                let idem = format!("j1msky-sync-{lookup}-{fingerprint}-after-{old}");
                let made = stripe.post("prices", &params, &idem).await?;
                made["id"]
                    .as_str()
                    .ok_or_else(|| BillingError::Malformed("created price has no id".into()))?
                    .to_string()
            }
        };
        let mut archived = false;
        for other in active.iter().filter_map(|p| p["id"].as_str()).filter(|id| *id != price_id) {
            let idem = format!("j1msky-archive-{other}");
            stripe.post(&format!("prices/{other}"), &json!({"active": false}), &idem).await?;
            archived = true;
        }
        let outcome = if !same && existing.is_none() && !archived {
            &mut report.created
        } else if !same || archived {
            &mut report.updated
        } else {
            &mut report.unchanged
        };
        outcome.push(key.clone());
        remember(db, &key, &price_id, &fingerprint, now).await?;
    }
    for (offer_id, offer) in &catalogue.stripe.offers {
        let cid = coupon_id(offer_id, offer.percent_off, offer.months);
        let key = format!("coupon:{offer_id}");
        match stripe.find(&format!("coupons/{cid}")).await? {
            None => {
                let mut params = json!({"id": cid, "name": offer.name, "percent_off": offer.percent_off,
                                        "metadata": {"j1msky_offer": offer_id}});
                if offer.months == 1 {
                    params["duration"] = json!("once");
                } else {
                    params["duration"] = json!("repeating");
                    params["duration_in_months"] = json!(offer.months);
                }
                stripe.post("coupons", &params, &format!("j1msky-sync-{cid}-create")).await?;
                report.created.push(key.clone());
            }
            Some(c) if c["name"].as_str() != Some(offer.name.as_str()) => {
                let idem = format!("j1msky-sync-{cid}-rename-{}", offer.name.len());
                stripe.post(&format!("coupons/{cid}"), &json!({"name": offer.name}), &idem).await?;
                report.updated.push(key.clone());
            }
            Some(_) => report.unchanged.push(key.clone()),
        }
        remember(db, &key, &cid, &offer.name, now).await?;
    }
    portal_configuration(db, stripe, catalogue, &mut report, now).await?;
    Ok(report)
}

/// What the Customer Portal lets a customer do when j1msky opens it: update a card, see
/// invoices, correct billing details, and cancel at the period's end (the webhook tells
/// us; the journeys that follow a cancellation start from it). Not change plans: an
/// upgrade is paid at once and a downgrade waits for the period's end only through
/// j1msky's own billing page (`changes`); a portal switch would put a dearer plan, and
/// its budget, in force on an unpaid proration. Not cancel at once with a prorated credit
/// after a month's budget was spent.
pub fn portal_features() -> Value {
    json!({
        "customer_update": {"enabled": true, "allowed_updates": ["email", "address", "tax_id"]},
        "invoice_history": {"enabled": true},
        "payment_method_update": {"enabled": true},
        "subscription_cancel": {"enabled": true, "mode": "at_period_end", "proration_behavior": "none"},
        "subscription_update": {"enabled": false},
    })
}

/// Whether a configuration Stripe holds grants exactly what [`portal_features`] says (an
/// operator may have changed it in the Dashboard since).
fn portal_matches(config: &Value) -> bool {
    let want = portal_features();
    let Some(features) = want.as_object() else { return false };
    config["active"] == true
        && features.iter().all(|(feature, settings)| {
            settings.as_object().is_some_and(|m| m.iter().all(|(k, v)| config["features"][feature][k] == *v))
        })
}

/// Makes Stripe hold j1msky's Customer Portal configuration (found by its metadata),
/// created once and put back as [`portal_features`] says when it drifted; its id is
/// stored as `portal`, and every portal session is opened with it.
async fn portal_configuration(
    db: &Db,
    stripe: &Stripe,
    catalogue: &Catalogue,
    report: &mut SyncReport,
    now: i64,
) -> Result<(), BillingError> {
    const KEY: &str = "portal";
    let listed = stripe.get("billing_portal/configurations", &json!({"limit": 100})).await?;
    let ours =
        listed["data"].as_array().and_then(|all| all.iter().find(|c| c["metadata"]["j1msky"] == "portal")).cloned();
    let id = match ours {
        None => {
            let params = json!({"features": portal_features(), "metadata": {"j1msky": "portal"},
                                "business_profile": {"headline": catalogue.business.name}});
            let created = stripe.post("billing_portal/configurations", &params, "j1msky-sync-portal-create").await?;
            report.created.push(KEY.to_string());
            created["id"].as_str().map(String::from)
        }
        Some(c) if !portal_matches(&c) => {
            let id = c["id"].as_str().unwrap_or_default().to_string();
            let params = json!({"features": portal_features(), "active": true});
            stripe
                .post(&format!("billing_portal/configurations/{id}"), &params, &format!("j1msky-sync-{id}-{now}"))
                .await?;
            report.updated.push(KEY.to_string());
            Some(id)
        }
        Some(c) => {
            report.unchanged.push(KEY.to_string());
            c["id"].as_str().map(String::from)
        }
    };
    let id = id
        .filter(|i| !i.is_empty())
        .ok_or_else(|| BillingError::Malformed("a portal configuration without id".into()))?;
    remember(db, KEY, &id, "v1", now).await
}

async fn remember(db: &Db, key: &str, stripe_id: &str, fingerprint: &str, now: i64) -> Result<(), BillingError> {
    sqlx::query(
        "INSERT INTO stripe_objects (key, stripe_id, fingerprint, updated_at) VALUES ($1, $2, $3, $4)
         ON CONFLICT (key) DO UPDATE SET stripe_id = excluded.stripe_id, fingerprint = excluded.fingerprint,
             updated_at = excluded.updated_at
         WHERE stripe_objects.stripe_id <> excluded.stripe_id OR stripe_objects.fingerprint <> excluded.fingerprint",
    )
    .bind(key)
    .bind(stripe_id)
    .bind(fingerprint)
    .bind(now)
    .execute(db.pool())
    .await?;
    Ok(())
}

/// The Stripe id `stripe sync` stored for `key`.
pub async fn stored_id(db: &Db, key: &str) -> Result<Option<String>, BillingError> {
    let row: Option<(String,)> = sqlx::query_as("SELECT stripe_id FROM stripe_objects WHERE key = $1")
        .bind(key)
        .fetch_optional(db.pool())
        .await?;
    Ok(row.map(|r| r.0))
}

/// Drops every link to a Stripe account (customer links, subscription mirrors, offer
/// grants, synced ids) — for pointing a database at a different, empty Stripe account, as the demo
/// does with its fresh fake each run. The revenue ledger is history and stays.
pub async fn forget_account(db: &Db) -> Result<(), BillingError> {
    let mut tx = db.begin().await?;
    sqlx::query("DELETE FROM subscriptions").execute(&mut *tx).await?;
    // Grants point at that account's checkouts and subscriptions.
    sqlx::query("DELETE FROM offer_grants").execute(&mut *tx).await?;
    sqlx::query("DELETE FROM stripe_objects").execute(&mut *tx).await?;
    j1msky_accounts::customer_links::unlink_all_stripe(&mut tx).await?;
    tx.commit().await?;
    Ok(())
}
