//! Ops' durable timers in one place: alert delivery and the hourly checks (`notify`) and
//! the report mails (`reports`), fired by one loop of the `reactions` role.

use j1msky_db::timers::Handlers;

use crate::notify::Notifier;

/// Every timer handler of alert delivery, the checks and the report mails.
pub fn handlers(n: &Notifier) -> Handlers {
    crate::reports::timer_handlers(n, n.timer_handlers(Handlers::new()))
}

/// Seeds the hourly check and the next report mails, then fires ops' timers until
/// `stop` (the `reactions` role runs it through the runtime).
pub async fn run(n: Notifier, stop: tokio::sync::watch::Receiver<bool>) {
    let handlers = handlers(&n);
    let now = n.ops.clock.now_micros();
    if let Err(e) = handlers.schedule_recurring(&n.ops.db, now).await {
        tracing::warn!(error = %e, "could not seed the hourly alert checks");
    }
    if let Err(e) = crate::reports::schedule(&n.ops, now).await {
        tracing::warn!(error = %e, "could not schedule the report mails");
    }
    j1msky_db::timers::run(n.ops.db.clone(), handlers, n.ops.clock.clone(), stop).await;
}
