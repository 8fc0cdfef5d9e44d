//! What moves a subscription besides API calls: a customer completing checkout, a
//! period renewing (with its invoice, discount months and failed payments), a refund;
//! and the controls tests use (`/_sim/…`): webhook delivery modes, API failures, clock.

use axum::http::Method;
use serde_json::{json, Value};

use super::{boolean, int, merge_metadata, ApiError, ApiResult, Shared, Store};

const PERIOD: i64 = 30 * 86_400;

pub(crate) fn control(shared: &Shared, method: &Method, seg: &[&str], p: &Value) -> ApiResult {
    let stats = shared.deliver.stats();
    let mut guard = shared.lock();
    let s = &mut *guard;
    match (method.as_str(), seg) {
        ("POST", ["checkout", id, "complete"]) => complete_checkout(s, id, p),
        ("POST", ["checkout", id, "async"]) => async_payment(s, id, boolean(&p["succeed"]).unwrap_or(true)),
        ("POST", ["subscriptions", id, "renew"]) => {
            let fail = boolean(&p["fail"]).unwrap_or(false);
            // After its retries Stripe leaves a failed subscription `unpaid` (or keeps it `past_due`).
            let failed_status = match p["status"].as_str() {
                None | Some("past_due") => "past_due",
                Some("unpaid") => "unpaid",
                Some(other) => return Err(ApiError::invalid("status", format!("Invalid status: {other}"))),
            };
            renew(s, id, fail, failed_status)
        }
        ("POST", ["charges", id, "refund"]) => refund(s, id, int(&p["amount"])),
        // The cardholder disputes a charge with their bank (an inquiry first, if asked).
        ("POST", ["charges", id, "dispute"]) => {
            open_dispute(s, id, p["reason"].as_str().unwrap_or("fraudulent"), boolean(&p["inquiry"]).unwrap_or(false))
        }
        // The card network decides: `won` (the money comes back) or `lost`.
        ("POST", ["disputes", id, "close"]) => match p["outcome"].as_str() {
            Some(outcome @ ("won" | "lost")) => close_dispute(s, id, outcome),
            other => Err(ApiError::invalid("outcome", format!("Invalid outcome: {other:?}; won or lost"))),
        },
        // Stripe's notice three days before a trial ends.
        ("POST", ["subscriptions", id, "trial_will_end"]) => {
            let sub = s.get("sub_", "subscription", id)?;
            if sub["status"] != "trialing" {
                return Err(ApiError::invalid("subscription", format!("{id} is not trialing")));
            }
            s.event("customer.subscription.trial_will_end", &sub, None);
            Ok(sub)
        }
        // The customer acts in a Customer Portal session it was sent to: as the session's
        // configuration allows.
        ("POST", ["portal", session, action]) => portal_action(s, session, action, p),
        // The customer cancels in the Customer Portal (one that allows both): at the period
        // end, or at once.
        ("POST", ["subscriptions", id, "portal_cancel"]) => {
            if boolean(&p["at_period_end"]).unwrap_or(true) {
                update_subscription(s, id, &json!({"cancel_at_period_end": "true"}))
            } else {
                cancel_now(s, id)
            }
        }
        ("POST", ["customers", id, "card"]) => {
            let mut c = s.get("cus_", "customer", id)?;
            c["_declines"] = json!(boolean(&p["declines"]).unwrap_or(false));
            s.objects.insert(id.to_string(), c.clone());
            Ok(c)
        }
        ("POST", ["invoices", id, "void"]) => super::invoices::close_unpaid(s, id, "void", "invoice.voided"),
        ("POST", ["invoices", id, "uncollectible"]) => {
            super::invoices::close_unpaid(s, id, "uncollectible", "invoice.marked_uncollectible")
        }
        ("POST", ["webhooks"]) => {
            if let Some(url) = p["url"].as_str() {
                s.hooks.url = Some(url.to_string());
            }
            if let Some(b) = boolean(&p["duplicate"]) {
                s.hooks.duplicate = b;
            }
            if let Some(b) = boolean(&p["hold"]) {
                s.hooks.hold = b;
            }
            if let Some(b) = boolean(&p["reverse"]) {
                s.hooks.reverse = b;
            }
            Ok(json!({"ok": true}))
        }
        ("POST", ["webhooks", "release"]) => Ok(json!({"released": s.hooks.release()})),
        ("POST", ["fail"]) => {
            s.fail_next = int(&p["times"]).unwrap_or(1).max(0) as u32;
            s.fail_skip = int(&p["after"]).unwrap_or(0).max(0) as u32;
            s.fail_status = int(&p["status"]).unwrap_or(500) as u16;
            s.lose_next = int(&p["lose"]).unwrap_or(0).max(0) as u32;
            Ok(json!({"ok": true}))
        }
        ("POST", ["clock"]) => {
            s.clock_offset += int(&p["advance_secs"]).unwrap_or(0);
            Ok(json!({"now": s.now()}))
        }
        ("GET", ["state"]) => {
            let mut counts = serde_json::Map::new();
            for v in s.objects.values() {
                let k = v["object"].as_str().unwrap_or("?").to_string();
                let n = counts.get(&k).and_then(Value::as_i64).unwrap_or(0);
                counts.insert(k, json!(n + 1));
            }
            Ok(
                json!({"events": s.events.len(), "objects": counts, "webhooks": stats, "held": s.hooks.held(), "now": s.now()}),
            )
        }
        _ => Err(ApiError::missing("control", &seg.join("/"))),
    }
}

