//! Booking an invoice from Stripe's events. A paid invoice is one ledger entry for its
//! subscription part, under the plan of its subscription line, plus one entry per
//! pay-per-task charge on it (so usage is revenue when paid, once per charge). A voided
//! or uncollectible invoice books nothing and takes back any usage booked before.

use j1msky_core::events::{InvoiceGivenUp, InvoicePaid, InvoicePaymentFailed, Typed};
use j1msky_db::{outbox, Backend};
use j1msky_tasks::charges::{self, Reference};
use serde_json::Value;
use sqlx::AnyConnection;

use crate::refs::{id_of, owner, plan_of_price};
use crate::BillingError;

/// The line billing the subscription itself: not an invoice item (usage, a one-off),
/// wherever it is listed.
fn subscription_line(lines: &[Value]) -> Option<&Value> {
    lines
        .iter()
        .find(|l| l["type"] == "subscription" || l["parent"]["type"] == "subscription_item_details")
        .or_else(|| lines.iter().find(|l| !l["price"].is_null() && !l["subscription_item"].is_null()))
        .or_else(|| lines.iter().find(|l| !l["price"].is_null()))
}

/// A pay-per-task charge billed by an invoice line: (charge id, our customer, amount in
/// minor units). Found by the invoice item Stripe made for it, else by its metadata.
async fn usage_charge(conn: &mut AnyConnection, line: &Value) -> Result<Option<(String, String, i64)>, BillingError> {
    let item = id_of(&line["invoice_item"]).or_else(|| id_of(&line["parent"]["invoice_item_details"]["invoice_item"]));
    let by = [
        item.as_deref().map(Reference::Item),
        line["metadata"]["j1msky_task"].as_str().map(Reference::Task),
        line["metadata"]["j1msky_usage_charge"].as_str().map(Reference::Charge),
    ];
    for reference in by.into_iter().flatten() {
        if let Some((id, customer)) = charges::find(conn, reference).await? {
            // Booked as revenue: without the tax a line's amount includes (inclusive tax).
            let amount = line["amount"].as_i64().unwrap_or(0).saturating_sub(crate::tax::inclusive_in_line(line));
            return Ok(Some((id, customer, amount)));
        }
    }
    Ok(None)
}

async fn mark_charge(conn: &mut AnyConnection, charge: &str, invoice: &str, status: &str) -> Result<(), BillingError> {
    Ok(charges::set_invoice_status(conn, charge, invoice, status).await?)
}

#[allow(clippy::too_many_arguments)]
pub(crate) async fn book(
    conn: &mut AnyConnection,
    source: &str,
    kind: &str,
    customer: Option<&str>,
    stripe_customer: Option<&str>,
    amount: i64,
    currency: &str,
    at: i64,
    now: i64,
) -> Result<bool, BillingError> {
    book_money(conn, source, kind, (customer, stripe_customer), (amount, 0), None, currency, at, now).await
}

/// Books `money` moved on `charge` (a dispute's withdrawal or reinstatement): revenue net
/// of the charge's share of tax (`tax::split_on_charge`), the charge named on the entry.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn book_on_charge(
    conn: &mut AnyConnection,
    backend: Backend,
    source: &str,
    kind: &str,
    owner: (Option<&str>, Option<&str>),
    money: i64,
    charge: &str,
    currency: &str,
    at: i64,
    now: i64,
) -> Result<bool, BillingError> {
    let split = crate::tax::split_on_charge(conn, backend, charge, source, money).await?;
    book_money(conn, source, kind, owner, split, Some(charge), currency, at, now).await
}

