//! Offers granted by the server, never named by a customer: the cancel flow's routed
//! discount, a lifecycle trigger or an operator call `grant`; checkout decides the free
//! trial itself. Each grant is a row in `offer_grants` with who granted it, which is what
//! keeps an offer to once per customer (or its configured cool-down) and a trial to once.

use j1msky_core::catalogue::Catalogue;
use j1msky_core::events::BillingOfferGranted;
use j1msky_db::{outbox, AnyConnection, Db};
use serde::Serialize;
use serde_json::{json, Value};
use sqlx::Row;

use crate::{changes, sync, BillingError, Stripe};

/// The `offer` a free-trial grant is recorded under.
pub const TRIAL: &str = "trial";

/// One offer granted to one customer.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Grant {
    pub id: String,
    pub customer_id: String,
    pub offer: String,
    pub granted_by: String,
    pub subscription_id: Option<String>,
    pub checkout_session: Option<String>,
    pub created_at: i64,
}

const COLUMNS: &str = "id, customer_id, offer, granted_by, subscription_id, checkout_session, created_at";

fn grant_of(r: &sqlx::any::AnyRow) -> Result<Grant, BillingError> {
    Ok(Grant {
        id: r.try_get(0)?,
        customer_id: r.try_get(1)?,
        offer: r.try_get(2)?,
        granted_by: r.try_get(3)?,
        subscription_id: r.try_get(4)?,
        checkout_session: r.try_get(5)?,
        created_at: r.try_get(6)?,
    })
}

/// Every grant a customer has had, oldest first.
pub async fn for_customer(db: &Db, customer_id: &str) -> Result<Vec<Grant>, BillingError> {
    let rows =
        sqlx::query(&format!("SELECT {COLUMNS} FROM offer_grants WHERE customer_id = $1 ORDER BY created_at, id"))
            .bind(customer_id)
            .fetch_all(db.pool())
            .await?;
    rows.iter().map(grant_of).collect()
}

/// Why `offer` cannot be granted to the customer now, if it cannot: an earlier grant
/// within the offer's cool-down or, without one configured, any earlier grant.
pub async fn refusal(
    db: &Db,
    catalogue: &Catalogue,
    customer_id: &str,
    offer: &str,
    now: i64,
) -> Result<Option<String>, BillingError> {
    let mut conn = db.pool().acquire().await?;
    refusal_in(&mut conn, catalogue, customer_id, offer, now).await
}

/// `refusal` inside the caller's transaction (a journey's offer step asks before it
/// announces anything).
pub async fn refusal_in(
    conn: &mut AnyConnection,
    catalogue: &Catalogue,
    customer_id: &str,
    offer: &str,
    now: i64,
) -> Result<Option<String>, BillingError> {
    let o = catalogue.stripe.offers.get(offer).ok_or_else(|| {
        let known = catalogue.stripe.offers.keys().cloned().collect::<Vec<_>>().join(", ");
        BillingError::invalid("offer", format!("unknown offer `{offer}`; offers are: {known}"))
    })?;
    let since = o.cooldown_days.map_or(i64::MIN, |d| now.saturating_sub(i64::from(d) * 86_400 * 1_000_000));
    let earlier: Option<(String,)> = sqlx::query_as(
        "SELECT granted_by FROM offer_grants WHERE customer_id = $1 AND offer = $2 AND created_at > $3
           AND (expires_at IS NULL OR redeemed_at IS NOT NULL OR expires_at > $4)
         ORDER BY created_at DESC LIMIT 1",
    )
    .bind(customer_id)
    .bind(offer)
    .bind(since)
    .bind(now)
    .fetch_optional(&mut *conn)
    .await?;
    let when = o.cooldown_days.map_or("once per customer".to_string(), |d| format!("at most once every {d} days"));
    Ok(earlier.map(|(by,)| format!("`{offer}` was already granted (by {by}); it is granted {when}")))
}

/// Grants an offer: recorded with `granted_by`, then its coupon goes on the live
/// subscription at once; without one it waits for the customer's next checkout. The
/// one path for lifecycle triggers and operators (the cancel flow's is [`grant_to_stay`]).
/// Refused while the subscription is set to end at its period end: the customer chose to
/// leave, and a discount must not undo that (nor would it ever be used).
pub async fn grant(
    db: &Db,
    stripe: &Stripe,
    catalogue: &Catalogue,
    customer_id: &str,
    offer: &str,
    granted_by: &str,
    now: i64,
) -> Result<Grant, BillingError> {
    grant_with(db, stripe, catalogue, customer_id, offer, granted_by, false, now).await
}

