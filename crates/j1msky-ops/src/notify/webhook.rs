//! The webhook channel (a Slack-compatible `{"text": …}` POST, retried by its timer
//! with the timers' back-off) and the hourly digest of held alerts on both channels.

use std::future::Future;

use j1msky_db::timers::Fired;
use sqlx::Row;

use super::consumer::{queue_mail, webhook_text, WEBHOOK_ATTEMPTS};
use super::{Notifier, NotifyError, MAIL, WEBHOOK};

/// The timer that POSTs one alert to the webhook (key: the alert id).
pub const WEBHOOK_TIMER: &str = "ops.alert_webhook";
/// The timer that sends an hour's held alerts of one kind as one digest.
pub const DIGEST_TIMER: &str = "ops.alert_digest";

/// POSTs `{"text": text}`; an error says what went wrong (status or transport).
pub async fn post(n: &Notifier, text: &str) -> Result<(), String> {
    let Some(url) = n.webhook_url() else { return Err("no webhook URL configured".into()) };
    let response = n
        .http
        .post(url)
        .json(&serde_json::json!({ "text": text }))
        .send()
        .await
        // Without the URL: a chat webhook's path is its secret, and this message is stored
        // with the delivery, logged and shown on the alerts page.
        .map_err(|e| format!("webhook request failed: {}", e.without_url()))?;
    let status = response.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("webhook answered {status}"))
    }
}

/// Records an attempt's outcome on the delivery rows of `ids` on `channel`.
async fn settle(
    n: &Notifier,
    fired: &Fired,
    channel: &str,
    ids: &[String],
    from_state: &str,
    outcome: &Result<(), String>,
) -> Result<(), NotifyError> {
    let last = fired.attempt >= WEBHOOK_ATTEMPTS;
    let (state, error) = match outcome {
        Ok(()) if from_state == "held" => ("summarised", None),
        Ok(()) => ("sent", None),
        Err(e) if last => ("failed", Some(e.as_str())),
        Err(e) if from_state == "held" => ("held", Some(e.as_str())),
        Err(e) => ("retrying", Some(e.as_str())),
    };
    let mut tx = n.ops.db.begin().await?;
    for id in ids {
        sqlx::query(
            "UPDATE ops_alert_deliveries SET state = $1, last_error = COALESCE($2, last_error),
                 attempts = attempts + 1, updated_at = $3
             WHERE alert_id = $4 AND channel = $5",
        )
        .bind(state)
        .bind(error)
        .bind(fired.now)
        .bind(id)
        .bind(channel)
        .execute(&mut *tx)
        .await?;
    }
    if outcome.is_ok() && !fired.complete(&mut tx).await? {
        return Ok(()); // another process took the timer over: roll back
    }
    tx.commit().await?;
    Ok(())
}

/// The webhook timer's handler: one POST per firing; a failure is retried.
pub fn webhook_timer_handler(
    n: Notifier,
) -> impl Fn(Fired) -> std::pin::Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync + 'static {
    move |fired: Fired| {
        let n = n.clone();
        Box::pin(async move {
            let text = fired.payload["text"].as_str().unwrap_or_default().to_string();
            let outcome = post(&n, &text).await;
            if let Err(e) = &outcome {
                tracing::warn!(alert = %fired.key, attempt = fired.attempt, error = %e, "alert webhook failed");
            }
            settle(&n, &fired, WEBHOOK, std::slice::from_ref(&fired.key), "pending", &outcome)
                .await
                .map_err(|e| e.to_string())?;
            outcome
        })
    }
}

/// The digest timer's handler: the held alerts of one kind, channel and hour, sent as one.
pub fn digest_timer_handler(
    n: Notifier,
) -> impl Fn(Fired) -> std::pin::Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync + 'static {
    move |fired: Fired| {
        let n = n.clone();
        Box::pin(async move { digest(&n, &fired).await.map_err(|e| e.to_string())? })
    }
}

async fn digest(n: &Notifier, fired: &Fired) -> Result<Result<(), String>, NotifyError> {
    let p = &fired.payload;
    let channel = p["channel"].as_str().unwrap_or(MAIL).to_string();
    let kind = p["kind"].as_str().unwrap_or_default().to_string();
    let (from, to) = (p["from"].as_i64().unwrap_or(0), p["to"].as_i64().unwrap_or(0));
    let rows = sqlx::query(
        "SELECT d.alert_id, a.message FROM ops_alert_deliveries d JOIN alerts a ON a.id = d.alert_id
         WHERE d.channel = $1 AND d.kind = $2 AND d.state = 'held' AND d.created_at >= $3 AND d.created_at < $4
         ORDER BY d.created_at, d.alert_id",
    )
    .bind(&channel)
    .bind(&kind)
    .bind(from)
    .bind(to)
    .fetch_all(n.ops.db.pool())
    .await?;
    let mut ids = Vec::new();
    let mut messages = Vec::new();
    for r in &rows {
        ids.push(r.try_get::<String, _>(0)?);
        messages.push(r.try_get::<String, _>(1)?);
    }
    if ids.is_empty() {
        return Ok(Ok(()));
    }
    if channel == MAIL {
        let recipients = super::recipients(&n.ops).await?;
        let mut tx = n.ops.db.begin().await?;
        queue_mail(&mut tx, n, &recipients, &format!("digest:{kind}:{from}"), &kind, &messages, fired.now).await?;
        for id in &ids {
            sqlx::query(
                "UPDATE ops_alert_deliveries SET state = 'summarised', updated_at = $1
                 WHERE alert_id = $2 AND channel = 'mail' AND state = 'held'",
            )
            .bind(fired.now)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        if fired.complete(&mut tx).await? {
            tx.commit().await?;
        }
        return Ok(Ok(()));
    }
    let text = webhook_text(n, &kind, &format!("{} more alert(s) this hour: {}", messages.len(), messages.join(" | ")));
    let outcome = post(n, &text).await;
    settle(n, fired, WEBHOOK, &ids, "held", &outcome).await?;
    Ok(outcome)
}
