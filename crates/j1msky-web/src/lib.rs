//! The j1msky HTTP surface. Handlers are thin: extract, authorise, call one
//! domain function, render.

mod api;
pub mod auth;
mod bearer;
mod billing_hooks;
mod billing_pages;
mod cost_banner;
mod csrf;
mod error;
mod events_pages;
mod gateway_pages;
pub mod llm;
mod metrics_layer;
mod pages;
pub mod render;
mod security_headers;
mod server;
mod state;
mod task_pages;
mod tasks_api;
mod text_guard;

pub use error::ApiError;
pub use server::{router, serve};
pub use state::{AppState, WebConfig};
