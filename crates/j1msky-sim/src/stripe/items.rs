//! Invoice items: made one by one (`POST /v1/invoiceitems`) and listed as Stripe lists
//! them (`GET /v1/invoiceitems`): newest first, filtered by customer, invoice, pending
//! and a `created` range, paged with `limit`, `starting_after` / `ending_before` and
//! `has_more`. j1msky reads the list to find an item it made before, by its metadata,
//! once Stripe has forgotten the request's idempotency key.

use serde_json::{json, Value};

use super::{boolean, int, ApiError, ApiResult, Store};

/// `POST /v1/invoiceitems`: a pending item on the customer's next invoice.
pub(crate) fn create(s: &mut Store, p: &Value) -> ApiResult {
    let customer = p["customer"].as_str().unwrap_or_default().to_string();
    s.get("cus_", "customer", &customer)?;
    let amount = int(&p["amount"]).ok_or_else(|| ApiError::invalid("amount", "Missing required param: amount."))?;
    let id = s.id("ii");
    let v = json!({"id": id, "object": "invoiceitem", "customer": customer, "amount": amount,
                   "currency": p["currency"], "description": p["description"], "invoice": null,
                   "metadata": p.get("metadata").cloned().unwrap_or(json!({})), "date": s.now(), "livemode": false});
    s.objects.insert(id, v.clone());
    Ok(v)
}

/// Whether `t` is inside Stripe's `created` filter: an exact second, or any of
/// `gt`, `gte`, `lt`, `lte`.
fn in_range(created: &Value, t: i64) -> Result<bool, ApiError> {
    if created.is_null() {
        return Ok(true);
    }
    if let Some(exact) = int(created) {
        return Ok(t == exact);
    }
    let Some(bounds) = created.as_object() else {
        return Err(ApiError::invalid("created", "Invalid timestamp range"));
    };
    let mut ok = true;
    for (op, v) in bounds {
        let b = int(v).ok_or_else(|| ApiError::invalid(&format!("created[{op}]"), "Invalid integer"))?;
        ok &= match op.as_str() {
            "gt" => t > b,
            "gte" => t >= b,
            "lt" => t < b,
            "lte" => t <= b,
            _ => return Err(ApiError::invalid(&format!("created[{op}]"), format!("Received unknown parameter: {op}"))),
        };
    }
    Ok(ok)
}

/// `GET /v1/invoiceitems`: one page, newest first.
pub(crate) fn list(s: &Store, p: &Value) -> ApiResult {
    let limit = match &p["limit"] {
        Value::Null => 10,
        v => int(v)
            .filter(|n| (1..=100).contains(n))
            .ok_or_else(|| ApiError::invalid("limit", "This value must be between 1 and 100."))?,
    } as usize;
    let customer = p["customer"].as_str();
    let invoice = p["invoice"].as_str();
    let pending = boolean(&p["pending"]);
    let mut all: Vec<&Value> = Vec::new();
    for v in s.objects.values().filter(|v| v["object"] == "invoiceitem") {
        if customer.is_some_and(|c| v["customer"] != c)
            || invoice.is_some_and(|i| v["invoice"] != i)
            || pending.is_some_and(|want| v["invoice"].is_null() != want)
            || !in_range(&p["created"], v["date"].as_i64().unwrap_or(0))?
        {
            continue;
        }
        all.push(v);
    }
    // Newest first; ids carry the creation sequence, so they order items made in one second.
    all.sort_by(|a, b| {
        let key = |v: &Value| (v["date"].as_i64().unwrap_or(0), v["id"].as_str().unwrap_or_default().to_string());
        key(b).cmp(&key(a))
    });
    let position = |cursor: &str, param: &str| {
        all.iter().position(|v| v["id"] == cursor).ok_or_else(|| {
            if s.objects.get(cursor).is_some_and(|v| v["object"] == "invoiceitem") {
                // An item outside the filters: Stripe answers it as not in this list.
                ApiError::invalid(param, format!("The invoice item `{cursor}` is not in this list."))
            } else {
                ApiError::missing("invoiceitem", cursor)
            }
        })
    };
    let (page, has_more) = match (p["starting_after"].as_str(), p["ending_before"].as_str()) {
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid(
                "starting_after",
                "You may only specify one of these parameters: ending_before, starting_after.",
            ));
        }
        (Some(after), None) => {
            let rest = &all[position(after, "starting_after")? + 1..];
            (rest.iter().take(limit).collect::<Vec<_>>(), rest.len() > limit)
        }
        // The `limit` items just before the cursor (newer), still newest first.
        (None, Some(before)) => {
            let newer = &all[..position(before, "ending_before")?];
            let from = newer.len().saturating_sub(limit);
            (newer[from..].iter().collect(), from > 0)
        }
        (None, None) => (all.iter().take(limit).collect(), all.len() > limit),
    };
    Ok(json!({"object": "list", "data": page, "has_more": has_more, "url": "/v1/invoiceitems"}))
}
