//! Newsletters composed by the operator (subject and a Markdown-ish text body), rendered
//! through the operator-editable template `config/templates/newsletter.*.j2` like every
//! other mail (strict: a missing variable is an error), previewed and test-sent, then
//! queued to every customer with a contact address in batches on a durable timer.
//! Each recipient's message is `delivery::enqueue`d with source `newsletter:<id>` and the
//! customer as its step, so a batch that runs twice (a retry, a second process) queues
//! nothing twice. Whether a customer receives it (marketing consent, suppression) is
//! decided at send time by delivery. The template also gets the next office-hours slot
//! (`lifecycle.engagement.office_hours`) and the case studies: testimonials the operator
//! approved since the newsletter before this one was sent.

use j1msky_audit::Actor;
use j1msky_db::timers::{self, Fired, Handlers, NewTimer};
use j1msky_db::Db;
use serde::Serialize;
use sqlx::Row;

use crate::delivery::{self, Category, NewMessage};
use crate::templates::Rendered;
use crate::{Ctx, LifecycleError};

/// The timer kind of newsletter batches.
pub const TIMER: &str = "lifecycle.newsletter";
pub const MAX_SUBJECT: usize = 200;
pub const MAX_BODY: usize = 50_000;

/// The newsletter's timers (sending batches).
pub fn timer_handlers(ctx: &Ctx, h: Handlers) -> Handlers {
    let ctx = ctx.clone();
    h.on(TIMER, move |fired| {
        let ctx = ctx.clone();
        async move { fire(&ctx, fired).await.map_err(|e| e.to_string()) }
    })
}

/// A newsletter and its progress.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Newsletter {
    pub id: String,
    pub subject: String,
    pub body: String,
    /// `draft`, `sending` (batches being queued) or `queued` (every recipient queued).
    pub state: String,
    pub created_by: String,
    pub created_at: i64,
    pub send_requested_at: Option<i64>,
    pub finished_at: Option<i64>,
    /// Messages queued for it so far, and how many of them were sent.
    pub queued: i64,
    pub sent: i64,
}

const SELECT: &str = "SELECT n.id, n.subject, n.body, n.state, n.created_by, n.created_at, n.send_requested_at,
        n.finished_at,
        (SELECT COUNT(*) FROM lifecycle_messages m WHERE m.source = 'newsletter:' || n.id),
        (SELECT COUNT(*) FROM lifecycle_messages m WHERE m.source = 'newsletter:' || n.id AND m.state = 'sent')
    FROM lifecycle_newsletters n";

fn from_row(r: &sqlx::any::AnyRow) -> Result<Newsletter, sqlx::Error> {
    Ok(Newsletter {
        id: r.try_get(0)?,
        subject: r.try_get(1)?,
        body: r.try_get(2)?,
        state: r.try_get(3)?,
        created_by: r.try_get(4)?,
        created_at: r.try_get(5)?,
        send_requested_at: r.try_get(6)?,
        finished_at: r.try_get(7)?,
        queued: r.try_get(8)?,
        sent: r.try_get(9)?,
    })
}

fn validate(subject: &str, body: &str) -> Result<(String, String), LifecycleError> {
    let (subject, body) = (subject.trim(), body.trim());
    if subject.is_empty() {
        return Err(LifecycleError::invalid("subject", "a newsletter needs a subject"));
    }
    if subject.chars().count() > MAX_SUBJECT {
        return Err(LifecycleError::invalid("subject", format!("at most {MAX_SUBJECT} characters")));
    }
    if subject.contains(['\r', '\n']) {
        return Err(LifecycleError::invalid("subject", "must be one line"));
    }
    if body.is_empty() {
        return Err(LifecycleError::invalid("body", "a newsletter needs a body"));
    }
    if body.chars().count() > MAX_BODY {
        return Err(LifecycleError::invalid("body", format!("at most {MAX_BODY} characters")));
    }
    Ok((subject.to_string(), body.to_string()))
}

/// Saves a draft.
pub async fn create(db: &Db, actor: &Actor, subject: &str, body: &str, now: i64) -> Result<Newsletter, LifecycleError> {
    let (subject, body) = validate(subject, body)?;
    let id = j1msky_core::ids::new_id("nl");
    let mut tx = db.begin().await?;
    sqlx::query(
        "INSERT INTO lifecycle_newsletters (id, subject, body, state, created_by, created_at) VALUES ($1, $2, $3, 'draft', $4, $5)",
    )
    .bind(&id)
    .bind(&subject)
    .bind(&body)
    .bind(actor.as_str())
    .bind(now)
    .execute(&mut *tx)
    .await?;
    j1msky_audit::audit::record(
        &mut tx,
        actor,
        "newsletter.create",
        &id,
        None,
        serde_json::json!({"subject": subject}),
        now,
    )
    .await?;
    tx.commit().await.map_err(j1msky_db::DbError::from)?;
    get(db, &id).await
}

