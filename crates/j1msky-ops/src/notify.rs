//! Alerts that reach people: mail to operators and a Slack-compatible webhook,
//! de-duplicated and rate-limited; the cost-spike and stuck-queue checks that raise
//! alerts of their own. The morning and evening report mails are in `reports`.
//!
//! How an alert travels: `audit::alerts::record` stores it and emits `alert.raised` in
//! the same transaction; the consumer `ops.alerts` ([`consumer`]) gives it one row per
//! channel in `ops_alert_deliveries` (the primary key (alert, channel) is the
//! de-duplication: an alert raised twice is delivered once) and, in the consumer's
//! transaction, queues the operator mail in lifecycle's queue (sent exactly once by its
//! sender) and a webhook timer. Past `alerts.max_per_kind_per_hour` deliveries of one
//! kind in an hour a channel's row is `held`, and a digest timer at the end of that hour
//! sends one summary of the held ones. The webhook POST is retried with the timers'
//! back-off; every attempt and the last error are on the row (`/admin/alerts`). A POST
//! whose answer was lost to a crash is sent again: a webhook is at least once.

use std::path::PathBuf;

use j1msky_db::{Db, DbError};
use serde::Serialize;
use sqlx::Row;

mod consumer;
pub mod spike;
mod webhook;

pub use consumer::consumer;
pub use webhook::{digest_timer_handler, webhook_timer_handler, DIGEST_TIMER, WEBHOOK_TIMER};

/// The mail channel.
pub const MAIL: &str = "mail";
/// The webhook channel.
pub const WEBHOOK: &str = "webhook";
/// The template of an alert mail (and a digest).
pub const ALERT_TEMPLATE: &str = "operator_alert";

/// Why an alert could not be delivered or checked.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Lifecycle(#[from] j1msky_lifecycle::LifecycleError),
    #[error(transparent)]
    Accounts(#[from] j1msky_accounts::AccountsError),
    #[error(transparent)]
    Gateway(#[from] j1msky_gateway::GatewayError),
    #[error(transparent)]
    Insights(#[from] j1msky_insights::InsightsError),
    #[error(transparent)]
    Tasks(#[from] j1msky_tasks::TaskError),
    #[error(transparent)]
    Backup(#[from] crate::backup::BackupError),
}

impl From<sqlx::Error> for NotifyError {
    fn from(e: sqlx::Error) -> Self {
        NotifyError::Db(DbError::from(e))
    }
}

/// What delivering alerts and reports needs besides the operations' context.
#[derive(Clone)]
pub struct Notifier {
    pub ops: crate::Ctx,
    /// Where `operator_alert` and `operator_review` templates are read from.
    pub templates_dir: PathBuf,
    /// The public base URL links point to (`/admin/alerts`).
    pub base_url: String,
    /// A webhook URL given instead of the catalogue's variable (tests, `alert test
    /// --webhook`); `None`: read the variable the catalogue in force names at each use.
    webhook_override: Option<Option<String>>,
    pub http: reqwest::Client,
}

impl Notifier {
    /// A notifier whose webhook URL is read from the environment variable the catalogue
    /// in force names (`alerts.webhook_url_env`; unset or empty: no webhook).
    pub fn new(ops: crate::Ctx, templates_dir: PathBuf, base_url: &str) -> Notifier {
        Notifier {
            ops,
            templates_dir,
            base_url: base_url.trim_end_matches('/').to_string(),
            webhook_override: None,
            http: reqwest::Client::builder().timeout(std::time::Duration::from_secs(10)).build().unwrap_or_default(),
        }
    }

    /// The same notifier posting to `url` instead (tests, `alert test --webhook`).
    pub fn with_webhook(mut self, url: Option<String>) -> Notifier {
        self.webhook_override = Some(url);
        self
    }

    /// The Slack-compatible webhook; `None`: no webhook channel. Read at each use, so an
    /// applied catalogue naming another variable takes effect without a restart.
    pub fn webhook_url(&self) -> Option<String> {
        match &self.webhook_override {
            Some(url) => url.clone(),
            None => std::env::var(&self.ops.catalogue.alerts.webhook_url_env).ok().filter(|u| !u.trim().is_empty()),
        }
    }

    /// The channels alerts go out on.
    pub fn channels(&self) -> Vec<&'static str> {
        let mut out = vec![MAIL];
        if self.webhook_url().is_some() {
            out.push(WEBHOOK);
        }
        out
    }

    /// The timers of alert delivery and the hourly checks (all of ops' timers:
    /// [`crate::timers::handlers`]).
    pub fn timer_handlers(&self, h: j1msky_db::timers::Handlers) -> j1msky_db::timers::Handlers {
        let h = h.on(WEBHOOK_TIMER, webhook_timer_handler(self.clone()));
        let h = h.on(DIGEST_TIMER, digest_timer_handler(self.clone()));
        spike::timer_handlers(self, h)
    }
}

/// Who operator mail goes to: the catalogue's `alerts.recipients`, else every operator
/// who can sign in.
pub async fn recipients(ops: &crate::Ctx) -> Result<Vec<String>, NotifyError> {
    let listed = &ops.catalogue.alerts.recipients;
    if !listed.is_empty() {
        return Ok(listed.clone());
    }
    let operators = j1msky_accounts::users::active_operators(&ops.db).await?;
    Ok(operators.into_iter().map(|u| u.email).collect())
}

/// One channel's delivery of an alert, as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Delivery {
    pub alert_id: String,
    pub channel: String,
    /// `queued` (mail handed to the queue), `pending`/`retrying` (webhook), `sent`,
    /// `held` (over the hourly limit), `summarised` (in a digest), `failed`.
    pub state: String,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub updated_at: i64,
}

/// The deliveries of the given alerts.
pub async fn deliveries(db: &Db, alert_ids: &[String]) -> Result<Vec<Delivery>, NotifyError> {
    let mut out = Vec::new();
    for chunk in alert_ids.chunks(100) {
        let marks: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT alert_id, channel, state, attempts, last_error, updated_at FROM ops_alert_deliveries
             WHERE alert_id IN ({}) ORDER BY alert_id, channel",
            marks.join(", ")
        );
        let mut q = sqlx::query(&sql);
        for id in chunk {
            q = q.bind(id);
        }
        for r in q.fetch_all(db.pool()).await? {
            out.push(Delivery {
                alert_id: r.try_get(0)?,
                channel: r.try_get(1)?,
                state: r.try_get(2)?,
                attempts: r.try_get(3)?,
                last_error: r.try_get(4)?,
                updated_at: r.try_get(5)?,
            });
        }
    }
    Ok(out)
}

/// The one-line text of an alert, as the webhook and the digest show it.
pub fn alert_line(kind: &str, message: &str) -> String {
    format!("[{kind}] {message}")
}