fn discount_of(s: &mut Store, coupon: &Value, customer: &str, sub: &str) -> Value {
    let id = s.id("di");
    json!({"id": id, "object": "discount", "coupon": coupon, "customer": customer, "subscription": sub, "start": s.now()})
}

fn complete_checkout(s: &mut Store, id: &str, p: &Value) -> ApiResult {
    let mut cs = s.get("cs_", "checkout session", id)?;
    if cs["status"] != "open" {
        return Err(ApiError::invalid("id", format!("Checkout session {id} is {}.", cs["status"])));
    }
    let now = s.now();
    let customer = match cs["customer"].as_str() {
        Some(c) => c.to_string(),
        None => {
            let cid = s.id("cus");
            let c = json!({"id": cid, "object": "customer", "email": cs["customer_email"], "metadata": {}, "created": now, "livemode": false});
            s.objects.insert(cid.clone(), c.clone());
            s.event("customer.created", &c, None);
            cid
        }
    };
    let price = s.get("price_", "price", cs["_price"].as_str().unwrap_or_default())?;
    let trial_days = cs["_trial_days"].as_i64().filter(|d| *d > 0);
    let pending = p["payment"].as_str() == Some("async");
    let (status, period_end, trial_end) = match trial_days {
        Some(d) => ("trialing", now + d * 86_400, Some(now + d * 86_400)),
        // A bank debit and the like: the subscription waits for the money.
        None if pending => ("incomplete", now + PERIOD, None),
        None => ("active", now + PERIOD, None),
    };
    let sub_id = s.id("sub");
    let item_id = s.id("si");
    let mut sub = json!({
        "id": sub_id, "object": "subscription", "customer": customer, "status": status,
        "items": {"object": "list", "data": [{"id": item_id, "object": "subscription_item", "price": price, "quantity": 1,
                   "current_period_start": now, "current_period_end": period_end}]},
        "current_period_start": now, "current_period_end": period_end, "cancel_at_period_end": false,
        "canceled_at": null, "trial_end": trial_end, "discount": null, "schedule": null,
        "metadata": if cs["_sub_metadata"].is_object() { cs["_sub_metadata"].clone() } else { json!({}) },
        "created": now, "livemode": false,
    });
    if let Some(code) = cs["_coupon"].as_str() {
        let coupon = s.get("", "coupon", code)?;
        sub["discount"] = discount_of(s, &coupon, &customer, &sub_id);
        sub["_months_left"] = json!(coupon["duration_in_months"].as_i64().unwrap_or(1));
    }
    s.objects.insert(sub_id.clone(), sub.clone());
    s.event("customer.subscription.created", &sub, None);
    if !sub["discount"].is_null() {
        s.event("customer.discount.created", &sub["discount"], None);
    }
    cs["status"] = json!("complete");
    cs["payment_status"] = json!(if pending {
        "unpaid"
    } else if trial_days.is_some() {
        "no_payment_required"
    } else {
        "paid"
    });
    cs["customer"] = json!(customer);
    cs["subscription"] = json!(sub_id);
    s.objects.insert(id.to_string(), cs.clone());
    s.event("checkout.session.completed", &cs, None);
    if trial_days.is_none() && !pending {
        invoice(s, &sub_id, false)?;
    }
    Ok(cs)
}