/// [`grant`] for a customer who takes the offer instead of cancelling (the exit survey):
/// the subscription stays, its cancellation (if one was set) is taken off with the coupon.
pub async fn grant_to_stay(
    db: &Db,
    stripe: &Stripe,
    catalogue: &Catalogue,
    customer_id: &str,
    offer: &str,
    granted_by: &str,
    now: i64,
) -> Result<Grant, BillingError> {
    grant_with(db, stripe, catalogue, customer_id, offer, granted_by, true, now).await
}

#[allow(clippy::too_many_arguments)]
async fn grant_with(
    db: &Db,
    stripe: &Stripe,
    catalogue: &Catalogue,
    customer_id: &str,
    offer: &str,
    granted_by: &str,
    stay: bool,
    now: i64,
) -> Result<Grant, BillingError> {
    let o = catalogue
        .stripe
        .offers
        .get(offer)
        .ok_or_else(|| BillingError::invalid("offer", format!("unknown offer `{offer}`")))?
        .clone();
    j1msky_accounts::customers::get(db, customer_id).await?;
    let sub = changes::current(db, customer_id).await?;
    if let Some(ending) = sub.as_ref().filter(|s| s.cancel_at_period_end && !stay) {
        return Err(BillingError::invalid(
            "offer",
            format!(
                "subscription {} is set to end at its period end: the customer chose to leave, so no discount \
                 is put on it",
                ending.id
            ),
        ));
    }
    let grant = Grant {
        id: j1msky_core::ids::new_id("ofg"),
        customer_id: customer_id.into(),
        offer: offer.into(),
        granted_by: granted_by.into(),
        subscription_id: sub.as_ref().map(|s| s.id.clone()),
        checkout_session: None,
        created_at: now,
    };
    let mut tx = db.begin().await?;
    // The customer's row is the lock two concurrent grants queue on (PostgreSQL; SQLite's
    // BEGIN IMMEDIATE already serialises), so the check below cannot pass twice.
    j1msky_accounts::customer_links::lock(&mut tx, customer_id).await?;
    if let Some(why) = refusal_in(&mut tx, catalogue, customer_id, offer, now).await? {
        return Err(BillingError::invalid("offer", why));
    }
    // Stripe keeps one set of discounts: a new coupon would replace the one in force.
    if let Some(coupon) = sub.as_ref().and_then(|s| s.discount_coupon.as_deref()) {
        return Err(BillingError::invalid(
            "offer",
            format!("the subscription already has discount `{coupon}`; another would replace it"),
        ));
    }
    insert(&mut tx, &grant).await?;
    let event = BillingOfferGranted {
        grant: grant.id.clone(),
        offer: offer.into(),
        granted_by: granted_by.into(),
        subscription: grant.subscription_id.clone(),
        held_until: None,
    };
    outbox::emit_typed(&mut tx, db.backend(), event, Some(customer_id), now).await?;
    tx.commit().await?;
    if let Some(sub) = &sub {
        let coupon = sync::coupon_id(offer, o.percent_off, o.months);
        let params = if stay {
            json!({"discounts": [{"coupon": coupon}], "cancel_at_period_end": false})
        } else {
            json!({"discounts": [{"coupon": coupon}]})
        };
        let applied =
            stripe.post(&format!("subscriptions/{}", sub.id), &params, &format!("j1msky-offer-{}", grant.id)).await;
        if let Err(e) = applied {
            // Stripe refused it (a 4xx): not applied, so not granted, and the customer may
            // be offered it again. Otherwise (unreachable, a 5xx, a timeout) it may have
            // been applied: the subscription says. Unknown: the grant is kept, so an offer
            // granted once per customer is never applied twice.
            let refused = matches!(&e, BillingError::Stripe { status, .. } if (400..500).contains(status));
            let on_it = if refused {
                Some(false)
            } else {
                stripe.get(&format!("subscriptions/{}", sub.id), &Value::Null).await.ok().map(|remote| {
                    [&remote["discount"]["coupon"]["id"], &remote["discounts"][0]["coupon"]["id"]]
                        .iter()
                        .any(|c| c.as_str() == Some(coupon.as_str()))
                })
            };
            match on_it {
                Some(true) => return Ok(grant),
                Some(false) => {
                    sqlx::query("DELETE FROM offer_grants WHERE id = $1").bind(&grant.id).execute(db.pool()).await?;
                }
                None => {
                    tracing::warn!(grant = %grant.id, error = %e, "offer grant kept: whether Stripe applied it is unknown")
                }
            }
            return Err(e);
        }
    }
    Ok(grant)
}

