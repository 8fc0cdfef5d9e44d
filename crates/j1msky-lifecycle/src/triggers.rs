//! Retention triggers: conditions over customers and events that enroll customers in
//! journeys, open to-dos or raise alerts.

use j1msky_db::consumers::Consumer;
use j1msky_db::timers::Handlers;

use crate::Ctx;

/// The triggers' consumers.
pub fn consumers(_ctx: &Ctx) -> Vec<Consumer> {
    Vec::new()
}

/// The triggers' timers (the periodic sweep).
pub fn timer_handlers(_ctx: &Ctx, h: Handlers) -> Handlers {
    h
}