fn async_payment(s: &mut Store, id: &str, succeed: bool) -> ApiResult {
    let mut cs = s.get("cs_", "checkout session", id)?;
    cs["payment_status"] = json!(if succeed { "paid" } else { "unpaid" });
    s.objects.insert(id.to_string(), cs.clone());
    let sub_id = cs["subscription"].as_str().unwrap_or_default().to_string();
    let mut sub = s.get("sub_", "subscription", &sub_id)?;
    let previous = json!({"status": sub["status"]});
    sub["status"] = json!(if succeed { "active" } else { "incomplete_expired" });
    s.objects.insert(sub_id.clone(), sub.clone());
    if succeed {
        s.event("checkout.session.async_payment_succeeded", &cs, None);
        s.event("customer.subscription.updated", &sub, Some(previous));
        invoice(s, &sub_id, false)?;
    } else {
        s.event("checkout.session.async_payment_failed", &cs, None);
        s.event("customer.subscription.updated", &sub, Some(previous));
    }
    Ok(cs)
}

/// Price after the subscription's discount, in minor units.
fn discounted(sub: &Value, amount: i64) -> i64 {
    let pct = sub["discount"]["coupon"]["percent_off"].as_f64().unwrap_or(0.0) as i64;
    amount - amount * pct / 100
}

/// Bills the subscription's current period (plus pending invoice items), paid or failed.
fn invoice(s: &mut Store, sub_id: &str, fail: bool) -> ApiResult {
    let sub = s.get("sub_", "subscription", sub_id)?;
    let customer = sub["customer"].as_str().unwrap_or_default().to_string();
    let price = sub["items"]["data"][0]["price"].clone();
    let base = discounted(&sub, price["unit_amount"].as_i64().unwrap_or(0));
    let items: Vec<String> = s
        .objects
        .values()
        .filter(|v| v["object"] == "invoiceitem" && v["customer"] == customer.as_str() && v["invoice"].is_null())
        .filter_map(|v| v["id"].as_str().map(String::from))
        .collect();
    let in_id = s.id("in");
    let mut extra = 0;
    // Pending invoice items are listed before the subscription's own line.
    let mut lines = Vec::new();
    for ii in &items {
        if let Some(v) = s.objects.get_mut(ii) {
            v["invoice"] = json!(in_id);
            extra += v["amount"].as_i64().unwrap_or(0);
            lines.push(json!({"type": "invoiceitem", "amount": v["amount"], "description": v["description"],
                              "invoice_item": ii, "metadata": v["metadata"]}));
        }
    }
    lines.push(
        json!({"type": "subscription", "subscription": sub_id, "subscription_item": sub["items"]["data"][0]["id"],
                      "price": price, "amount": base,
                      "period": {"start": sub["current_period_start"], "end": sub["current_period_end"]}}),
    );
    charge_invoice(s, &in_id, &customer, Some(sub_id), base + extra, lines, price["currency"].clone(), fail)
}

#[allow(clippy::too_many_arguments)]
fn charge_invoice(
    s: &mut Store,
    in_id: &str,
    customer: &str,
    sub_id: Option<&str>,
    amount: i64,
    lines: Vec<Value>,
    currency: Value,
    fail: bool,
) -> ApiResult {
    let now = s.now();
    let ch_id = s.id("ch");
    let mut lines = lines;
    for line in lines.iter_mut() {
        line["id"] = json!(s.id("il"));
        line["object"] = json!("line_item");
        line["currency"] = currency.clone();
        if line["type"].is_null() {
            line["type"] = json!("invoiceitem");
        }
    }
    let inv = json!({
        "id": in_id, "object": "invoice", "customer": customer, "subscription": sub_id, "currency": currency,
        "amount_due": amount, "amount_paid": if fail { 0 } else { amount }, "attempt_count": 1,
        "status": if fail { "open" } else { "paid" }, "charge": if fail { Value::Null } else { json!(ch_id) },
        "next_payment_attempt": if fail { json!(now + 3 * 86_400) } else { Value::Null },
        "status_transitions": {"paid_at": if fail { Value::Null } else { json!(now) }},
        "lines": super::invoices::embedded_lines(in_id, &lines), "_lines": lines, "created": now, "livemode": false,
    });
    s.objects.insert(in_id.to_string(), inv.clone());
    if fail {
        s.event("invoice.payment_failed", &inv, None);
    } else {
        // What Stripe keeps of a card payment: 2.9 % + 30 ¢ (its standard US price), on
        // the charge's balance transaction.
        let fee = (amount * 29 + 500) / 1_000 + 30;
        let txn = balance_transaction(s, amount, fee, &currency, &ch_id, "charge", "Stripe processing fees");
        let ch = json!({"id": ch_id, "object": "charge", "amount": amount, "amount_refunded": 0, "refunded": false,
                        "customer": customer, "invoice": in_id, "currency": currency, "paid": true, "created": now,
                        "balance_transaction": txn, "livemode": false});
        s.objects.insert(ch_id, ch);
        s.event("invoice.paid", &inv, None);
    }
    Ok(inv)
}

