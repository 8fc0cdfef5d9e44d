//! Insights: the operator's board (`/admin`), the morning and evening reviews, the
//! acquisition spend behind CAC and the CSV exports of every table on them.

mod board;
mod charts;
mod csv;
mod review;
mod spend;

use axum::Router;

use crate::nav::NavEntry;
use crate::state::AppState;

pub const NAV: &[NavEntry] = &[
    NavEntry::operator("board", "Board", "/admin"),
    NavEntry::operator("reviews", "Reviews", "/admin/review/morning"),
];

pub fn router() -> Router<AppState> {
    Router::new().merge(board::router()).merge(review::router()).merge(spend::router())
}
