//! Accounts: login and sessions, operators' customer pages, customers' account page and
//! API keys, `/api/v1/me` and `/api/v1/keys`.

pub(crate) mod api;
mod pages;

use axum::routing::{delete, get, post};
use axum::Router;

use crate::nav::NavEntry;
use crate::state::AppState;

pub use pages::not_found;

pub const NAV: &[NavEntry] = &[
    NavEntry::operator("customers", "Customers", "/admin/customers"),
    NavEntry::customer("account", "Account", "/app"),
];

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(pages::root))
        .route("/login", get(pages::login_form).post(pages::login))
        .route("/logout", post(pages::logout))
        .route("/admin/customers", get(pages::admin_customers).post(pages::admin_create_customer))
        .route("/admin/customers/{id}", get(pages::admin_customer))
        .route("/admin/customers/{id}/stage", post(pages::admin_set_stage))
        .route("/admin/customers/{id}/disputes/{dispute}/release", post(pages::admin_release_dispute))
        .route("/app", get(pages::app_home))
        .route("/app/keys", post(pages::app_create_key))
        .route("/app/keys/{id}/revoke", post(pages::app_revoke_key))
        .route("/api/v1/me", get(api::me))
        .route("/api/v1/keys", get(api::list_keys).post(api::create_key))
        .route("/api/v1/keys/{id}", delete(api::revoke_key))
}
