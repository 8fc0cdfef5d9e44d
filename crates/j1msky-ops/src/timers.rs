//! Ops' durable timers in one place: alert delivery and the hourly checks (`notify`),
//! the report mails (`reports`) and the trials' ends and freed pilot slots (`leads`),
//! fired by one loop of the `reactions` role.

use j1msky_db::timers::Handlers;

use crate::notify::Notifier;

/// Every timer handler of alert delivery, the checks, the report mails and the trials.
pub fn handlers(n: &Notifier) -> Handlers {
    let h = crate::reports::timer_handlers(n, n.timer_handlers(Handlers::new()));
    let mailer = crate::leads::Mailer { templates_dir: n.templates_dir.clone(), base_url: n.base_url.clone() };
    let h = crate::leads::ending::timer_handlers(&n.ops, &mailer, h);
    crate::leads::next::timer_handlers(&n.ops, &mailer, h)
}

/// Seeds the hourly check, the next report mails and the running trials' ends, then
/// fires ops' timers until `stop` (the `reactions` role runs it through the runtime).
pub async fn run(n: Notifier, stop: tokio::sync::watch::Receiver<bool>) {
    let handlers = handlers(&n);
    let now = n.ops.clock.now_micros();
    if let Err(e) = handlers.schedule_recurring(&n.ops.db, now).await {
        tracing::warn!(error = %e, "could not seed the hourly alert checks");
    }
    if let Err(e) = crate::reports::schedule(&n.ops, now).await {
        tracing::warn!(error = %e, "could not schedule the report mails");
    }
    if let Err(e) = crate::leads::ending::seed(&n.ops, now).await {
        tracing::warn!(error = %e, "could not schedule the running trials' ends");
    }
    j1msky_db::timers::run(n.ops.db.clone(), handlers, n.ops.clock.clone(), stop).await;
}