/// Holds `offer` for the customer's next upgrade, inside the caller's transaction (the
/// upgrade prompt of a plan-limit trigger): granted now by the server, applied only by
/// `upgrade_with_offer`, spent once, gone at `expires_at`. `Ok(None)` when the
/// offer's rules refuse it (already had within its cool-down, or held and still open).
#[allow(clippy::too_many_arguments)]
pub async fn hold_for_upgrade(
    conn: &mut AnyConnection,
    backend: j1msky_db::Backend,
    catalogue: &Catalogue,
    customer_id: &str,
    offer: &str,
    granted_by: &str,
    expires_at: i64,
    now: i64,
) -> Result<Option<Grant>, BillingError> {
    if refusal_in(conn, catalogue, customer_id, offer, now).await?.is_some() {
        return Ok(None);
    }
    let g = Grant {
        id: j1msky_core::ids::new_id("ofg"),
        customer_id: customer_id.into(),
        offer: offer.into(),
        granted_by: granted_by.into(),
        subscription_id: None,
        checkout_session: None,
        created_at: now,
    };
    sqlx::query(&format!("INSERT INTO offer_grants ({COLUMNS}, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"))
        .bind(&g.id)
        .bind(&g.customer_id)
        .bind(&g.offer)
        .bind(&g.granted_by)
        .bind(&g.subscription_id)
        .bind(&g.checkout_session)
        .bind(g.created_at)
        .bind(expires_at)
        .execute(&mut *conn)
        .await?;
    let event = BillingOfferGranted {
        grant: g.id.clone(),
        offer: offer.into(),
        granted_by: granted_by.into(),
        subscription: None,
        held_until: Some(expires_at),
    };
    outbox::emit_typed(conn, backend, event, Some(customer_id), now).await?;
    Ok(Some(g))
}

/// The upgrade offer held for the customer, unspent and not expired at `now`, with its
/// expiry.
pub async fn held_for_upgrade(db: &Db, customer_id: &str, now: i64) -> Result<Option<(Grant, i64)>, BillingError> {
    let row = sqlx::query(&format!(
        "SELECT {COLUMNS}, expires_at FROM offer_grants WHERE customer_id = $1 AND expires_at IS NOT NULL
           AND redeemed_at IS NULL AND expires_at > $2
         ORDER BY created_at DESC, id DESC LIMIT 1"
    ))
    .bind(customer_id)
    .bind(now)
    .fetch_optional(db.pool())
    .await?;
    match row {
        Some(r) => Ok(Some((grant_of(&r)?, r.try_get(7)?))),
        None => Ok(None),
    }
}

async fn insert(tx: &mut j1msky_db::Tx, g: &Grant) -> Result<(), BillingError> {
    sqlx::query(&format!("INSERT INTO offer_grants ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"))
        .bind(&g.id)
        .bind(&g.customer_id)
        .bind(&g.offer)
        .bind(&g.granted_by)
        .bind(&g.subscription_id)
        .bind(&g.checkout_session)
        .bind(g.created_at)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Whether a checkout session was paid for (Stripe's `status` is `complete`).
async fn completed(stripe: &Stripe, session: &str) -> Result<bool, BillingError> {
    let s: Value = stripe.get(&format!("checkout/sessions/{session}"), &Value::Null).await?;
    Ok(s["status"].as_str() == Some("complete"))
}

/// A grant waiting for a checkout: not on a subscription, and any checkout that carried it
/// was never paid (an abandoned checkout does not use the offer up).
pub async fn pending_for_checkout(db: &Db, stripe: &Stripe, customer_id: &str) -> Result<Option<Grant>, BillingError> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM offer_grants WHERE customer_id = $1 AND offer <> $2 AND subscription_id IS NULL
           AND expires_at IS NULL AND redeemed_at IS NULL
         ORDER BY created_at DESC, id DESC"
    ))
    .bind(customer_id)
    .bind(TRIAL)
    .fetch_all(db.pool())
    .await?;
    for r in &rows {
        let g = grant_of(r)?;
        match &g.checkout_session {
            Some(s) if completed(stripe, s).await? => continue,
            _ => return Ok(Some(g)),
        }
    }
    Ok(None)
}

