//! Operations: backups, configuration history, alerts, leads and trials (`/admin/…`),
//! and the public start page (`/start`).

mod alerts;
mod backups;
mod config;
mod leads;
mod start;

use axum::Router;

use crate::nav::NavEntry;
use crate::state::AppState;

/// Each page adds its entry here.
pub const NAV: &[NavEntry] = &[
    NavEntry::operator("leads", "Leads", "/admin/leads"),
    NavEntry::operator("alerts", "Alerts", "/admin/alerts"),
    NavEntry::operator("backups", "Backups", "/admin/backups"),
    NavEntry::operator("config", "Config", "/admin/config"),
    NavEntry::customer("members", "Members", "/app/members"),
];

pub fn router() -> Router<AppState> {
    Router::new()
        .merge(alerts::router())
        .merge(backups::router())
        .merge(config::router())
        .merge(leads::router())
        .merge(start::router())
}
