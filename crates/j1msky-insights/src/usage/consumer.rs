//! The consumer `insights.usage`: each task outcome, metered API day, paid invoice and
//! refund settles its source's contribution to the rollups, then recomputes the split
//! of the customer months it changed (`split::refresh`); a plan change recomputes the
//! customer's months. All inside the consumer's transaction (so each event's effect
//! commits once with the cursor).

use chrono_tz::Tz;
use j1msky_core::events::{Kind, Typed};
use j1msky_db::consumers::{Consumer, Handled, Handler, HandlerError, OnFailure};
use j1msky_db::outbox::Event;
use j1msky_db::Backend;
use sqlx::AnyConnection;

use super::{parts, split};
use crate::InsightsError;

/// The consumer's name (its cursor in `consumer_cursors`).
pub const CONSUMER: &str = "insights.usage";

/// The kinds it reads.
pub const KINDS: &[Kind] = &[
    Kind::TaskSucceeded,
    Kind::TaskFailed,
    Kind::TaskCancelled,
    Kind::TaskRetried,
    Kind::UsageApiMetered,
    Kind::InvoicePaid,
    Kind::ChargeRefunded,
    Kind::ChargeDisputed,
    Kind::StripeFeeBooked,
    Kind::CustomerPlanChanged,
];

pub fn consumer(tz: Tz) -> Consumer {
    // Small frequent rollup writes: a round of events commits once.
    Consumer::new(CONSUMER, KINDS, OnFailure::SkipAndPark, OnEvent { tz }).batched()
}

struct OnEvent {
    tz: Tz,
}

impl Handler for OnEvent {
    fn handle<'a>(&'a self, conn: &'a mut AnyConnection, _: Backend, event: &'a Event, _: i64) -> Handled<'a> {
        Box::pin(async move { on_event(conn, self.tz, event).await.map_err(|e| Box::new(e) as HandlerError) })
    }
}

/// Settles what `event` is about (what the consumer runs for each event).
pub async fn on_event(conn: &mut AnyConnection, tz: Tz, event: &Event) -> Result<(), InsightsError> {
    if let (Some(Typed::CustomerPlanChanged(_)), Some(customer)) = (event.typed(), event.customer_id.as_deref()) {
        parts::move_plan(conn, customer).await?;
        return split::refresh_customer(conn, customer).await;
    }
    for (month, customer) in settle(conn, tz, event).await? {
        split::refresh(conn, &month, &customer).await?;
    }
    Ok(())
}

async fn settle(conn: &mut AnyConnection, tz: Tz, event: &Event) -> Result<parts::Touched, InsightsError> {
    let Some(typed) = event.typed() else { return Ok(Vec::new()) };
    match typed {
        Typed::TaskSucceeded(p) => task(conn, tz, &p.task_id).await,
        Typed::TaskFailed(p) => task(conn, tz, &p.task_id).await,
        Typed::TaskCancelled(p) => task(conn, tz, &p.task_id).await,
        Typed::TaskRetried(p) => task(conn, tz, &p.task_id).await,
        Typed::UsageApiMetered(p) => {
            let Some(customer) = event.customer_id.as_deref() else { return Ok(Vec::new()) };
            let part = parts::api_day_now(conn, tz, customer, &p.day, p.charge_micros).await?;
            parts::settle_task(conn, &parts::api_day_key(customer, &p.day), Some(part)).await
        }
        Typed::InvoicePaid(p) => {
            // Refunds and disputes of its charge that came first were netted of tax by it.
            let mut touched = parts::settle_revenue(conn, tz, &p.invoice).await?;
            for source in parts::given_back_on_charge_of(conn, &p.invoice).await? {
                touched.extend(parts::settle_revenue(conn, tz, &source).await?);
            }
            Ok(touched)
        }
        Typed::StripeFeeBooked(p) => parts::settle_revenue(conn, tz, &p.balance_transaction).await,
        Typed::ChargeRefunded(p) => parts::settle_revenue(conn, tz, &format!("{}:refunded", p.charge)).await,
        // What the dispute took when it opened, and gave back when won (each booked once).
        Typed::ChargeDisputed(p) => {
            let mut touched = parts::settle_revenue(conn, tz, &format!("{}:withdrawn", p.dispute)).await?;
            touched.extend(parts::settle_revenue(conn, tz, &format!("{}:reinstated", p.dispute)).await?);
            Ok(touched)
        }
        _ => Ok(Vec::new()),
    }
}

async fn task(conn: &mut AnyConnection, tz: Tz, id: &str) -> Result<parts::Touched, InsightsError> {
    let now = parts::task_now(conn, tz, id).await?;
    parts::settle_task(conn, id, now).await
}