/// One entry, (revenue, tax) of its money; each source booked once.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn book_money(
    conn: &mut AnyConnection,
    source: &str,
    kind: &str,
    (customer, stripe_customer): (Option<&str>, Option<&str>),
    (amount, tax): (i64, i64),
    charge: Option<&str>,
    currency: &str,
    at: i64,
    now: i64,
) -> Result<bool, BillingError> {
    let done = sqlx::query(
        "INSERT INTO revenue_entries (id, source_id, kind, customer_id, stripe_customer_id, amount_cents, tax_cents,
             charge_id, currency, occurred_at, recorded_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT (source_id) DO NOTHING",
    )
    .bind(j1msky_core::ids::new_id("rev"))
    .bind(source)
    .bind(kind)
    .bind(customer)
    .bind(stripe_customer)
    .bind(amount)
    .bind(tax)
    .bind(charge)
    .bind(currency)
    .bind(at)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

async fn booked(conn: &mut AnyConnection, source: &str) -> Result<Option<i64>, BillingError> {
    let row: Option<(i64,)> = sqlx::query_as("SELECT amount_cents FROM revenue_entries WHERE source_id = $1")
        .bind(source)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(row.map(|r| r.0))
}

/// `invoice.paid`.
pub(crate) async fn paid(
    conn: &mut AnyConnection,
    backend: Backend,
    catalogue: &j1msky_core::catalogue::Catalogue,
    obj: &Value,
    created: i64,
    now: i64,
) -> Result<(), BillingError> {
    let id = obj["id"].as_str().ok_or_else(|| BillingError::Malformed("invoice: `id` missing".into()))?;
    let lines = crate::invoice_lines::embedded(obj)?;
    let (stripe_customer, customer) = owner(conn, obj).await?;
    let sub = id_of(&obj["subscription"]);
    let line = subscription_line(lines);
    let mut plan = match line {
        Some(l) => plan_of_price(conn, &l["price"]).await?,
        None => None,
    };
    if plan.is_none() {
        if let Some(s) = &sub {
            let row: Option<(Option<String>,)> = sqlx::query_as("SELECT plan FROM subscriptions WHERE id = $1")
                .bind(s)
                .fetch_optional(&mut *conn)
                .await?;
            plan = row.and_then(|r| r.0);
        }
    }
    let currency = obj["currency"].as_str().unwrap_or("usd");
    let paid_at = obj["status_transitions"]["paid_at"].as_i64().unwrap_or(created).saturating_mul(1_000_000);
    let mut usage = 0;
    let mut owing = std::collections::BTreeSet::new();
    for l in lines {
        let Some((charge, charge_customer, amount)) = usage_charge(conn, l).await? else { continue };
        if customer.as_deref().is_some_and(|c| c != charge_customer) {
            continue; // another customer's charge: not this invoice's to book
        }
        usage += amount;
        let sc = stripe_customer.as_deref();
        book(conn, &charge, "usage_charge", Some(&charge_customer), sc, amount, currency, paid_at, now).await?;
        // Paid after being given up on (Stripe allows paying an uncollectible invoice):
        // what was taken back is booked again.
        if let Some(reversed) = booked(conn, &format!("{charge}:reversed")).await? {
            let source = format!("{charge}:rebooked");
            book(conn, &source, "usage_charge", Some(&charge_customer), sc, -reversed, currency, paid_at, now).await?;
        }
        mark_charge(conn, &charge, id, "paid").await?;
        owing.insert(charge_customer);
    }
    for c in &owing {
        crate::standing::owed_standing(conn, backend, catalogue, c, now).await?;
    }
    // What was paid, less the pay-per-task lines booked above and the tax (not revenue:
    // `tax`), is the subscription's part.
    let paid = obj["amount_paid"].as_i64().unwrap_or(0);
    let tax = crate::tax::of_invoice(obj).min(paid.max(0));
    let amount = paid.saturating_sub(usage).saturating_sub(tax).max(0);
    let charge_id = id_of(&obj["charge"]);
    let inserted = sqlx::query(
        "INSERT INTO revenue_entries (id, source_id, kind, customer_id, subscription_id, plan, amount_cents, currency,
             period_start, period_end, occurred_at, recorded_at, stripe_customer_id, charge_id, tax_cents, paid_cents)
         VALUES ($1, $2, 'invoice_paid', $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
         ON CONFLICT (source_id) DO NOTHING",
    )
    .bind(j1msky_core::ids::new_id("rev"))
    .bind(id)
    .bind(&customer)
    .bind(&sub)
    .bind(&plan)
    .bind(amount)
    .bind(currency)
    .bind(line.and_then(|l| l["period"]["start"].as_i64()).map(|s| s.saturating_mul(1_000_000)))
    .bind(line.and_then(|l| l["period"]["end"].as_i64()).map(|s| s.saturating_mul(1_000_000)))
    .bind(paid_at)
    .bind(now)
    .bind(&stripe_customer)
    // The charge that paid it: a dispute names only the charge (`disputes`).
    .bind(&charge_id)
    .bind(tax)
    .bind(paid)
    .execute(&mut *conn)
    .await?;
    if inserted.rows_affected() == 1 {
        // Refunds and disputes of the charge that arrived first get their share of tax now;
        // the rollups re-read them on this invoice's event (j1msky-insights).
        if let Some(charge) = &charge_id {
            crate::tax::renet(conn, backend, charge, tax, paid).await?;
        }
        let event =
            InvoicePaid { invoice: id.into(), amount_cents: amount, usage_cents: usage, plan, subscription: sub };
        outbox::emit_typed(conn, backend, event, customer.as_deref(), now).await?;
    }
    Ok(())
}

/// `invoice.voided` and `invoice.marked_uncollectible`: the money will not come.
pub(crate) async fn given_up(
    conn: &mut AnyConnection,
    backend: Backend,
    catalogue: &j1msky_core::catalogue::Catalogue,
    obj: &Value,
    kind: &str,
    created: i64,
    now: i64,
) -> Result<(), BillingError> {
    let id = obj["id"].as_str().ok_or_else(|| BillingError::Malformed("invoice: `id` missing".into()))?;
    // A paid invoice cannot be voided or written off: this notice is older than its payment.
    if booked(conn, id).await?.is_some() {
        return Ok(());
    }
    let lines = crate::invoice_lines::embedded(obj)?;
    let (stripe_customer, customer) = owner(conn, obj).await?;
    let status = if kind == "invoice.voided" { "void" } else { "uncollectible" };
    let currency = obj["currency"].as_str().unwrap_or("usd");
    let mut reversed = 0;
    let mut owing = std::collections::BTreeSet::new();
    for l in lines {
        let Some((charge, charge_customer, _)) = usage_charge(conn, l).await? else { continue };
        if customer.as_deref().is_some_and(|c| c != charge_customer) {
            continue;
        }
        // Usage booked before its invoice was paid (as older versions did) is taken back.
        let earned =
            booked(conn, &charge).await?.unwrap_or(0) + booked(conn, &format!("{charge}:rebooked")).await?.unwrap_or(0);
        if earned != 0 {
            let source = format!("{charge}:reversed");
            let sc = stripe_customer.as_deref();
            if book(
                conn,
                &source,
                "usage_reversed",
                Some(&charge_customer),
                sc,
                -earned,
                currency,
                created * 1_000_000,
                now,
            )
            .await?
            {
                reversed += earned;
            }
        }
        mark_charge(conn, &charge, id, status).await?;
        owing.insert(charge_customer);
    }
    for c in &owing {
        crate::standing::owed_standing(conn, backend, catalogue, c, now).await?;
    }
    let detail = InvoiceGivenUp {
        invoice: id.into(),
        status: status.into(),
        amount_due: obj["amount_due"].as_i64(),
        usage_reversed_cents: reversed,
    };
    let event =
        if kind == "invoice.voided" { Typed::InvoiceVoided(detail) } else { Typed::InvoiceMarkedUncollectible(detail) };
    outbox::emit_typed(conn, backend, event, customer.as_deref(), now).await?;
    Ok(())
}

/// `invoice.payment_failed`: announced (the dunning mail reacts to it); for an invoice of
/// pay-per-task charges, the charges are marked failing and the customer's standing
/// follows ([`owed_standing`]), so a card that keeps declining ends in the grace period a
/// failed subscription payment has. A subscription's own invoice is the subscription's
/// status to tell (`past_due`, through its update).
pub(crate) async fn failed(
    conn: &mut AnyConnection,
    backend: Backend,
    catalogue: &j1msky_core::catalogue::Catalogue,
    obj: &Value,
    now: i64,
) -> Result<(), BillingError> {
    let id = obj["id"].as_str().ok_or_else(|| BillingError::Malformed("invoice: `id` missing".into()))?;
    // Paid already: this notice is of an earlier attempt, delivered late. It is not news
    // (the dunning mail it would start is for money still owed).
    if booked(conn, id).await?.is_some() {
        return Ok(());
    }
    let (_, customer) = owner(conn, obj).await?;
    let event = InvoicePaymentFailed {
        invoice: Some(id.to_string()),
        subscription: id_of(&obj["subscription"]),
        amount_due: obj["amount_due"].as_i64(),
        attempt_count: obj["attempt_count"].as_i64(),
        next_payment_attempt: obj["next_payment_attempt"].as_i64(),
    };
    outbox::emit_typed(conn, backend, event, customer.as_deref(), now).await?;
    let mut owing = std::collections::BTreeSet::new();
    for l in crate::invoice_lines::embedded(obj)? {
        let Some((charge, charge_customer, _)) = usage_charge(conn, l).await? else { continue };
        if customer.as_deref().is_some_and(|c| c != charge_customer) {
            continue;
        }
        charges::mark_payment_failed(conn, &charge, id).await?;
        owing.insert(charge_customer);
    }
    for c in &owing {
        crate::standing::owed_standing(conn, backend, catalogue, c, now).await?;
    }
    Ok(())
}