/// One newsletter with its progress.
pub async fn get(db: &Db, id: &str) -> Result<Newsletter, LifecycleError> {
    let row = sqlx::query(&format!("{SELECT} WHERE n.id = $1")).bind(id).fetch_optional(db.pool()).await?;
    match row {
        Some(r) => Ok(from_row(&r)?),
        None => Err(LifecycleError::NotFound(format!("newsletter {id}"))),
    }
}

/// Newsletters, newest first.
pub async fn list(db: &Db, limit: i64) -> Result<Vec<Newsletter>, LifecycleError> {
    let rows = sqlx::query(&format!("{SELECT} ORDER BY n.created_at DESC, n.id LIMIT $1"))
        .bind(limit)
        .fetch_all(db.pool())
        .await?;
    Ok(rows.iter().map(from_row).collect::<Result<_, _>>()?)
}

/// How many customers it would be queued for (those with a contact address).
pub async fn audience(db: &Db) -> Result<i64, LifecycleError> {
    let row = sqlx::query("SELECT COUNT(*) FROM customers WHERE contact_email IS NOT NULL AND contact_email <> ''")
        .fetch_one(db.pool())
        .await?;
    Ok(row.try_get(0)?)
}

/// The template that renders newsletters.
pub use crate::templates::NEWSLETTER as TEMPLATE;

/// Case studies announced in one newsletter at most.
const CASE_STUDIES: i64 = 5;

/// The template context of newsletter `n` at `now`: its subject and body (text, and the
/// HTML made from its Markdown subset), the next office-hours slot, and the case studies
/// approved after the previous newsletter was sent and before this one (or, for a
/// draft, before `now`), so every batch of one newsletter announces the same ones.
pub async fn context(ctx: &Ctx, n: &Newsletter, now: i64) -> Result<serde_json::Value, LifecycleError> {
    let until = n.send_requested_at.unwrap_or(now);
    let previous: Option<i64> = sqlx::query(
        "SELECT MAX(send_requested_at) FROM lifecycle_newsletters
         WHERE id <> $1 AND send_requested_at IS NOT NULL AND send_requested_at < $2",
    )
    .bind(&n.id)
    .bind(until)
    .fetch_one(ctx.db.pool())
    .await?
    .try_get(0)?;
    let studies =
        crate::surveys::approved_testimonials(&ctx.db, previous.unwrap_or(i64::MIN), until, CASE_STUDIES).await?;
    let mut c = crate::templates::sample_context(&ctx.catalogue, &ctx.base_url);
    // Only what a newsletter knows: no one customer's figures.
    if let Some(map) = c.as_object_mut() {
        for k in ["customer", "all_time", "week", "month", "recommendations", "survey"] {
            map.remove(k);
        }
    }
    c["newsletter"] =
        serde_json::json!({"subject": n.subject, "body_text": n.body, "body_html": markdown_to_html(&n.body)});
    c["office_hours"] = office_hours(&ctx.catalogue, now).map_or(
        serde_json::Value::Null,
        |(when, zone, minutes, url)| serde_json::json!({"when": when, "zone": zone, "minutes": minutes, "url": url}),
    );
    c["case_studies"] = studies
        .iter()
        .filter_map(|s| s.testimonial.as_ref().map(|t| serde_json::json!({"customer": s.customer_name, "text": t})))
        .collect::<Vec<_>>()
        .into();
    Ok(c)
}

/// The message exactly as it will be queued at `now`, rendered from the `newsletter`
/// template.
pub async fn render(ctx: &Ctx, n: &Newsletter, now: i64) -> Result<Rendered, LifecycleError> {
    let c = context(ctx, n, now).await?;
    crate::templates::render(ctx, TEMPLATE, &c)
}

/// Sends newsletter `id` as it would be queued now to one address, marked as a test;
/// nothing is queued. Returns the Message-ID.
pub async fn send_test(ctx: &Ctx, id: &str, to: &str) -> Result<String, LifecycleError> {
    crate::journeys::preview::check_address(to)?;
    let n = get(&ctx.db, id).await?;
    let r = render(ctx, &n, ctx.clock.now_micros()).await?;
    crate::journeys::preview::send_rendered_test(ctx, &r, to).await
}