/// A balance transaction (`txn_…`): money moving in or out of the account's balance, with
/// what Stripe kept of it (`fee`, detailed in `fee_details`). Stored for
/// `GET /v1/balance_transactions/{id}`; returns its id.
fn balance_transaction(
    s: &mut Store,
    amount: i64,
    fee: i64,
    currency: &Value,
    source: &str,
    category: &str,
    fee_description: &str,
) -> String {
    let id = s.id("txn");
    let now = s.now();
    let fee_details = if fee == 0 {
        json!([])
    } else {
        json!([{"amount": fee, "application": null, "currency": currency, "description": fee_description,
                "type": "stripe_fee"}])
    };
    let txn = json!({
        "id": id, "object": "balance_transaction", "amount": amount, "available_on": now + 2 * 86_400,
        "created": now, "currency": currency, "description": null, "exchange_rate": null, "fee": fee,
        "fee_details": fee_details, "net": amount - fee, "reporting_category": category, "source": source,
        "status": "pending", "type": if category == "charge" { "charge" } else { "adjustment" },
    });
    s.objects.insert(id.clone(), txn);
    id
}

/// The period ends: a subscription set to cancel ends; otherwise a new period starts and
/// is billed; a trial ends; a coupon's months run down.
fn renew(s: &mut Store, id: &str, fail: bool, failed_status: &str) -> ApiResult {
    let mut sub = s.get("sub_", "subscription", id)?;
    if sub["status"] == "canceled" {
        return Err(ApiError::invalid("id", format!("Subscription {id} is canceled.")));
    }
    if sub["cancel_at_period_end"] == true {
        return cancel_now(s, id);
    }
    let start = sub["current_period_end"].as_i64().unwrap_or_else(|| s.now());
    // A schedule's next phase starting now swaps the price before the period is billed.
    if let Some(sched_id) = sub["schedule"].as_str().map(String::from) {
        if let Ok(mut sched) = s.get("sub_sched_", "subscription schedule", &sched_id) {
            let next = sched["phases"]
                .as_array()
                .and_then(|ph| ph.iter().find(|p| p["start_date"].as_i64() == Some(start)).cloned());
            if let Some(phase) = next {
                let price_id = phase["items"][0]["price"].as_str().unwrap_or_default().to_string();
                if let Ok(price) = s.get("price_", "price", &price_id) {
                    sub["items"]["data"][0]["price"] = price;
                }
                // The last phase has begun: end_behavior=release hands the subscription back.
                sched["status"] = json!("released");
                sched["released_subscription"] = json!(sub["id"]);
                sched["subscription"] = Value::Null;
                s.objects.insert(sched_id, sched);
                sub["schedule"] = Value::Null;
            }
        }
    }
    let previous = json!({"current_period_start": sub["current_period_start"], "current_period_end": sub["current_period_end"], "status": sub["status"]});
    sub["current_period_start"] = json!(start);
    sub["current_period_end"] = json!(start + PERIOD);
    sub["items"]["data"][0]["current_period_start"] = json!(start);
    sub["items"]["data"][0]["current_period_end"] = json!(start + PERIOD);
    sub["status"] = json!(if fail { failed_status } else { "active" });
    s.objects.insert(id.to_string(), sub.clone());
    let inv = invoice(s, id, fail)?;
    sub["latest_invoice"] = inv["id"].clone();
    s.objects.insert(id.to_string(), sub.clone());
    if !fail && !sub["discount"].is_null() {
        let left = sub["_months_left"].as_i64().unwrap_or(1) - 1;
        sub["_months_left"] = json!(left);
        if left <= 0 {
            let d = sub["discount"].clone();
            sub["discount"] = Value::Null;
            s.event("customer.discount.deleted", &d, None);
        }
        s.objects.insert(id.to_string(), sub.clone());
    }
    s.event("customer.subscription.updated", &sub, Some(previous));
    Ok(sub)
}

