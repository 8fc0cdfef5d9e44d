//! The consumer `ops.alerts`: each new alert gets one delivery row per channel, its mail
//! queued and its webhook timer scheduled in the consumer's transaction (or `held` for
//! the hour's digest when its kind is over the hourly limit).

use j1msky_core::events::{Kind, Typed};
use j1msky_core::windows;
use j1msky_db::consumers::{Consumer, Handled, Handler, OnFailure};
use j1msky_db::outbox::Event;
use j1msky_db::{timers, Backend};
use j1msky_lifecycle::delivery::{self, OperatorMessage};
use sqlx::AnyConnection;

use super::{Notifier, NotifyError, ALERT_TEMPLATE, DIGEST_TIMER, MAIL, WEBHOOK, WEBHOOK_TIMER};

/// Attempts of one webhook POST before its delivery is `failed`.
pub const WEBHOOK_ATTEMPTS: i64 = 6;

/// The consumer that delivers new alerts.
pub fn consumer(n: &Notifier) -> Consumer {
    Consumer::new("ops.alerts", &[Kind::AlertRaised], OnFailure::SkipAndPark, OnAlert(n.clone()))
}

struct OnAlert(Notifier);

impl Handler for OnAlert {
    fn handle<'a>(&'a self, conn: &'a mut AnyConnection, _backend: Backend, event: &'a Event, now: i64) -> Handled<'a> {
        Box::pin(async move { Ok(on_alert(conn, &self.0, event, now).await?) })
    }
}

async fn on_alert(conn: &mut AnyConnection, n: &Notifier, event: &Event, now: i64) -> Result<(), NotifyError> {
    let Some(Typed::AlertRaised(a)) = event.typed() else { return Ok(()) };
    // Read before this transaction writes anything (SQLite: one writer at a time).
    let recipients = super::recipients(&n.ops).await?;
    let (hour, hour_end) = windows::hour(now);
    let limit = i64::from(n.ops.catalogue.alerts.max_per_kind_per_hour.max(1));
    for channel in n.channels() {
        let sent_this_hour: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM ops_alert_deliveries
             WHERE channel = $1 AND kind = $2 AND created_at >= $3 AND state NOT IN ('held', 'summarised')",
        )
        .bind(channel)
        .bind(&a.kind)
        .bind(hour)
        .fetch_one(&mut *conn)
        .await?;
        let held = sent_this_hour >= limit;
        let state = match (held, channel) {
            (true, _) => "held",
            (false, MAIL) => "queued",
            (false, _) => "pending",
        };
        let inserted = sqlx::query(
            "INSERT INTO ops_alert_deliveries (alert_id, channel, kind, state, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $5) ON CONFLICT (alert_id, channel) DO NOTHING",
        )
        .bind(&a.alert)
        .bind(channel)
        .bind(&a.kind)
        .bind(state)
        .bind(now)
        .execute(&mut *conn)
        .await?;
        if inserted.rows_affected() == 0 {
            continue; // delivered (or held) before: once per alert and channel
        }
        if held {
            let key = format!("{channel}:{}:{hour}", a.kind);
            let payload = serde_json::json!({"channel": channel, "kind": a.kind, "from": hour, "to": hour_end});
            let timer = timers::NewTimer {
                kind: DIGEST_TIMER,
                key: &key,
                payload: &payload,
                run_at: hour_end,
                max_attempts: WEBHOOK_ATTEMPTS,
            };
            timers::schedule(conn, &timer, now).await?;
        } else if channel == MAIL {
            queue_mail(conn, n, &recipients, &a.alert, &a.kind, std::slice::from_ref(&a.message), now).await?;
        } else if channel == WEBHOOK {
            let payload = serde_json::json!({"alert": a.alert, "text": webhook_text(n, &a.kind, &a.message)});
            let timer = timers::NewTimer {
                kind: WEBHOOK_TIMER,
                key: &a.alert,
                payload: &payload,
                run_at: now,
                max_attempts: WEBHOOK_ATTEMPTS,
            };
            timers::schedule(conn, &timer, now).await?;
        }
    }
    Ok(())
}

/// The webhook text of one alert.
pub(super) fn webhook_text(n: &Notifier, kind: &str, message: &str) -> String {
    format!("{} — {}/admin/alerts", super::alert_line(kind, message), n.base_url)
}

/// Queues the alert mail (one alert, or a digest's several messages) for every
/// recipient, under `source` so it is queued once whatever retries.
pub(super) async fn queue_mail(
    conn: &mut AnyConnection,
    n: &Notifier,
    recipients: &[String],
    source_id: &str,
    kind: &str,
    messages: &[String],
    now: i64,
) -> Result<usize, NotifyError> {
    if recipients.is_empty() {
        tracing::warn!(alert = source_id, "no operator to mail the alert to (no alerts.recipients, no operator users)");
        sqlx::query(
            "UPDATE ops_alert_deliveries SET state = 'failed', last_error = 'no recipients', updated_at = $1
             WHERE alert_id = $2 AND channel = 'mail' AND state = 'queued'",
        )
        .bind(now)
        .bind(source_id)
        .execute(&mut *conn)
        .await?;
        return Ok(0);
    }
    let context = serde_json::json!({
        "business": {"name": n.ops.catalogue.business.name},
        "alert": {"id": source_id, "kind": kind, "messages": messages, "count": messages.len()},
        "links": {"alerts": format!("{}/admin/alerts", n.base_url)},
    });
    let rendered = j1msky_lifecycle::templates::render_from(&n.templates_dir, ALERT_TEMPLATE, &context)?;
    let source = format!("alert:{source_id}");
    let mut queued = 0;
    for to in recipients {
        let msg = OperatorMessage {
            to,
            source: &source,
            step: to,
            occurrence: 0,
            template: ALERT_TEMPLATE,
            rendered: &rendered,
        };
        if delivery::enqueue_for_operator(conn, &msg, now).await?.is_some() {
            queued += 1;
        }
    }
    Ok(queued)
}