/// The next office-hours slot: (local date and time, zone, minutes, join link).
pub fn office_hours(catalogue: &j1msky_core::catalogue::Catalogue, now: i64) -> Option<(String, String, u32, String)> {
    let oh = catalogue.lifecycle.engagement.office_hours.as_ref()?;
    let tz: chrono_tz::Tz = catalogue.business.time_zone.parse().ok()?;
    let at = oh.next_start(tz, now)?;
    use chrono::TimeZone;
    let local = tz.timestamp_micros(at).single()?;
    Some((
        local.format("%A %-d %B %Y, %H:%M").to_string(),
        catalogue.business.time_zone.clone(),
        oh.minutes,
        oh.join_url.clone(),
    ))
}

/// Asks for the newsletter to be sent: a draft becomes `sending` and its first batch is
/// due now. Sending one that is already sending or queued is refused.
pub async fn send(db: &Db, actor: &Actor, id: &str, now: i64) -> Result<Newsletter, LifecycleError> {
    get(db, id).await?;
    let mut tx = db.begin().await?;
    let changed = sqlx::query(
        "UPDATE lifecycle_newsletters SET state = 'sending', send_requested_at = $1 WHERE id = $2 AND state = 'draft'",
    )
    .bind(now)
    .bind(id)
    .execute(&mut *tx)
    .await?;
    if changed.rows_affected() != 1 {
        return Err(LifecycleError::Conflict(format!("newsletter {id} has been sent already")));
    }
    let payload = serde_json::json!({"newsletter": id});
    let key = format!("{id}:start");
    timers::schedule(
        &mut tx,
        &NewTimer { kind: TIMER, key: &key, payload: &payload, run_at: now, max_attempts: 20 },
        now,
    )
    .await?;
    j1msky_audit::audit::record(&mut tx, actor, "newsletter.send", id, None, serde_json::json!({}), now).await?;
    tx.commit().await.map_err(j1msky_db::DbError::from)?;
    get(db, id).await
}

/// What one batch did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batch {
    /// Messages this batch queued (recipients queued before are skipped).
    pub queued: usize,
    /// True when every recipient is queued now.
    pub finished: bool,
}

async fn fire(ctx: &Ctx, fired: Fired) -> Result<(), LifecycleError> {
    let id = fired.payload.get("newsletter").and_then(|v| v.as_str()).unwrap_or_default().to_string();
    queue_batch(ctx, &id, fired.now, Some(&fired)).await.map(|_| ())
}

/// Queues the next batch of recipients of a newsletter being sent, in one transaction
/// (with the timer's completion and the next batch's timer when fired by one).
pub async fn queue_batch(ctx: &Ctx, id: &str, now: i64, fired: Option<&Fired>) -> Result<Batch, LifecycleError> {
    let db = &ctx.db;
    let n = get(db, id).await?;
    let mut tx = db.begin().await?;
    // A no-op write locks the row (PostgreSQL; SQLite has one writer anyway), so two
    // processes running batches of one newsletter take turns and never move backwards.
    sqlx::query("UPDATE lifecycle_newsletters SET state = state WHERE id = $1").bind(id).execute(&mut *tx).await?;
    let row = sqlx::query("SELECT state, queued_through FROM lifecycle_newsletters WHERE id = $1")
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
    let state: String = row.try_get(0)?;
    let through: Option<String> = row.try_get(1)?;
    if state != "sending" {
        if let Some(f) = fired {
            f.complete(&mut tx).await?;
        }
        tx.commit().await.map_err(j1msky_db::DbError::from)?;
        return Ok(Batch { queued: 0, finished: state == "queued" });
    }
    let batch = i64::from(ctx.catalogue.lifecycle.engagement.newsletter_batch.max(1));
    let recipients: Vec<String> = sqlx::query(
        "SELECT id FROM customers WHERE contact_email IS NOT NULL AND contact_email <> '' AND id > $1 ORDER BY id LIMIT $2",
    )
    .bind(through.clone().unwrap_or_default())
    .bind(batch)
    .fetch_all(&mut *tx)
    .await?
    .iter()
    .map(|r| r.try_get(0))
    .collect::<Result<_, _>>()?;
    let rendered = render(ctx, &n, now).await?;
    let source = format!("newsletter:{id}");
    let mut queued = 0;
    for customer in &recipients {
        let msg = NewMessage {
            customer_id: customer,
            source: &source,
            step: customer,
            occurrence: 0,
            category: Category::Marketing,
            template: "newsletter",
            rendered: &rendered,
            not_before: now,
            stale_at: None,
        };
        if delivery::enqueue(&mut tx, db.backend(), &msg, now).await?.is_some() {
            queued += 1;
        }
    }
    let finished = (recipients.len() as i64) < batch;
    let last = recipients.last().cloned().or(through);
    if finished {
        sqlx::query(
            "UPDATE lifecycle_newsletters SET state = 'queued', queued_through = $1, finished_at = $2 WHERE id = $3",
        )
        .bind(&last)
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await?;
    } else {
        sqlx::query("UPDATE lifecycle_newsletters SET queued_through = $1 WHERE id = $2")
            .bind(&last)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let payload = serde_json::json!({"newsletter": id});
        let key = format!("{id}:after:{}", last.unwrap_or_default());
        timers::schedule(
            &mut tx,
            &NewTimer { kind: TIMER, key: &key, payload: &payload, run_at: now, max_attempts: 20 },
            now,
        )
        .await?;
    }
    if let Some(f) = fired {
        if !f.complete(&mut tx).await? {
            // Another process holds the timer now; it queues this batch.
            return Ok(Batch { queued: 0, finished: false });
        }
    }
    tx.commit().await.map_err(j1msky_db::DbError::from)?;
    Ok(Batch { queued, finished })
}