fn refund(s: &mut Store, id: &str, amount: Option<i64>) -> ApiResult {
    let mut ch = s.get("ch_", "charge", id)?;
    let total = ch["amount"].as_i64().unwrap_or(0);
    let done = ch["amount_refunded"].as_i64().unwrap_or(0);
    let amount = amount.unwrap_or(total - done);
    if amount <= 0 || done + amount > total {
        return Err(ApiError::invalid(
            "amount",
            format!("Refund amount ({amount}) is greater than unrefunded amount on charge ({}).", total - done),
        ));
    }
    ch["amount_refunded"] = json!(done + amount);
    ch["refunded"] = json!(done + amount == total);
    s.objects.insert(id.to_string(), ch.clone());
    s.event("charge.refunded", &ch, Some(json!({"amount_refunded": done})));
    Ok(ch)
}

/// A dispute of a charge as Stripe shows one (API version 2024-06-20): it names the
/// charge, not the customer. A dispute (not an inquiry) withdraws the amount at once.
fn open_dispute(s: &mut Store, charge: &str, reason: &str, inquiry: bool) -> ApiResult {
    let mut ch = s.get("ch_", "charge", charge)?;
    if ch["disputed"] == true {
        return Err(ApiError::invalid("charge", format!("Charge {charge} has already been disputed.")));
    }
    let now = s.now();
    let id = s.id("du");
    let amount = ch["amount"].as_i64().unwrap_or(0) - ch["amount_refunded"].as_i64().unwrap_or(0);
    // A dispute (not an inquiry) takes the amount from the balance at once, and Stripe's
    // dispute fee with it; the dispute carries these balance transactions whole.
    let withdrawn = if inquiry {
        json!([])
    } else {
        let txn = balance_transaction(s, -amount, 1_500, &ch["currency"], &id, "dispute", "Dispute fee");
        json!([s.objects[&txn].clone()])
    };
    let du = json!({
        "id": id, "object": "dispute", "amount": amount, "balance_transactions": withdrawn, "charge": charge,
        "created": now, "currency": ch["currency"], "evidence": {},
        "evidence_details": {"due_by": now + 7 * 86_400, "has_evidence": false, "past_due": false, "submission_count": 0},
        "is_charge_refundable": false, "livemode": false, "metadata": {}, "payment_intent": null, "reason": reason,
        "status": if inquiry { "warning_needs_response" } else { "needs_response" },
    });
    ch["disputed"] = json!(true);
    s.objects.insert(charge.to_string(), ch);
    s.objects.insert(id, du.clone());
    s.event("charge.dispute.created", &du, None);
    if !inquiry {
        s.event("charge.dispute.funds_withdrawn", &du, None);
    }
    Ok(du)
}

/// Closes a dispute (`POST /v1/disputes/{id}/close` accepts it: lost).
pub(crate) fn close_dispute(s: &mut Store, id: &str, outcome: &str) -> ApiResult {
    let mut du = s.get("du_", "dispute", id)?;
    let status = du["status"].as_str().unwrap_or_default().to_string();
    if matches!(status.as_str(), "won" | "lost" | "warning_closed") {
        return Err(ApiError::invalid("dispute", format!("Dispute {id} is already closed ({status}).")));
    }
    let new = if status.starts_with("warning_") { "warning_closed" } else { outcome };
    du["status"] = json!(new);
    if new == "won" {
        // The amount comes back; the dispute fee does not.
        let amount = du["amount"].as_i64().unwrap_or(0);
        let txn = balance_transaction(s, amount, 0, &du["currency"].clone(), id, "dispute_reversal", "");
        let txn = s.objects[&txn].clone();
        if let Some(list) = du["balance_transactions"].as_array_mut() {
            list.push(txn);
        }
    }
    s.objects.insert(id.to_string(), du.clone());
    s.event("charge.dispute.closed", &du, Some(json!({"status": status})));
    if new == "won" {
        s.event("charge.dispute.funds_reinstated", &du, None);
    }
    Ok(du)
}

/// `DELETE /v1/subscriptions/{id}`: ends it now.
pub(crate) fn cancel_now(s: &mut Store, id: &str) -> ApiResult {
    let mut sub = s.get("sub_", "subscription", id)?;
    if sub["status"] == "canceled" {
        return Ok(sub);
    }
    let previous = json!({"status": sub["status"]});
    sub["status"] = json!("canceled");
    sub["canceled_at"] = json!(s.now());
    sub["ended_at"] = json!(s.now());
    s.objects.insert(id.to_string(), sub.clone());
    s.event("customer.subscription.deleted", &sub, Some(previous));
    Ok(sub)
}

