//! Insights: the operator's board (`/admin`), the morning and evening reviews, the
//! acquisition spend behind CAC and the CSV exports of every table on them.

mod board;
mod review;
mod spend;

use axum::Router;

use crate::nav::NavEntry;
use crate::state::AppState;

pub const NAV: &[NavEntry] = &[];

pub fn router() -> Router<AppState> {
    Router::new().merge(board::router()).merge(review::router()).merge(spend::router())
}
