//! The morning review: errors, queue depth and waits, rate-limit hits, alerts, failed
//! payments, mail not going out and staff to-dos on one list, worst first. Each area is read through its
//! owning crate's functions; an area that cannot be read becomes a critical line of its
//! own (logged) instead of hiding the others.

use serde::Serialize;

use crate::{Ctx, InsightsError};

/// How bad one item is; the list is sorted worst first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Critical,
    Warning,
    Info,
}

/// One line of the morning review.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Item {
    pub severity: Severity,
    /// errors, queue, rate_limits, alerts, payments, mail, todos
    pub area: String,
    pub title: String,
    pub detail: String,
    /// Where the operator acts on it (`/admin/queue`, …).
    pub link: String,
}

/// What the review counts back from now.
pub const WINDOW_MICROS: i64 = 24 * 3_600_000_000;
/// Failed tasks in the window from which errors are critical.
pub const CRITICAL_FAILURES: i64 = 10;
/// The oldest queued task's wait from which the queue is a warning, and critical.
pub const QUEUE_WARN_MICROS: i64 = 5 * 60_000_000;
pub const QUEUE_CRITICAL_MICROS: i64 = 30 * 60_000_000;
/// Lifecycle mail due this long ago and still unsent means delivery is not running.
pub const MAIL_OVERDUE_MICROS: i64 = 3_600_000_000;
/// Alerts and failed payments listed one by one at most.
const LISTED: i64 = 20;

fn item(severity: Severity, area: &str, title: String, detail: String, link: &str) -> Item {
    Item { severity, area: area.into(), title, detail, link: link.into() }
}

/// An area that could not be read: logged, and shown as a critical line.
fn unreadable(area: &str, link: &str, e: &dyn std::fmt::Display) -> Item {
    tracing::error!(area, error = %e, "morning review: cannot read");
    item(Severity::Critical, area, format!("Cannot read {area}"), "the error is in the server log".into(), link)
}

fn minutes(micros: i64) -> String {
    let m = micros.max(0) / 60_000_000;
    if m < 120 {
        format!("{m} min")
    } else {
        format!("{} h {} min", m / 60, m % 60)
    }
}