/// What a price change charging now is made of: whether the card declines, now, the
/// period's end and what is left of it. Stripe's `payment_behavior`: a declined card fails
/// the whole update under `error_if_incomplete`; under the default (`allow_incomplete`)
/// the new price holds, its invoice stays open and the subscription turns past_due.
fn charge_terms(s: &Store, sub: &Value, customer: &str, p: &Value) -> Result<(bool, i64, i64, i64), ApiError> {
    let declines = s.get("cus_", "customer", customer)?["_declines"] == true;
    let behaviour = p["payment_behavior"].as_str().unwrap_or("allow_incomplete");
    if declines && behaviour == "error_if_incomplete" {
        return Err(ApiError::card_declined());
    }
    let now = s.now();
    let end = sub["current_period_end"].as_i64().unwrap_or(now);
    Ok((declines, now, end, (end - now).clamp(0, PERIOD)))
}

/// `POST /v1/subscriptions/{id}`: price swap (prorated when asked), cancel at period
/// end, metadata, discount, ending a trial.
pub(crate) fn update_subscription(s: &mut Store, id: &str, p: &Value) -> ApiResult {
    let mut sub = s.get("sub_", "subscription", id)?;
    if sub["status"] == "canceled" {
        return Err(ApiError::invalid("id", format!("A canceled subscription can only update its metadata: {id}")));
    }
    let mut previous = serde_json::Map::new();
    let customer = sub["customer"].as_str().unwrap_or_default().to_string();
    if let Some(price_id) = p["items"][0]["price"].as_str() {
        let item = &sub["items"]["data"][0];
        if let Some(item_id) = p["items"][0]["id"].as_str() {
            if item["id"] != item_id {
                return Err(ApiError::invalid("items[0][id]", format!("No such subscription item: '{item_id}'")));
            }
        }
        let new_price = s.get("price_", "price", price_id)?;
        let old_price = item["price"].clone();
        previous.insert("items".into(), sub["items"].clone());
        sub["items"]["data"][0]["price"] = new_price.clone();
        let (old_amount, new_amount) =
            (old_price["unit_amount"].as_i64().unwrap_or(0), new_price["unit_amount"].as_i64().unwrap_or(0));
        if p["billing_cycle_anchor"] == "now" && sub["status"] == "active" {
            // A new period starts now: the new price's whole period is invoiced at once,
            // less the unused part of the old price's (when prorating).
            let (declines, now, end, remaining) = charge_terms(s, &sub, &customer, p)?;
            let credit = if p["proration_behavior"] == "none" { 0 } else { old_amount * remaining / PERIOD };
            let full = discounted(&sub, new_amount);
            let due = (full - credit).max(0);
            previous.insert("current_period_start".into(), sub["current_period_start"].clone());
            previous.insert("current_period_end".into(), sub["current_period_end"].clone());
            sub["current_period_start"] = json!(now);
            sub["current_period_end"] = json!(now + PERIOD);
            sub["items"]["data"][0]["current_period_start"] = json!(now);
            sub["items"]["data"][0]["current_period_end"] = json!(now + PERIOD);
            s.objects.insert(id.to_string(), sub.clone());
            let in_id = s.id("in");
            let mut lines = vec![json!({"type": "subscription", "price": new_price, "amount": full,
                                        "period": {"start": now, "end": now + PERIOD}})];
            if credit > 0 {
                lines.push(json!({"price": old_price, "amount": -credit, "proration": true,
                                  "description": "Unused time", "period": {"start": now, "end": end}}));
            }
            charge_invoice(s, &in_id, &customer, Some(id), due, lines, new_price["currency"].clone(), declines)?;
            sub["latest_invoice"] = json!(in_id);
            if declines {
                previous.insert("status".into(), sub["status"].clone());
                sub["status"] = json!("past_due");
            }
        } else if p["proration_behavior"] == "always_invoice" && new_amount > old_amount && sub["status"] == "active" {
            let (declines, now, end, remaining) = charge_terms(s, &sub, &customer, p)?;
            let due = discounted(&sub, (new_amount - old_amount) * remaining / PERIOD);
            s.objects.insert(id.to_string(), sub.clone());
            let in_id = s.id("in");
            let lines = vec![
                json!({"price": new_price, "amount": due, "proration": true, "period": {"start": now, "end": end}}),
            ];
            charge_invoice(s, &in_id, &customer, Some(id), due, lines, new_price["currency"].clone(), declines)?;
            if declines {
                previous.insert("status".into(), sub["status"].clone());
                sub["status"] = json!("past_due");
            }
        }
    }
    if let Some(b) = boolean(&p["cancel_at_period_end"]) {
        previous.insert("cancel_at_period_end".into(), sub["cancel_at_period_end"].clone());
        sub["cancel_at_period_end"] = json!(b);
    }
    if p.get("metadata").is_some() {
        previous.insert("metadata".into(), sub["metadata"].clone());
        sub["metadata"] = merge_metadata(&sub["metadata"], &p["metadata"]);
    }
    if p["trial_end"] == "now" && sub["status"] == "trialing" {
        previous.insert("status".into(), sub["status"].clone());
        sub["status"] = json!("active");
        sub["trial_end"] = json!(s.now());
    }
    let coupon_param = if p.get("discounts").is_some() {
        Some(p["discounts"][0]["coupon"].as_str().unwrap_or(""))
    } else {
        p["coupon"].as_str()
    };
    if let Some(code) = coupon_param {
        previous.insert("discount".into(), sub["discount"].clone());
        if !sub["discount"].is_null() {
            let d = sub["discount"].clone();
            s.event("customer.discount.deleted", &d, None);
            sub["discount"] = Value::Null;
        }
        if !code.is_empty() {
            let coupon = s.get("", "coupon", code)?;
            sub["discount"] = discount_of(s, &coupon, &customer, id);
            sub["_months_left"] = json!(coupon["duration_in_months"].as_i64().unwrap_or(1));
            s.event("customer.discount.created", &sub["discount"].clone(), None);
        }
    }
    s.objects.insert(id.to_string(), sub.clone());
    s.event("customer.subscription.updated", &sub, Some(Value::Object(previous)));
    Ok(sub)
}

