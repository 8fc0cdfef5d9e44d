//! The v1 API surface: products, prices, coupons, customers, checkout and portal
//! sessions, portal configurations, subscriptions, invoice items and the events list.

use axum::http::Method;
use serde_json::{json, Value};

use super::{boolean, flows, int, ApiError, ApiResult, Shared, Store};

pub(crate) fn api(shared: &Shared, method: &Method, seg: &[&str], p: &Value) -> ApiResult {
    let mut s = shared.lock();
    let s = &mut *s;
    route(s, method, seg, p).map(|v| s.with_current_prices(&v))
}

fn route(s: &mut Store, method: &Method, seg: &[&str], p: &Value) -> ApiResult {
    match (method.as_str(), seg) {
        ("POST", ["v1", "products"]) => create_product(s, p),
        ("GET", ["v1", "products", id]) => s.get("", "product", id).and_then(|v| kind(v, "product", id)),
        ("POST", ["v1", "products", id]) => update(s, "product", id, p, &["name", "active", "metadata"]),
        ("POST", ["v1", "prices"]) => create_price(s, p),
        ("GET", ["v1", "prices"]) => list_prices(s, p),
        ("GET", ["v1", "prices", id]) => s.get("price_", "price", id),
        ("POST", ["v1", "prices", id]) => update(s, "price", id, p, &["active", "metadata"]),
        ("POST", ["v1", "coupons"]) => create_coupon(s, p),
        ("GET", ["v1", "coupons", id]) => s.get("", "coupon", id).and_then(|v| kind(v, "coupon", id)),
        ("POST", ["v1", "coupons", id]) => update(s, "coupon", id, p, &["name", "metadata"]),
        ("POST", ["v1", "customers"]) => {
            let id = s.id("cus");
            let c = json!({"id": id, "object": "customer", "email": p["email"], "name": p["name"],
                           "metadata": p.get("metadata").cloned().unwrap_or(json!({})), "created": s.now(), "livemode": false});
            s.objects.insert(id, c.clone());
            s.event("customer.created", &c, None);
            Ok(c)
        }
        ("GET", ["v1", "customers", "search"]) => search_customers(s, p),
        ("GET", ["v1", "customers", id]) => s.get("cus_", "customer", id),
        ("POST", ["v1", "customers", id]) => update_customer(s, id, p),
        ("POST", ["v1", "checkout", "sessions"]) => create_checkout(s, p),
        ("GET", ["v1", "checkout", "sessions", id]) => s.get("cs_", "checkout session", id),
        ("POST", ["v1", "checkout", "sessions", id, "expire"]) => expire_checkout(s, id),
        ("POST", ["v1", "billing_portal", "sessions"]) => {
            let customer = p["customer"].as_str().unwrap_or_default();
            s.get("cus_", "customer", customer)?;
            // Without one, Stripe uses the account's default configuration (the Dashboard's).
            let configuration = match p["configuration"].as_str() {
                Some(c) => {
                    let config = s.get("bpc_", "billing_portal.configuration", c)?;
                    if config["active"] != true {
                        return Err(ApiError::invalid(
                            "configuration",
                            format!("The configuration {c} is not active."),
                        ));
                    }
                    Value::String(c.to_string())
                }
                None => Value::Null,
            };
            let id = s.id("bps");
            let session = json!({"id": id, "object": "billing_portal.session", "customer": customer, "return_url": p["return_url"],
                      "configuration": configuration,
                      "url": format!("https://billing.stripe.test/p/session/{id}"), "created": s.now(), "livemode": false});
            // Kept for what the customer then does in it (`/_sim/portal/{session}/…`).
            s.objects.insert(id, session.clone());
            Ok(session)
        }
        ("POST", ["v1", "billing_portal", "configurations"]) => create_portal_configuration(s, p),
        ("GET", ["v1", "billing_portal", "configurations"]) => {
            let active = boolean(&p["active"]);
            let limit = int(&p["limit"]).unwrap_or(10).clamp(1, 100) as usize;
            let mut data: Vec<Value> = s
                .objects
                .values()
                .filter(|v| v["object"] == "billing_portal.configuration")
                .filter(|v| active.is_none_or(|a| v["active"].as_bool() == Some(a)))
                .cloned()
                .collect();
            data.sort_by_key(|v| std::cmp::Reverse(v["id"].as_str().unwrap_or_default().to_string()));
            Ok(list(data, "/v1/billing_portal/configurations", limit))
        }
        ("GET", ["v1", "billing_portal", "configurations", id]) => s.get("bpc_", "billing_portal.configuration", id),
        ("POST", ["v1", "billing_portal", "configurations", id]) => update_portal_configuration(s, id, p),
        ("GET", ["v1", "subscriptions", id]) => s.get("sub_", "subscription", id),
        ("POST", ["v1", "subscriptions", id]) => flows::update_subscription(s, id, p),
        ("DELETE", ["v1", "subscriptions", id]) => flows::cancel_now(s, id),
        ("POST", ["v1", "invoiceitems"]) => super::items::create(s, p),
        ("GET", ["v1", "invoiceitems"]) => super::items::list(s, p),
        ("GET", ["v1", "invoiceitems", id]) => s.get("ii_", "invoice item", id),
        ("POST", ["v1", "invoices"]) => flows::invoice_pending_items(s, p),
        ("POST", ["v1", "subscription_schedules"]) => flows::create_schedule(s, p),
        ("GET", ["v1", "subscription_schedules", id]) => s.get("sub_sched_", "subscription schedule", id),
        ("POST", ["v1", "subscription_schedules", id]) => flows::update_schedule(s, id, p),
        ("POST", ["v1", "subscription_schedules", id, "release"]) => flows::release_schedule(s, id),
        ("GET", ["v1", "invoices", id]) => s.get("in_", "invoice", id),
        ("GET", ["v1", "invoices", id, "lines"]) => super::invoices::invoice_lines(s, id, p),
        ("POST", ["v1", "invoices", id, "pay"]) => super::invoices::pay(s, id),
        ("GET", ["v1", "charges", id]) => {
            let mut ch = s.get("ch_", "charge", id)?;
            // `expand[]=balance_transaction` puts the object in place of its id.
            let expand = p["expand"].as_array().is_some_and(|e| e.iter().any(|x| x == "balance_transaction"));
            if expand {
                if let Some(txn) = ch["balance_transaction"].as_str().map(str::to_string) {
                    ch["balance_transaction"] = s.get("txn_", "balance_transaction", &txn)?;
                }
            }
            Ok(ch)
        }
        ("GET", ["v1", "balance_transactions", id]) => s.get("txn_", "balance_transaction", id),
        ("GET", ["v1", "disputes", id]) => s.get("du_", "dispute", id),
        ("POST", ["v1", "disputes", id, "close"]) => flows::close_dispute(s, id, "lost"),
        ("GET", ["v1", "events"]) => list_events(s, p),
        ("GET", ["v1", "events", id]) => s.get("evt_", "event", id).or_else(|_| {
            s.events.iter().find(|e| e["id"] == *id).cloned().ok_or_else(|| ApiError::missing("event", id))
        }),
        _ => Err(ApiError {
            status: axum::http::StatusCode::NOT_FOUND,
            kind: "invalid_request_error",
            code: "resource_missing",
            message: format!("Unrecognized request URL ({method} /{}).", seg.join("/")),
            param: None,
        }),
    }
}

