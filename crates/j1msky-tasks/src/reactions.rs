//! The tasks crate's reaction to other domains' events. `tasks.sla_rank`: when a
//! customer's plan changes, its tasks still queued take the new plan's SLA level in their
//! rank ([`crate::Priority`]), so a customer who moves onto a plan with an SLA is served
//! (and its waits checked, [`crate::sla_lanes`]) under it at once, and one who moves off
//! it no longer goes before everyone with the tasks it queued before.

use j1msky_core::catalogue::LiveCatalogue;
use j1msky_core::events::{Kind, Typed};
use j1msky_db::consumers::{Consumer, Handled, Handler, OnFailure};
use j1msky_db::outbox::Event;
use j1msky_db::{AnyConnection, Backend};

use crate::TaskError;

/// The consumer's name (its cursor row).
pub const SLA_RANK: &str = "tasks.sla_rank";

/// Every consumer the tasks crate runs.
pub fn consumers(catalogue: &LiveCatalogue) -> Vec<Consumer> {
    // In order: a customer's last plan change wins.
    vec![Consumer::new(SLA_RANK, &[Kind::CustomerPlanChanged], OnFailure::Block, Rerank(catalogue.clone()))]
}

struct Rerank(LiveCatalogue);

impl Handler for Rerank {
    fn handle<'a>(
        &'a self,
        conn: &'a mut AnyConnection,
        _backend: Backend,
        event: &'a Event,
        _now: i64,
    ) -> Handled<'a> {
        Box::pin(async move { Ok(rerank(conn, &self.0, event).await?) })
    }
}

async fn rerank(conn: &mut AnyConnection, catalogue: &LiveCatalogue, event: &Event) -> Result<(), TaskError> {
    let (Some(Typed::CustomerPlanChanged(changed)), Some(customer)) = (event.typed(), event.customer_id.as_deref())
    else {
        return Ok(());
    };
    let catalogue = catalogue.current();
    let level = crate::submit::sla_level(catalogue.plans.get(&changed.to));
    crate::submit::rerank_queued(conn, customer, level).await
}
