//! Enterprise is sold by contract: a plan with custom limits is billed at the customer's
//! contract price, on a Stripe price of its own (on the plan's product, found again by a
//! per-customer lookup key), made idempotently and replaced when the contract changes.

use j1msky_core::catalogue::{Catalogue, Plan};
use j1msky_db::Db;
use serde_json::{json, Value};

use crate::{sync, BillingError, Stripe};

/// The lookup key of a customer's contract price. It does not end in `_monthly`, so it is
/// never taken for a catalogue plan's price.
pub fn lookup_key(customer_id: &str) -> String {
    format!("j1msky_contract_{customer_id}")
}

/// The Stripe price a customer is billed for `plan`: the catalogue's, or for a plan sold
/// by contract the customer's own contract price (refused without a contract, or when
/// the customer is not on that plan: the contract was agreed for it).
pub async fn price_for(
    db: &Db,
    stripe: &Stripe,
    catalogue: &Catalogue,
    customer_id: &str,
    plan_id: &str,
    plan: &Plan,
) -> Result<String, BillingError> {
    price_on(db, stripe, catalogue, customer_id, plan_id, plan, None).await
}

/// [`price_for`], a contract also applying while the customer is on `paused` instead:
/// the plan a paused subscription returns to comes back at the contract's price, never
/// the catalogue's list price (`changes::resume`, with the pause plan).
pub(crate) async fn price_on(
    db: &Db,
    stripe: &Stripe,
    catalogue: &Catalogue,
    customer_id: &str,
    plan_id: &str,
    plan: &Plan,
    paused: Option<&str>,
) -> Result<String, BillingError> {
    if !plan.custom_limits {
        return sync::stored_id(db, &format!("price:{plan_id}")).await?.ok_or_else(|| {
            BillingError::Config(format!("no Stripe price for `{plan_id}`: run `j1msky stripe sync` first"))
        });
    }
    let customer = j1msky_accounts::customers::get(db, customer_id).await?;
    let price = customer
        .contract
        .monthly_price
        .filter(|_| {
            customer.plan.as_deref() == Some(plan_id) || (paused.is_some() && customer.plan.as_deref() == paused)
        })
        .ok_or_else(|| {
            BillingError::invalid(
                "plan",
                format!("{} is sold by contract: ask us for one, and it appears here once agreed", plan.name),
            )
        })?;
    let cents = price.to_cents_rounded();
    let currency = &catalogue.stripe.currency;
    let key = lookup_key(customer_id);
    let found = stripe.get("prices", &json!({"lookup_keys": [key], "active": true, "limit": 1})).await?;
    let existing = found["data"].as_array().and_then(|d| d.first()).cloned();
    let same = existing
        .as_ref()
        .is_some_and(|p| p["unit_amount"].as_i64() == Some(cents) && p["currency"].as_str() == Some(currency.as_str()));
    if let Some(id) = existing.as_ref().and_then(|p| p["id"].as_str()).filter(|_| same) {
        return Ok(id.to_string());
    }
    let old = existing.as_ref().and_then(|p| p["id"].as_str()).map(String::from);
    let params = json!({
        "product": sync::product_id(plan_id), "unit_amount": cents, "currency": currency,
        "recurring": {"interval": "month"}, "lookup_key": key, "transfer_lookup_key": true,
        "nickname": format!("{} contract for {customer_id}", plan.name),
        "metadata": {"j1msky_plan": plan_id, "j1msky_customer": customer_id},
    });
    let idem = format!("j1msky-contract-{customer_id}-{currency}-{cents}-after-{}", old.as_deref().unwrap_or("none"));
    let made = stripe.post("prices", &params, &idem).await?;
    let id = made["id"].as_str().ok_or_else(|| BillingError::Malformed("created price has no id".into()))?.to_string();
    if let Some(old) = old {
        stripe.post(&format!("prices/{old}"), &json!({"active": false}), &format!("j1msky-archive-{old}")).await?;
    }
    Ok(id)
}

/// The plan a contract price stands for (its metadata), for prices without our
/// catalogue lookup key.
pub fn plan_of_contract_price(price: &Value) -> Option<&str> {
    price["metadata"]["j1msky_customer"].as_str()?;
    price["metadata"]["j1msky_plan"].as_str()
}

/// Keeps live subscriptions on a contract plan billed at their contract's price: after a
/// contract change the subscription moves to the new price from the next invoice (run by
/// the billing jobs; idempotent). Returns how many subscriptions moved.
pub async fn sync_live(db: &Db, stripe: &Stripe, catalogue: &Catalogue) -> Result<usize, BillingError> {
    let plans: Vec<&String> = catalogue.plans.iter().filter(|(_, p)| p.custom_limits).map(|(id, _)| id).collect();
    let mut moved = 0;
    for plan_id in plans {
        let Some(plan) = catalogue.plans.get(plan_id) else { continue };
        let live: Vec<(String, String)> = sqlx::query_as(
            "SELECT id, customer_id FROM subscriptions WHERE plan = $1 AND customer_id IS NOT NULL
               AND status NOT IN ('canceled', 'incomplete_expired', 'unknown')",
        )
        .bind(plan_id)
        .fetch_all(db.pool())
        .await?;
        for (sub, customer) in live {
            match move_to_contract_price(db, stripe, catalogue, &sub, &customer, plan_id, plan).await {
                Ok(true) => moved += 1,
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(customer = %customer, error = %e, "contract price not synced; retried next round")
                }
            }
        }
    }
    Ok(moved)
}

async fn move_to_contract_price(
    db: &Db,
    stripe: &Stripe,
    catalogue: &Catalogue,
    sub: &str,
    customer_id: &str,
    plan_id: &str,
    plan: &Plan,
) -> Result<bool, BillingError> {
    let price = price_for(db, stripe, catalogue, customer_id, plan_id, plan).await?;
    let remote = stripe.get(&format!("subscriptions/{sub}"), &Value::Null).await?;
    let item = &remote["items"]["data"][0];
    let current = item["price"]["id"].as_str().or(item["price"].as_str());
    if current == Some(price.as_str()) {
        return Ok(false);
    }
    let item_id =
        item["id"].as_str().ok_or_else(|| BillingError::Malformed(format!("subscription {sub} has no item")))?;
    // The new contract price applies from the next invoice; the current period was agreed.
    let params = json!({"items": [{"id": item_id, "price": price}], "proration_behavior": "none"});
    stripe.post(&format!("subscriptions/{sub}"), &params, &format!("j1msky-contract-swap-{sub}-{price}")).await?;
    Ok(true)
}