/// HTML-escapes text.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&#39;")
}

/// A small, safe Markdown subset: `#`/`##` headings, `-` lists, blank-line paragraphs,
/// `**bold**` and `[text](https://…)` links. Everything else is text, escaped.
pub fn markdown_to_html(body: &str) -> String {
    let mut out = String::new();
    let mut para: Vec<String> = Vec::new();
    let mut list: Vec<String> = Vec::new();
    fn flush(out: &mut String, para: &mut Vec<String>, list: &mut Vec<String>) {
        if !para.is_empty() {
            out.push_str(&format!("<p>{}</p>\n", para.join("<br>\n")));
            para.clear();
        }
        if !list.is_empty() {
            out.push_str("<ul>\n");
            for item in list.drain(..) {
                out.push_str(&format!("<li>{item}</li>\n"));
            }
            out.push_str("</ul>\n");
        }
    }
    for line in body.lines() {
        let t = line.trim_end();
        if t.trim().is_empty() {
            flush(&mut out, &mut para, &mut list);
        } else if let Some(h) = t.strip_prefix("## ") {
            flush(&mut out, &mut para, &mut list);
            out.push_str(&format!("<h3>{}</h3>\n", inline(h)));
        } else if let Some(h) = t.strip_prefix("# ") {
            flush(&mut out, &mut para, &mut list);
            out.push_str(&format!("<h2>{}</h2>\n", inline(h)));
        } else if let Some(item) = t.strip_prefix("- ").or_else(|| t.strip_prefix("* ")) {
            if !para.is_empty() {
                let mut none = Vec::new();
                flush(&mut out, &mut para, &mut none);
            }
            list.push(inline(item));
        } else {
            if !list.is_empty() {
                let mut none = Vec::new();
                flush(&mut out, &mut none, &mut list);
            }
            para.push(inline(t));
        }
    }
    flush(&mut out, &mut para, &mut list);
    out
}

fn inline(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix("**") {
            if let Some(end) = after.find("**") {
                out.push_str(&format!("<strong>{}</strong>", escape(&after[..end])));
                rest = &after[end + 2..];
                continue;
            }
        }
        if let Some(after) = rest.strip_prefix('[') {
            if let Some((label, tail)) = after.split_once("](") {
                if let Some((url, tail)) = tail.split_once(')') {
                    if (url.starts_with("https://") || url.starts_with("http://")) && !label.contains('[') {
                        out.push_str(&format!("<a href=\"{}\">{}</a>", escape(url), escape(label)));
                        rest = tail;
                        continue;
                    }
                }
            }
        }
        let mut chars = rest.chars();
        if let Some(c) = chars.next() {
            out.push_str(&escape(&c.to_string()));
        }
        rest = chars.as_str();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_is_rendered_and_html_in_it_is_escaped() {
        let html = markdown_to_html(
            "# News\n\nHello **all**,\nsee [the docs](https://d.test/a?b=1&c=2).\n\n- one\n- <b>two</b>\n\n[x](javascript:alert(1))",
        );
        assert!(html.contains("<h2>News</h2>"), "{html}");
        assert!(
            html.contains(
                "<p>Hello <strong>all</strong>,<br>\nsee <a href=\"https://d.test/a?b=1&amp;c=2\">the docs</a>.</p>"
            ),
            "{html}"
        );
        assert!(html.contains("<ul>\n<li>one</li>\n<li>&lt;b&gt;two&lt;/b&gt;</li>\n</ul>"), "{html}");
        assert!(!html.contains("href=\"javascript"), "{html}");
    }
}