fn kind(v: Value, object: &str, id: &str) -> ApiResult {
    if v["object"] == object {
        Ok(v)
    } else {
        Err(ApiError::missing(object, id))
    }
}

fn update(s: &mut Store, object: &str, id: &str, p: &Value, allowed: &[&str]) -> ApiResult {
    let mut v =
        s.objects.get(id).filter(|v| v["object"] == object).cloned().ok_or_else(|| ApiError::missing(object, id))?;
    if let Some(map) = p.as_object() {
        for (k, val) in map {
            if !allowed.contains(&k.as_str()) {
                return Err(ApiError::invalid(k, format!("Received unknown parameter: {k}")));
            }
            v[k] = match (k.as_str(), boolean(val)) {
                ("metadata", _) => super::merge_metadata(&v["metadata"], val),
                (_, Some(b)) if k == "active" => Value::Bool(b),
                _ => val.clone(),
            };
        }
    }
    s.objects.insert(id.to_string(), v.clone());
    Ok(v)
}

fn create_product(s: &mut Store, p: &Value) -> ApiResult {
    let name = p["name"]
        .as_str()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::invalid("name", "Missing required param: name."))?;
    let id = match p["id"].as_str() {
        Some(id) if s.objects.contains_key(id) => {
            return Err(ApiError::invalid("id", format!("Product already exists: {id}")));
        }
        Some(id) => id.to_string(),
        None => s.id("prod"),
    };
    let v = json!({"id": id, "object": "product", "active": true, "name": name,
                   "metadata": p.get("metadata").cloned().unwrap_or(json!({})), "created": s.now(), "livemode": false});
    s.objects.insert(id, v.clone());
    Ok(v)
}

