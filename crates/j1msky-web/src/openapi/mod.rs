//! The OpenAPI 3.1 document of the JSON surfaces (`/api/v1`, the model endpoints under
//! `/v1` and the Stripe webhook), generated with utoipa from the `#[utoipa::path]`
//! attributes on the handlers themselves; served, without a login, at
//! `GET /api/v1/openapi.json`.

pub mod llm_schemas;
pub mod responses;
pub mod schemas;

use std::sync::OnceLock;

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::nav::NavEntry;
use crate::state::AppState;

/// The document as utoipa builds it from the handlers' attributes.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "j1msky API",
        description = "The customer API (`/api/v1`), the OpenAI- and Anthropic-compatible model endpoints \
                       (`/v1`) and the Stripe webhook endpoint. Money is integer micro-USD unless a field \
                       says otherwise; times are unix microseconds."
    ),
    paths(
        crate::accounts::api::me,
        crate::accounts::api::list_keys,
        crate::accounts::api::create_key,
        crate::accounts::api::revoke_key,
        crate::tasks::api::list,
        crate::tasks::api::submit,
        crate::tasks::api::show,
        crate::tasks::api::cancel,
        crate::tasks::api::templates,
        crate::gateway::llm::openai::chat_completions,
        crate::gateway::llm::openai::models,
        crate::gateway::llm::anthropic::messages,
        crate::billing::hooks::stripe,
        document,
    ),
    components(schemas(schemas::ErrorBody, llm_schemas::OpenAiError, llm_schemas::AnthropicError, llm_schemas::ChatMessage)),
    modifiers(&Credentials),
    tags(
        (name = "account", description = "Who is calling, and the customer's API keys."),
        (name = "tasks", description = "Tasks handed to the agent teams."),
        (name = "models", description = "Model calls, metered and capped like a task's."),
        (name = "webhooks", description = "Events from Stripe."),
        (name = "meta", description = "This document."),
    )
)]
pub struct ApiDoc;

/// The ways to authenticate: an API key as a bearer token or in `x-api-key`, or a
/// browser session (whose state-changing calls also send `X-CSRF-Token`).
struct Credentials;

impl Modify for Credentials {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("jk_…").build()),
        );
        components
            .add_security_scheme("x_api_key", SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("x-api-key"))));
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new(crate::auth::SESSION_COOKIE))),
        );
    }
}

/// The document as JSON, built once.
pub fn document_json() -> &'static str {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| match ApiDoc::openapi().to_pretty_json() {
        Ok(json) => json,
        // Cannot happen for utoipa's own types; an empty object still parses.
        Err(e) => {
            tracing::error!(error = %e, "cannot serialise the OpenAPI document");
            "{}".into()
        }
    })
}

/// This document: the API's operations and their request and response shapes.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "meta", security(()),
    responses((status = 200, description = "The OpenAPI 3.1 document.", content_type = "application/json", body = Object)))]
pub async fn document() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], document_json())
}

/// No navigation: the document is for programs.
pub const NAV: &[NavEntry] = &[];

/// `GET /api/v1/openapi.json`.
pub fn router() -> Router<AppState> {
    Router::new().route("/api/v1/openapi.json", get(document))
}
