//! Invoices as Stripe shows them: only the first lines embedded, the rest paged; unpaid
//! invoices given up on (voided, or written off as uncollectible), or paid later.

use serde_json::{json, Value};

use super::{int, ApiError, ApiResult, Store};

/// How many lines Stripe embeds in an invoice; the rest are paged from its `url`.
pub(crate) const EMBEDDED_LINES: usize = 10;

/// An invoice's `lines` as Stripe embeds them: the first page, `has_more` and the URL
/// of the full list.
pub(crate) fn embedded_lines(in_id: &str, lines: &[Value]) -> Value {
    json!({"object": "list", "data": lines.iter().take(EMBEDDED_LINES).collect::<Vec<_>>(),
           "has_more": lines.len() > EMBEDDED_LINES, "total_count": lines.len(),
           "url": format!("/v1/invoices/{in_id}/lines")})
}

/// `GET /v1/invoices/{id}/lines?limit=&starting_after=`: one page of the invoice's lines.
pub(crate) fn invoice_lines(s: &Store, id: &str, p: &Value) -> ApiResult {
    let inv = s.get("in_", "invoice", id)?;
    let all = inv["_lines"].as_array().cloned().unwrap_or_default();
    let limit = int(&p["limit"]).unwrap_or(10).clamp(1, 100) as usize;
    let start = match p["starting_after"].as_str() {
        Some(after) => all
            .iter()
            .position(|l| l["id"] == after)
            .map(|i| i + 1)
            .ok_or_else(|| ApiError::invalid("starting_after", format!("No such line item: '{after}'")))?,
        None => 0,
    };
    let rest: Vec<Value> = all.into_iter().skip(start).collect();
    let has_more = rest.len() > limit;
    Ok(json!({"object": "list", "data": rest.into_iter().take(limit).collect::<Vec<_>>(), "has_more": has_more,
              "url": format!("/v1/invoices/{id}/lines")}))
}

/// An unpaid invoice given up on: voided, or marked uncollectible (as the operator or
/// Stripe's dunning does); a paid one cannot be.
pub(crate) fn close_unpaid(s: &mut Store, id: &str, status: &str, event: &str) -> ApiResult {
    let mut inv = s.get("in_", "invoice", id)?;
    if !(inv["status"] == "open" || (inv["status"] == "uncollectible" && status == "void")) {
        return Err(ApiError::invalid(
            "id",
            format!("You can only {status} an open invoice; {id} is {}.", inv["status"]),
        ));
    }
    inv["status"] = json!(status);
    inv["next_payment_attempt"] = Value::Null;
    s.objects.insert(id.to_string(), inv.clone());
    s.event(event, &inv, None);
    Ok(inv)
}

/// `POST /v1/invoices/{id}/pay`: charges an open (or uncollectible) invoice to the
/// customer's card now, as Stripe's retries and the hosted invoice page do. A card that
/// declines answers 402 `card_declined` and the invoice stays as it was, one attempt more
/// (`invoice.payment_failed`); else the invoice is paid (`invoice.paid`).
pub(crate) fn pay(s: &mut Store, id: &str) -> ApiResult {
    let mut inv = s.get("in_", "invoice", id)?;
    if !(inv["status"] == "open" || inv["status"] == "uncollectible") {
        return Err(ApiError::invalid("id", format!("Invoice {id} is {} and cannot be paid.", inv["status"])));
    }
    let customer = inv["customer"].as_str().unwrap_or_default().to_string();
    let declines = s.get("cus_", "customer", &customer)?["_declines"] == true;
    inv["attempt_count"] = json!(inv["attempt_count"].as_i64().unwrap_or(0) + 1);
    if declines {
        s.objects.insert(id.to_string(), inv.clone());
        s.event("invoice.payment_failed", &inv, None);
        return Err(ApiError::card_declined());
    }
    let now = s.now();
    let ch_id = s.id("ch");
    let amount = inv["amount_due"].as_i64().unwrap_or(0);
    let ch = json!({"id": ch_id, "object": "charge", "amount": amount, "amount_refunded": 0, "refunded": false,
                    "customer": customer, "invoice": id, "currency": inv["currency"], "paid": true, "created": now,
                    "livemode": false});
    s.objects.insert(ch_id.clone(), ch);
    inv["status"] = json!("paid");
    inv["amount_paid"] = json!(amount);
    inv["charge"] = json!(ch_id);
    inv["next_payment_attempt"] = Value::Null;
    inv["status_transitions"]["paid_at"] = json!(now);
    s.objects.insert(id.to_string(), inv.clone());
    s.event("invoice.paid", &inv, None);
    Ok(inv)
}
