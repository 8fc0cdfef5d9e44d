//! The lifecycle engine: onboarding journeys (day 0 → 30), retention triggers, mail
//! delivered exactly once, surveys, staff to-dos and the newsletter. It is a set of
//! consumers on the event backbone plus durable timers; it owns the `lifecycle_*`
//! tables. Billing keeps offers and the cancel flow: this crate calls it.
//!
//! Modules and what they own:
//! - `delivery`, `transport`: the message queue (`lifecycle_messages`), suppressions,
//!   the send-time rules (consent, frequency caps, quiet hours) and SMTP / file transports.
//! - `templates`: operator-editable templates under `config/templates/`.
//! - `journeys`: enrollments pinned to a journey version, the step engine and its timers.
//! - `triggers`: inactivity, limit hits, low success, high usage, dunning, trial end,
//!   portal cancels, churn spikes.
//! - `todos`, `surveys`, `newsletter`: staff to-dos, NPS / exit / testimonial answers,
//!   operator-composed newsletters.

pub mod context;
pub mod delivery;
pub mod error;
pub mod journeys;
pub mod newsletter;
pub mod surveys;
pub mod templates;
pub mod todos;
pub mod transport;
pub mod triggers;

pub use context::Ctx;
pub use error::LifecycleError;

use j1msky_db::consumers::Consumer;
use j1msky_db::timers::Handlers;

/// Every consumer of the lifecycle engine, run by the `reactions` role.
pub fn consumers(ctx: &Ctx) -> Vec<Consumer> {
    let mut all = journeys::consumers(ctx);
    all.extend(triggers::consumers(ctx));
    all.extend(surveys::consumers(ctx));
    all
}

/// The lifecycle engine's durable timers (journey steps, sweeps, newsletter batches).
pub fn timer_handlers(ctx: &Ctx) -> Handlers {
    let h = Handlers::new();
    let h = journeys::timer_handlers(ctx, h);
    let h = triggers::timer_handlers(ctx, h);
    newsletter::timer_handlers(ctx, h)
}