fn create_price(s: &mut Store, p: &Value) -> ApiResult {
    let product = p["product"].as_str().unwrap_or_default().to_string();
    s.get("", "product", &product)?;
    let amount = int(&p["unit_amount"])
        .filter(|a| *a >= 0)
        .ok_or_else(|| ApiError::invalid("unit_amount", "Invalid integer"))?;
    let currency = p["currency"]
        .as_str()
        .filter(|c| c.len() == 3)
        .ok_or_else(|| ApiError::invalid("currency", "Invalid currency"))?;
    let lookup = p["lookup_key"].as_str().map(String::from);
    if let Some(key) = &lookup {
        let holder = s
            .objects
            .values()
            .find(|v| v["object"] == "price" && v["lookup_key"].as_str() == Some(key))
            .map(|v| v["id"].clone());
        if let Some(old) = holder.and_then(|h| h.as_str().map(String::from)) {
            if boolean(&p["transfer_lookup_key"]) != Some(true) {
                return Err(ApiError::invalid(
                    "lookup_key",
                    format!("A price (`{old}`) already uses that lookup key."),
                ));
            }
            if let Some(o) = s.objects.get_mut(&old) {
                o["lookup_key"] = Value::Null;
            }
        }
    }
    let id = s.id("price");
    let interval = p["recurring"]["interval"].as_str();
    let v = json!({"id": id, "object": "price", "active": true, "currency": currency, "unit_amount": amount,
                   "product": product, "lookup_key": lookup, "nickname": p["nickname"].as_str(), "type": if interval.is_some() { "recurring" } else { "one_time" },
                   "recurring": interval.map(|i| json!({"interval": i, "interval_count": 1})),
                   "metadata": p.get("metadata").cloned().unwrap_or(json!({})), "created": s.now(), "livemode": false});
    s.objects.insert(id, v.clone());
    Ok(v)
}

fn list(data: Vec<Value>, url: &str, limit: usize) -> Value {
    let has_more = data.len() > limit;
    json!({"object": "list", "data": data.into_iter().take(limit).collect::<Vec<_>>(), "has_more": has_more, "url": url})
}

/// The portal's features as Stripe holds them: form values turned back into booleans.
fn portal_features(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(m.iter().map(|(k, v)| (k.clone(), portal_features(v))).collect()),
        Value::Array(a) => Value::Array(a.iter().map(portal_features).collect()),
        other => boolean(other).map_or_else(|| other.clone(), Value::Bool),
    }
}

/// Stripe's update of a nested hash: the keys sent replace theirs, the others stay.
fn merge(old: &Value, new: &Value) -> Value {
    match (old, new) {
        (Value::Object(o), Value::Object(n)) => {
            let mut m = o.clone();
            for (k, v) in n {
                let merged = merge(o.get(k).unwrap_or(&Value::Null), v);
                m.insert(k.clone(), merged);
            }
            Value::Object(m)
        }
        (_, n) => n.clone(),
    }
}

fn create_portal_configuration(s: &mut Store, p: &Value) -> ApiResult {
    if !p["features"].is_object() {
        return Err(ApiError::invalid("features", "Missing required param: features."));
    }
    let id = s.id("bpc");
    let v = json!({"id": id, "object": "billing_portal.configuration", "active": true, "is_default": false,
                   "business_profile": p.get("business_profile").cloned().unwrap_or(json!({})),
                   "features": portal_features(&p["features"]),
                   "metadata": p.get("metadata").cloned().unwrap_or(json!({})), "created": s.now(), "livemode": false});
    s.objects.insert(id, v.clone());
    Ok(v)
}

fn update_portal_configuration(s: &mut Store, id: &str, p: &Value) -> ApiResult {
    let mut v = s.get("bpc_", "billing_portal.configuration", id)?;
    if let Some(map) = p.as_object() {
        for (k, val) in map {
            v[k] = match k.as_str() {
                "features" | "business_profile" => merge(&v[k], &portal_features(val)),
                "metadata" => super::merge_metadata(&v["metadata"], val),
                "active" => {
                    Value::Bool(boolean(val).ok_or_else(|| ApiError::invalid("active", "Invalid boolean: active"))?)
                }
                _ => return Err(ApiError::invalid(k, format!("Received unknown parameter: {k}"))),
            };
        }
    }
    s.objects.insert(id.to_string(), v.clone());
    Ok(v)
}

