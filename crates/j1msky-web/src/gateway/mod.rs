//! The model gateway: the operators' gateway page and controls, and the customer-facing
//! model API (`/v1`, in [`llm`]).

pub mod llm;
mod pages;

use axum::routing::{get, post};
use axum::Router;

use crate::nav::NavEntry;
use crate::state::AppState;

pub use pages::with_controls;

pub const NAV: &[NavEntry] = &[NavEntry::operator("gateway", "Gateway", "/admin/gateway")];

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin/gateway", get(pages::page))
        .route("/admin/gateway/mode", post(pages::set_mode))
        .route("/admin/gateway/caps", post(pages::set_cap))
        .route("/admin/gateway/budget", post(pages::set_budget))
        .route("/admin/gateway/customer-budget", post(pages::set_customer_budget))
        .route("/v1/chat/completions", post(llm::openai::chat_completions))
        .route("/v1/models", get(llm::openai::models))
        .route("/v1/messages", post(llm::anthropic::messages))
}
