//! The j1msky HTTP surface. Handlers are thin: extract, authorise, call one
//! domain function, render.

// Shared plumbing.
pub mod auth;
mod bearer;
mod cost_banner;
mod csrf;
mod error;
mod metrics_layer;
mod nav;
pub mod render;
mod security_headers;
mod server;
mod state;
pub mod templates;
mod text_guard;
mod todo_counts;

// The areas, each with its pages, API handlers, router and navigation entries
// (registered in `server::AREAS`).
mod accounts;
mod billing;
mod events;
pub mod gateway;
mod insights;
mod lifecycle;
pub mod openapi;
mod ops;
mod tasks;

pub use gateway::llm;

pub use error::ApiError;
pub use server::{router, serve};
pub use state::{AppState, WebConfig};