fn list_prices(s: &Store, p: &Value) -> ApiResult {
    let keys: Vec<&str> =
        p["lookup_keys"].as_array().map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
    let active = boolean(&p["active"]);
    let product = p["product"].as_str();
    let limit = int(&p["limit"]).unwrap_or(10).clamp(1, 100) as usize;
    let mut data: Vec<Value> = s
        .objects
        .values()
        .filter(|v| v["object"] == "price")
        .filter(|v| product.is_none_or(|pr| v["product"] == pr))
        .filter(|v| keys.is_empty() || v["lookup_key"].as_str().is_some_and(|k| keys.contains(&k)))
        .filter(|v| active.is_none_or(|a| v["active"].as_bool() == Some(a)))
        .cloned()
        .collect();
    data.sort_by_key(|v| std::cmp::Reverse(v["id"].as_str().unwrap_or_default().to_string()));
    Ok(list(data, "/v1/prices", limit))
}

fn create_coupon(s: &mut Store, p: &Value) -> ApiResult {
    let pct = int(&p["percent_off"])
        .filter(|n| (1..=100).contains(n))
        .ok_or_else(|| ApiError::invalid("percent_off", "Invalid percent_off"))?;
    let duration = p["duration"].as_str().unwrap_or("once");
    let months = int(&p["duration_in_months"]);
    if duration == "repeating" && months.is_none() {
        return Err(ApiError::invalid("duration_in_months", "duration_in_months is required for repeating coupons"));
    }
    let id = match p["id"].as_str() {
        Some(id) if s.objects.contains_key(id) => return Err(ApiError::invalid("id", "Coupon already exists.")),
        Some(id) => id.to_string(),
        None => s.id("co"),
    };
    let v = json!({"id": id, "object": "coupon", "percent_off": pct as f64, "duration": duration,
                   "duration_in_months": months, "name": p["name"], "valid": true,
                   "metadata": p.get("metadata").cloned().unwrap_or(json!({})), "created": s.now(), "livemode": false});
    s.objects.insert(id, v.clone());
    Ok(v)
}

fn create_checkout(s: &mut Store, p: &Value) -> ApiResult {
    if p["mode"] != "subscription" {
        return Err(ApiError::invalid("mode", "This fake supports mode=subscription."));
    }
    let price = p["line_items"][0]["price"].as_str().unwrap_or_default().to_string();
    let price_obj = s.get("price_", "price", &price)?;
    if price_obj["active"] == false {
        return Err(ApiError::invalid("line_items[0][price]", format!("The price `{price}` is not active.")));
    }
    for k in ["success_url"] {
        if p[k].as_str().is_none() {
            return Err(ApiError::invalid(k, format!("Missing required param: {k}.")));
        }
    }
    if let Some(c) = p["customer"].as_str() {
        s.get("cus_", "customer", c)?;
    }
    let coupon = p["discounts"][0]["coupon"].as_str().map(String::from);
    if let Some(c) = &coupon {
        s.get("", "coupon", c)?;
    }
    let id = s.id("cs_test");
    let v = json!({"id": id, "object": "checkout.session", "mode": "subscription", "status": "open",
                   "payment_status": "unpaid", "customer": p["customer"], "customer_email": p["customer_email"],
                   "client_reference_id": p["client_reference_id"], "subscription": null,
                   "metadata": p.get("metadata").cloned().unwrap_or(json!({})),
                   "success_url": p["success_url"], "cancel_url": p["cancel_url"],
                   "url": format!("https://checkout.stripe.test/c/pay/{id}"), "created": s.now(), "livemode": false,
                   "_price": price, "_coupon": coupon,
                   "_trial_days": int(&p["subscription_data"]["trial_period_days"]),
                   "_sub_metadata": p["subscription_data"]["metadata"].clone()});
    s.objects.insert(id, v.clone());
    Ok(v)
}

