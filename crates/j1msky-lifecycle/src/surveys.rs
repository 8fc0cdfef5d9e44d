//! Surveys: NPS, exit survey for portal cancels, testimonials. Answers are events.

use j1msky_db::consumers::Consumer;

use crate::Ctx;

/// The surveys' consumers.
pub fn consumers(_ctx: &Ctx) -> Vec<Consumer> {
    Vec::new()
}