/// `POST /v1/subscription_schedules` with `from_subscription`: one phase, the current one.
pub(crate) fn create_schedule(s: &mut Store, p: &Value) -> ApiResult {
    let sub_id = p["from_subscription"].as_str().unwrap_or_default().to_string();
    let mut sub = s.get("sub_", "subscription", &sub_id)?;
    if !sub["schedule"].is_null() {
        return Err(ApiError::invalid("from_subscription", format!("Subscription {sub_id} already has a schedule.")));
    }
    let id = s.id("sub_sched");
    let phase = json!({"start_date": sub["current_period_start"], "end_date": sub["current_period_end"],
                       "items": [{"price": sub["items"]["data"][0]["price"]["id"], "quantity": 1}]});
    let sched = json!({"id": id, "object": "subscription_schedule", "subscription": sub_id, "status": "active",
                       "end_behavior": "release", "phases": [phase], "created": s.now(), "livemode": false});
    s.objects.insert(id.clone(), sched.clone());
    sub["schedule"] = json!(id);
    s.objects.insert(sub_id, sub.clone());
    s.event("customer.subscription.updated", &sub, Some(json!({"schedule": null})));
    Ok(sched)
}

/// `POST /v1/subscription_schedules/{id}`: new phases; the first must start where the
/// current one did; a phase without `end_date` runs `iterations` periods.
pub(crate) fn update_schedule(s: &mut Store, id: &str, p: &Value) -> ApiResult {
    let mut sched = s.get("sub_sched_", "subscription schedule", id)?;
    if sched["status"] != "active" {
        return Err(ApiError::invalid("id", format!("Schedule {id} is {}.", sched["status"])));
    }
    let phases = p["phases"].as_array().cloned().unwrap_or_default();
    if phases.is_empty() {
        return Err(ApiError::invalid("phases", "Missing required param: phases."));
    }
    let mut start = int(&phases[0]["start_date"]).or_else(|| sched["phases"][0]["start_date"].as_i64()).unwrap_or(0);
    let mut out = Vec::new();
    for (i, ph) in phases.iter().enumerate() {
        let price = ph["items"][0]["price"].as_str().unwrap_or_default().to_string();
        s.get("price_", "price", &price).map_err(|_| {
            ApiError::invalid(&format!("phases[{i}][items][0][price]"), format!("No such price: '{price}'"))
        })?;
        let end = int(&ph["end_date"]).or_else(|| int(&ph["iterations"]).map(|n| start + n * PERIOD));
        let Some(end) = end else {
            return Err(ApiError::invalid(
                &format!("phases[{i}][end_date]"),
                "The last phase needs end_date or iterations.",
            ));
        };
        out.push(json!({"start_date": start, "end_date": end, "items": [{"price": price, "quantity": 1}]}));
        start = end;
    }
    sched["phases"] = json!(out);
    if let Some(b) = p["end_behavior"].as_str() {
        sched["end_behavior"] = json!(b);
    }
    s.objects.insert(id.to_string(), sched.clone());
    Ok(sched)
}