/// The free trial is the customer's at checkout only if they never had a subscription
/// nor a trial: one granted outside checkout (its own record, `account_trials`, or its
/// grant here: the grant is written after the trial's transaction and may be missing),
/// or a paid checkout that carried one.
pub async fn trial_available(db: &Db, stripe: &Stripe, customer_id: &str) -> Result<bool, BillingError> {
    let (subs,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM subscriptions WHERE customer_id = $1")
        .bind(customer_id)
        .fetch_one(db.pool())
        .await?;
    if subs > 0 || j1msky_accounts::trials::get(db, customer_id).await?.is_some() {
        return Ok(false);
    }
    for s in trial_sessions(db, customer_id).await? {
        match s {
            None => return Ok(false),
            Some(s) if completed(stripe, &s).await? => return Ok(false),
            Some(_) => {}
        }
    }
    Ok(true)
}

/// The checkout sessions that carried the customer's trial (`None`: a trial had outside
/// checkout).
async fn trial_sessions(db: &Db, customer_id: &str) -> Result<Vec<Option<String>>, BillingError> {
    let rows: Vec<(Option<String>,)> =
        sqlx::query_as("SELECT checkout_session FROM offer_grants WHERE customer_id = $1 AND offer = $2")
            .bind(customer_id)
            .bind(TRIAL)
            .fetch_all(db.pool())
            .await?;
    Ok(rows.into_iter().map(|(s,)| s).collect())
}

/// Expires at Stripe every other still-open checkout that carries the customer's trial,
/// so the trial lives in one session (`keep`) at a time and two open trial checkouts can
/// never both be completed. `Ok(false)` when one of them was completed meanwhile: the
/// trial is spent and `keep` must not be used.
pub async fn expire_other_trial_checkouts(
    db: &Db,
    stripe: &Stripe,
    customer_id: &str,
    keep: &str,
) -> Result<bool, BillingError> {
    let sessions = trial_sessions(db, customer_id).await?.into_iter().flatten();
    expire_open_checkouts(stripe, sessions, keep).await
}

/// Moves a grant onto a new checkout session (`session`): the session that carried it
/// before is expired at Stripe if still open, so an offer lives in one open checkout at a
/// time (two sessions opened a minute apart cannot both be paid with it, nor can an
/// unpaid one keep it alive for a later checkout). `Ok(false)` when the earlier session
/// was paid meanwhile: the offer is spent and `session` must not be used.
pub async fn move_to_checkout(
    db: &Db,
    stripe: &Stripe,
    customer_id: &str,
    grant: &Grant,
    session: &str,
    now: i64,
) -> Result<bool, BillingError> {
    let earlier = grant.checkout_session.clone().into_iter();
    if !expire_open_checkouts(stripe, earlier, session).await? {
        return Ok(false);
    }
    record_checkout(db, customer_id, Some(grant), session, now).await?;
    Ok(true)
}

/// Expires each of `sessions` but `keep` that is still open; `Ok(false)` as soon as one
/// was completed (what it carried is spent).
async fn expire_open_checkouts(
    stripe: &Stripe,
    sessions: impl Iterator<Item = String>,
    keep: &str,
) -> Result<bool, BillingError> {
    for s in sessions {
        if s == keep {
            continue;
        }
        let session: Value = stripe.get(&format!("checkout/sessions/{s}"), &Value::Null).await?;
        match session["status"].as_str() {
            Some("complete") => return Ok(false),
            Some("open") => {
                match stripe
                    .post(&format!("checkout/sessions/{s}/expire"), &json!({}), &format!("j1msky-expire-{s}"))
                    .await
                {
                    Ok(_) => {}
                    Err(BillingError::Stripe { status: 400, .. }) if completed(stripe, &s).await? => return Ok(false),
                    Err(e) => return Err(e),
                }
            }
            _ => {}
        }
    }
    Ok(true)
}

/// Records a free trial the customer had outside checkout (an onboarding trial): their
/// first checkout then starts paid.
pub async fn record_trial_had(db: &Db, customer_id: &str, granted_by: &str, now: i64) -> Result<(), BillingError> {
    j1msky_accounts::customers::get(db, customer_id).await?;
    let g = Grant {
        id: j1msky_core::ids::new_id("ofg"),
        customer_id: customer_id.into(),
        offer: TRIAL.into(),
        granted_by: granted_by.into(),
        subscription_id: None,
        checkout_session: None,
        created_at: now,
    };
    let mut tx = db.begin().await?;
    insert(&mut tx, &g).await?;
    tx.commit().await?;
    Ok(())
}

/// Records that a checkout session carries a grant (`grant`), or the free trial
/// (`None`), granted by the checkout itself.
pub async fn record_checkout(
    db: &Db,
    customer_id: &str,
    grant: Option<&Grant>,
    session: &str,
    now: i64,
) -> Result<(), BillingError> {
    let mut tx = db.begin().await?;
    match grant {
        Some(g) => {
            sqlx::query("UPDATE offer_grants SET checkout_session = $1 WHERE id = $2")
                .bind(session)
                .bind(&g.id)
                .execute(&mut *tx)
                .await?;
        }
        None => {
            let seen: Option<(String,)> =
                sqlx::query_as("SELECT id FROM offer_grants WHERE checkout_session = $1 AND offer = $2")
                    .bind(session)
                    .bind(TRIAL)
                    .fetch_optional(&mut *tx)
                    .await?;
            if seen.is_none() {
                let g = Grant {
                    id: j1msky_core::ids::new_id("ofg"),
                    customer_id: customer_id.into(),
                    offer: TRIAL.into(),
                    granted_by: "checkout".into(),
                    subscription_id: None,
                    checkout_session: Some(session.into()),
                    created_at: now,
                };
                insert(&mut tx, &g).await?;
            }
        }
    }
    tx.commit().await?;
    Ok(())
}

/// Marks a grant spent by the paid checkout that carried it (`checkout.session.completed`
/// with the grant in its metadata), inside the webhook's transaction: it then rides on no
/// later checkout, whatever became of the sessions recorded on it. Only the grant's own
/// customer spends it; applying the same event again changes nothing.
pub(crate) async fn redeemed_by_checkout(
    conn: &mut AnyConnection,
    customer_id: &str,
    grant: &str,
    subscription: Option<&str>,
    created_secs: i64,
) -> Result<(), BillingError> {
    sqlx::query(
        "UPDATE offer_grants SET redeemed_at = $1, subscription_id = COALESCE(subscription_id, $2)
         WHERE id = $3 AND customer_id = $4 AND redeemed_at IS NULL",
    )
    .bind(created_secs.saturating_mul(1_000_000))
    .bind(subscription)
    .bind(grant)
    .bind(customer_id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Upgrades with the discount the server holds for the customer
/// (`offers::hold_for_upgrade`, from an upgrade prompt): the coupon is the held grant's,
/// never one the caller names. The grant is spent before Stripe is called (two clicks
/// cannot both use it) and given back if Stripe refuses; the Stripe call's idempotency key
/// is the grant's, so the coupon reaches Stripe once. Refused when no grant is held, or
/// it was used, or it expired.
pub async fn upgrade_with_offer(
    db: &Db,
    stripe: &Stripe,
    catalogue: &Catalogue,
    customer_id: &str,
    plan: &str,
    now: i64,
) -> Result<Grant, BillingError> {
    let (grant, _) = held_for_upgrade(db, customer_id, now).await?.ok_or_else(|| {
        BillingError::invalid("offer", "no upgrade offer is open for this account (it was used, or it expired)")
    })?;
    let o = catalogue
        .stripe
        .offers
        .get(&grant.offer)
        .ok_or_else(|| BillingError::Config(format!("offer `{}` is no longer in the catalogue", grant.offer)))?
        .clone();
    let (sub, price) = changes::upgrade_checked(db, stripe, catalogue, customer_id, plan).await?;
    let claimed = sqlx::query(
        "UPDATE offer_grants SET redeemed_at = $1, subscription_id = $2
         WHERE id = $3 AND redeemed_at IS NULL AND expires_at > $1",
    )
    .bind(now)
    .bind(&sub.id)
    .bind(&grant.id)
    .execute(db.pool())
    .await?;
    if claimed.rows_affected() != 1 {
        return Err(BillingError::invalid("offer", "this upgrade offer was already used"));
    }
    let swapped = async {
        changes::release(stripe, &sub).await?;
        let remote = stripe.get(&format!("subscriptions/{}", sub.id), &Value::Null).await?;
        let item = remote["items"]["data"][0]["id"]
            .as_str()
            .ok_or_else(|| BillingError::Malformed(format!("subscription {} has no item", sub.id)))?;
        let coupon = sync::coupon_id(&grant.offer, o.percent_off, o.months);
        let params = json!({"items": [{"id": item, "price": price}], "proration_behavior": "always_invoice",
            "payment_behavior": changes::PAY_NOW, "discounts": [{"coupon": coupon}], "metadata": {"j1msky_downgrade_to": "", "j1msky_offer_grant": grant.id}});
        let key = format!("j1msky-upgrade-offer-{}-{}", grant.id, changes::attempt(now));
        stripe.post(&format!("subscriptions/{}", sub.id), &params, &key).await
    }
    .await;
    if let Err(e) = swapped {
        // Not applied, so not spent: the customer may accept again.
        sqlx::query("UPDATE offer_grants SET redeemed_at = NULL, subscription_id = NULL WHERE id = $1")
            .bind(&grant.id)
            .execute(db.pool())
            .await?;
        return Err(e);
    }
    Ok(Grant { subscription_id: Some(sub.id), ..grant })
}
