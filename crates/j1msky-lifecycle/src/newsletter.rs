//! Newsletters composed by the operator, sent to opted-in customers.

use j1msky_db::timers::Handlers;

use crate::Ctx;

/// The newsletter's timers (sending batches).
pub fn timer_handlers(_ctx: &Ctx, h: Handlers) -> Handlers {
    h
}