/// `POST /v1/subscription_schedules/{id}/release`: the subscription goes on without it.
pub(crate) fn release_schedule(s: &mut Store, id: &str) -> ApiResult {
    let mut sched = s.get("sub_sched_", "subscription schedule", id)?;
    let sub_id = sched["subscription"].as_str().unwrap_or_default().to_string();
    sched["status"] = json!("released");
    sched["released_subscription"] = json!(sub_id);
    sched["subscription"] = Value::Null;
    s.objects.insert(id.to_string(), sched.clone());
    if let Ok(mut sub) = s.get("sub_", "subscription", &sub_id) {
        sub["schedule"] = Value::Null;
        s.objects.insert(sub_id, sub.clone());
        s.event("customer.subscription.updated", &sub, Some(json!({"schedule": id})));
    }
    Ok(sched)
}

/// `POST /v1/invoices` for a customer's pending invoice items, charged at once
/// (auto_advance with a card on file); Stripe refuses when nothing is pending.
pub(crate) fn invoice_pending_items(s: &mut Store, p: &Value) -> ApiResult {
    let customer = p["customer"].as_str().unwrap_or_default().to_string();
    s.get("cus_", "customer", &customer)?;
    let items: Vec<Value> = s
        .objects
        .values()
        .filter(|v| v["object"] == "invoiceitem" && v["customer"] == customer.as_str() && v["invoice"].is_null())
        .cloned()
        .collect();
    if items.is_empty() {
        return Err(ApiError::invalid("customer", "Nothing to invoice for customer"));
    }
    let in_id = s.id("in");
    let mut total = 0;
    let mut lines = Vec::new();
    let currency = items[0]["currency"].clone();
    for ii in &items {
        let id = ii["id"].as_str().unwrap_or_default().to_string();
        total += ii["amount"].as_i64().unwrap_or(0);
        lines.push(json!({"type": "invoiceitem", "amount": ii["amount"], "description": ii["description"],
                          "invoice_item": id, "metadata": ii["metadata"]}));
        if let Some(v) = s.objects.get_mut(&id) {
            v["invoice"] = json!(in_id);
        }
    }
    let declines = s.get("cus_", "customer", &customer)?["_declines"] == true;
    charge_invoice(s, &in_id, &customer, None, total, lines, currency, declines)
}

/// A customer's action in a Customer Portal session: `switch` (`subscription`, `price`)
/// or `cancel` (`subscription`, `at_period_end`), refused as Stripe's portal would not
/// offer it when the session's configuration does not allow it. A session opened without
/// a configuration has the account's default, which here (as a Dashboard may) allows both,
/// at once and with prorations.
fn portal_action(s: &mut Store, session: &str, action: &str, p: &Value) -> ApiResult {
    let session = s.get("bps_", "billing_portal session", session)?;
    let features = match session["configuration"].as_str() {
        Some(c) => s.get("bpc_", "billing_portal.configuration", c)?["features"].clone(),
        None => json!({"subscription_update": {"enabled": true, "proration_behavior": "create_prorations"},
                       "subscription_cancel": {"enabled": true, "mode": "immediately"}}),
    };
    let sub_id = p["subscription"].as_str().unwrap_or_default();
    let sub = s.get("sub_", "subscription", sub_id)?;
    if sub["customer"] != session["customer"] {
        return Err(ApiError::missing("subscription", sub_id));
    }
    let not_offered = |what: &str| ApiError::invalid(what, format!("This portal session does not offer {what}."));
    match action {
        "switch" => {
            if features["subscription_update"]["enabled"] != true {
                return Err(not_offered("subscription_update"));
            }
            let item = sub["items"]["data"][0]["id"].clone();
            let proration =
                features["subscription_update"]["proration_behavior"].as_str().unwrap_or("create_prorations");
            update_subscription(
                s,
                sub_id,
                &json!({"items": [{"id": item, "price": p["price"]}], "proration_behavior": proration}),
            )
        }
        "cancel" => {
            let cancel = &features["subscription_cancel"];
            if cancel["enabled"] != true {
                return Err(not_offered("subscription_cancel"));
            }
            if boolean(&p["at_period_end"]).unwrap_or(true) {
                update_subscription(s, sub_id, &json!({"cancel_at_period_end": "true"}))
            } else if cancel["mode"] == "immediately" {
                cancel_now(s, sub_id)
            } else {
                Err(not_offered("subscription_cancel.immediately"))
            }
        }
        _ => Err(ApiError::invalid("action", format!("unknown portal action `{action}`: switch or cancel"))),
    }
}