/// `POST /v1/checkout/sessions/{id}/expire`: only an open session can be expired; it can
/// then never be completed.
fn expire_checkout(s: &mut Store, id: &str) -> ApiResult {
    let mut cs = s.get("cs_", "checkout session", id)?;
    if cs["status"] != "open" {
        return Err(ApiError::invalid(
            "session",
            format!("Only Checkout Sessions with a status in [\"open\"] can be expired. This one is {}.", cs["status"]),
        ));
    }
    cs["status"] = json!("expired");
    s.objects.insert(id.to_string(), cs.clone());
    s.event("checkout.session.expired", &cs, None);
    Ok(cs)
}

/// Newest first, as Stripe lists them; `starting_after` pages to older events.
fn list_events(s: &Store, p: &Value) -> ApiResult {
    let limit = int(&p["limit"]).unwrap_or(10).clamp(1, 100) as usize;
    let gte = int(&p["created"]["gte"]).unwrap_or(i64::MIN);
    let types: Vec<&str> =
        p["types"].as_array().map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
    let one_type = p["type"].as_str();
    let mut newest_first = s.events.iter().rev();
    let mut data = Vec::new();
    if let Some(after) = p["starting_after"].as_str() {
        if !s.events.iter().any(|e| e["id"] == after) {
            return Err(ApiError::missing("event", after));
        }
        for e in newest_first.by_ref() {
            if e["id"] == after {
                break;
            }
        }
    }
    for e in newest_first {
        let t = e["type"].as_str().unwrap_or_default();
        if e["created"].as_i64().unwrap_or(0) >= gte
            && (types.is_empty() || types.contains(&t))
            && one_type.is_none_or(|o| o == t)
        {
            data.push(e.clone());
            if data.len() > limit {
                break;
            }
        }
    }
    Ok(list(data, "/v1/events", limit))
}

/// `GET /v1/customers/search?query=…`: clauses `field:'value'` joined by ` AND `, on
/// `email`, `name` and `metadata['key']`, as Stripe's search language writes them.
fn search_customers(s: &Store, p: &Value) -> ApiResult {
    let query = p["query"].as_str().unwrap_or_default();
    let mut clauses = Vec::new();
    for clause in query.split(" AND ") {
        let parsed = clause.split_once(':').and_then(|(field, value)| {
            let value = value.strip_prefix('\'')?.strip_suffix('\'')?.replace("\\'", "'");
            let field = match field {
                "email" | "name" => vec![field.to_string()],
                _ => vec!["metadata".to_string(), field.strip_prefix("metadata['")?.strip_suffix("']")?.to_string()],
            };
            Some((field, value))
        });
        clauses.push(parsed.ok_or_else(|| ApiError::invalid("query", format!("Invalid search query: {clause}")))?);
    }
    let limit = int(&p["limit"]).unwrap_or(10).clamp(1, 100) as usize;
    let mut data: Vec<Value> = s
        .objects
        .values()
        .filter(|v| v["object"] == "customer")
        .filter(|v| {
            clauses.iter().all(|(path, want)| {
                let got = path.iter().fold(*v, |node, k| &node[k.as_str()]);
                got.as_str() == Some(want.as_str())
            })
        })
        .cloned()
        .collect();
    data.sort_by_key(|v| std::cmp::Reverse(v["id"].as_str().unwrap_or_default().to_string()));
    let has_more = data.len() > limit;
    data.truncate(limit);
    Ok(json!({"object": "search_result", "data": data, "has_more": has_more, "next_page": null,
              "url": "/v1/customers/search"}))
}

/// `POST /v1/customers/:id`: name, email, metadata and the default payment method
/// (`invoice_settings[default_payment_method]`; an empty string clears it), with a
/// `customer.updated` event naming what changed.
fn update_customer(s: &mut Store, id: &str, p: &Value) -> ApiResult {
    let mut c = s.get("cus_", "customer", id)?;
    let mut previous = serde_json::Map::new();
    for field in ["name", "email", "metadata"] {
        if let Some(v) = p.get(field) {
            previous.insert(field.into(), c[field].clone());
            c[field] = v.clone();
        }
    }
    if let Some(pm) = p.get("invoice_settings").and_then(|i| i.get("default_payment_method")) {
        let pm = match pm.as_str() {
            Some("") | None => Value::Null,
            Some(other) => json!(other),
        };
        previous.insert("invoice_settings".into(), c["invoice_settings"].clone());
        c["invoice_settings"] = json!({"default_payment_method": pm});
    }
    s.objects.insert(id.to_string(), c.clone());
    s.event("customer.updated", &c, Some(Value::Object(previous)));
    Ok(c)
}