/// The review as of now (the last 24 hours for counts of what happened).
pub async fn review(ctx: &Ctx) -> Result<Vec<Item>, InsightsError> {
    let db = &ctx.db;
    let now = ctx.clock.now_micros();
    let since = now - WINDOW_MICROS;
    let mut items = Vec::new();

    // Errors: tasks that failed in the window.
    match j1msky_tasks::submit::failed_between(db, since, now + 1).await {
        Ok(0) => {}
        Ok(n) => items.push(item(
            if n >= CRITICAL_FAILURES { Severity::Critical } else { Severity::Warning },
            "errors",
            format!("{n} task(s) failed in the last 24 h"),
            "retry or cancel them on the queue page".into(),
            "/admin/queue",
        )),
        Err(e) => items.push(unreadable("errors", "/admin/queue", &e)),
    }

    // The queue: depth, the oldest wait, and tasks held back by a cap or budget.
    match j1msky_tasks::queue_view(db, now).await {
        Ok(q) => {
            let depth: i64 = q.depth.iter().map(|d| d.queued).sum();
            let oldest = q.depth.iter().map(|d| d.oldest_wait_micros).max().unwrap_or(0);
            let severity = match oldest {
                w if w >= QUEUE_CRITICAL_MICROS => Severity::Critical,
                w if w >= QUEUE_WARN_MICROS => Severity::Warning,
                _ => Severity::Info,
            };
            let worst = q.depth.iter().max_by_key(|d| d.oldest_wait_micros);
            let detail = match worst {
                Some(d) => format!(
                    "oldest waits {} ({} priority, team {})",
                    minutes(oldest),
                    format!("{:?}", d.priority).to_lowercase(),
                    d.team
                ),
                None => "nothing waiting".into(),
            };
            items.push(item(
                severity,
                "queue",
                format!("{depth} task(s) queued, {} running", q.running.len()),
                detail,
                "/admin/queue",
            ));
            if !q.waiting.is_empty() {
                let mut reasons: Vec<String> = q.waiting.iter().filter_map(|t| t.wait_reason.clone()).collect();
                reasons.sort();
                reasons.dedup();
                items.push(item(
                    Severity::Warning,
                    "queue",
                    format!("{} task(s) held back by a cap, budget or back-off", q.waiting.len()),
                    if reasons.is_empty() { "waiting for a retry".into() } else { reasons.join("; ") },
                    "/admin/gateway",
                ));
            }
        }
        Err(e) => items.push(unreadable("queue", "/admin/queue", &e)),
    }

    // The SLAs sold: tasks of a plan with an SLA waiting past its queue wait.
    match j1msky_tasks::sla_lanes(db, &ctx.catalogue.current(), now).await {
        Ok(lanes) => {
            for lane in lanes.iter().filter(|l| l.past_max > 0) {
                items.push(item(
                    Severity::Critical,
                    "queue",
                    format!(
                        "{} task(s) of {} waiting past the SLA's {}",
                        lane.past_max,
                        lane.plans.join(", "),
                        minutes(lane.max_wait_micros)
                    ),
                    format!(
                        "the oldest has waited {} ({} queued under the SLA)",
                        minutes(lane.oldest_wait_micros),
                        lane.queued
                    ),
                    "/admin/queue",
                ));
            }
        }
        Err(e) => items.push(unreadable("queue", "/admin/queue", &e)),
    }

    // Rate limits: upstream providers refusing us, and customers reaching their plan's limits.
    match j1msky_gateway::ledger::outcome_count(db, "rate_limited", since, now + 1).await {
        Ok(0) => {}
        Ok(n) => items.push(item(
            Severity::Warning,
            "rate_limits",
            format!("{n} upstream call(s) rate-limited in the last 24 h"),
            "providers refused calls; see the caps and the routing".into(),
            "/admin/gateway",
        )),
        Err(e) => items.push(unreadable("rate_limits", "/admin/gateway", &e)),
    }
    match j1msky_db::outbox::latest(db, Some("plan.limit_hit"), 1000).await {
        Ok(events) => {
            let recent: Vec<_> = events.iter().filter(|e| e.created_at >= since).collect();
            if !recent.is_empty() {
                let mut customers: Vec<&str> = recent.iter().filter_map(|e| e.customer_id.as_deref()).collect();
                customers.sort_unstable();
                customers.dedup();
                items.push(item(
                    Severity::Info,
                    "rate_limits",
                    format!("{} plan limit hit(s) by {} customer(s) in the last 24 h", recent.len(), customers.len()),
                    "customers reaching their plan's caps may want an upgrade".into(),
                    "/admin/gateway",
                ));
            }
        }
        Err(e) => items.push(unreadable("rate_limits", "/admin/gateway", &e)),
    }

    // Alerts nobody acknowledged, however old: one raised on Friday still needs Monday's look.
    match j1msky_audit::alerts::open(db, LISTED).await {
        Ok((alerts, total)) => {
            let listed = alerts.len() as i64;
            items.extend(alerts.into_iter().map(|a| {
                let age = if a.created_at < since {
                    format!(" (raised {} ago)", minutes(now - a.created_at))
                } else {
                    String::new()
                };
                item(
                    Severity::Critical,
                    "alerts",
                    format!("Alert: {}", a.kind),
                    format!("{}{age}", a.message),
                    "/admin/alerts",
                )
            }));
            if total > listed {
                items.push(item(
                    Severity::Critical,
                    "alerts",
                    format!("{} more open alert(s)", total - listed),
                    "acknowledge or resolve them on the alerts page".into(),
                    "/admin/alerts",
                ));
            }
        }
        Err(e) => items.push(unreadable("alerts", "/admin/alerts", &e)),
    }

    // Events a consumer gave up on: the reactions and rollups behind it miss them (the
    // board's numbers too) until the operator retries them.
    match j1msky_db::consumers::status(db).await {
        Ok(consumers) => {
            for c in consumers.iter().filter(|c| c.parked > 0 || c.failing > 0) {
                let (severity, title) = if c.parked > 0 {
                    (Severity::Critical, format!("{} gave up on {} event(s)", c.consumer, c.parked))
                } else {
                    (Severity::Warning, format!("{} is retrying {} event(s)", c.consumer, c.failing))
                };
                let detail = if c.parked > 0 {
                    "what it does for them is not done until they are retried on the events page".to_string()
                } else {
                    "it tries again with back-off, then gives up".to_string()
                };
                items.push(item(severity, "errors", title, detail, "/admin/events"));
            }
        }
        Err(e) => items.push(unreadable("errors", "/admin/events", &e)),
    }

    // Failed payments: `unpaid` is worse than `past_due` (still in its grace period).
    match j1msky_accounts::customers::with_failed_payment(db, LISTED).await {
        Ok(customers) => items.extend(customers.into_iter().map(|c| {
            let status = c.billing_status.clone().unwrap_or_default();
            let since = c.billing_status_since.map(|t| format!(" for {}", minutes(now - t))).unwrap_or_default();
            Item {
                severity: if status == "unpaid" { Severity::Critical } else { Severity::Warning },
                area: "payments".into(),
                title: format!("Payment failed: {}", c.name),
                detail: format!("{status}{since}"),
                link: format!("/admin/customers/{}", c.id),
            }
        })),
        Err(e) => items.push(unreadable("payments", "/admin/customers", &e)),
    }

    // Disputed payments waiting for our evidence: critical within three days of the deadline.
    match j1msky_billing::disputes::awaiting_response(db, LISTED).await {
        Ok(disputes) => items.extend(disputes.into_iter().map(|d| {
            let left = d.evidence_due_by.map(|due| due - now);
            let urgent = left.is_none_or(|l| l < 3 * 86_400_000_000);
            let due = match left {
                Some(l) if l > 2 * 86_400_000_000 => format!("evidence due in {} days", l / 86_400_000_000),
                Some(l) if l > 0 => format!("evidence due in {}", minutes(l)),
                Some(_) => "evidence deadline passed".to_string(),
                None => "no deadline given".to_string(),
            };
            let link =
                d.customer_id.as_deref().map_or("/admin/customers".to_string(), |c| format!("/admin/customers/{c}"));
            Item {
                severity: if urgent { Severity::Critical } else { Severity::Warning },
                area: "payments".into(),
                title: format!("Payment disputed: {} {} ({})", d.amount, d.currency, d.reason),
                detail: format!("{due}; charge {}, answer in the Stripe dashboard", d.charge_id),
                link,
            }
        })),
        Err(e) => items.push(unreadable("payments", "/admin/customers", &e)),
    }

    // Mail: the lifecycle (journeys, surveys, offers, to-dos' mail, these reviews) goes
    // out only through a running sender with a transport; what piles up says it is not.
    match j1msky_lifecycle::delivery::health(db, now - MAIL_OVERDUE_MICROS, since).await {
        Ok(h) => {
            if h.overdue > 0 {
                let why = match &h.overdue_error {
                    Some(e) => format!("the last attempt failed: {e}"),
                    None => "nothing tried to send them: is a process with the reactions role running with \
                             a mail transport (--smtp-url or --mail-dir)?"
                        .into(),
                };
                let oldest =
                    h.oldest_due.map(|t| format!("the oldest due {} ago; ", minutes(now - t))).unwrap_or_default();
                items.push(item(
                    Severity::Critical,
                    "mail",
                    format!("{} message(s) due over an hour ago not sent", h.overdue),
                    format!("{oldest}{why}"),
                    "/admin/lifecycle/messages?state=queued",
                ));
            }
            if h.failed + h.unknown > 0 {
                items.push(item(
                    Severity::Warning,
                    "mail",
                    format!("{} message(s) failed in the last 24 h", h.failed + h.unknown),
                    format!(
                        "{} refused, {} may not have arrived (a connection lost mid-send): look before resending",
                        h.failed, h.unknown
                    ),
                    if h.failed > 0 {
                        "/admin/lifecycle/messages?state=failed"
                    } else {
                        "/admin/lifecycle/messages?state=unknown"
                    },
                ));
            }
        }
        Err(e) => items.push(unreadable("mail", "/admin/lifecycle/messages", &e)),
    }

    // Staff to-dos.
    match j1msky_lifecycle::todos::counts(db, now).await {
        Ok(c) if c.overdue > 0 => items.push(item(
            Severity::Warning,
            "todos",
            format!("{} staff to-do(s) overdue", c.overdue),
            format!("{} open in all", c.open),
            "/admin/todos?filter=overdue",
        )),
        Ok(c) if c.open > 0 => items.push(item(
            Severity::Info,
            "todos",
            format!("{} staff to-do(s) open", c.open),
            "none overdue".into(),
            "/admin/todos?filter=open",
        )),
        Ok(_) => {}
        Err(e) => items.push(unreadable("todos", "/admin/todos", &e)),
    }

    items.sort_by_key(|i| i.severity);
    Ok(items)
}
