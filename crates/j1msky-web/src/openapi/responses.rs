//! The error answers operations share, as `responses(...)` entries: each status with
//! its error body, described once here rather than on every handler.

use std::collections::BTreeMap;

use utoipa::openapi::schema::{AnyOfBuilder, Schema};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Response, ResponseBuilder};
use utoipa::IntoResponses;

/// How an error body looks in each surface's format.
#[derive(Clone, Copy)]
enum Format {
    /// `{"error":{"code","message"}}` (`crate::error::ApiError`).
    Api,
    /// OpenAI's error object, or ours when a shared guard refused the request first.
    OpenAi,
    /// Anthropic's error object, or ours when a shared guard refused the request first.
    Anthropic,
}

fn error_responses(format: Format, list: &[(u16, &str)]) -> BTreeMap<String, RefOr<Response>> {
    let api = || Ref::from_schema_name("ErrorBody");
    // anyOf, not oneOf: an OpenAI-format error also has `code` and `message`.
    let either =
        |own: &str| RefOr::T(Schema::AnyOf(AnyOfBuilder::new().item(Ref::from_schema_name(own)).item(api()).build()));
    let schema: RefOr<Schema> = match format {
        Format::Api => api().into(),
        Format::OpenAi => either("OpenAiError"),
        Format::Anthropic => either("AnthropicError"),
    };
    list.iter()
        .map(|(status, description)| {
            let content = ContentBuilder::new().schema(Some(schema.clone())).build();
            let response = ResponseBuilder::new().description(*description).content("application/json", content);
            (status.to_string(), RefOr::T(response.build()))
        })
        .collect()
}

const UNAUTHORIZED: (u16, &str) = (401, "No valid API key or session (`unauthorized`, `invalid_api_key`).");
const TOO_LARGE: (u16, &str) = (413, "The body is larger than the server accepts.");
const BAD_REQUEST: (u16, &str) = (400, "The body or a query is not readable (`bad_json`, `invalid_text`).");

/// 401 and 403: who may call.
pub struct Caller;

impl IntoResponses for Caller {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        error_responses(
            Format::Api,
            &[UNAUTHORIZED, (403, "The caller may not do this (an operator, a member, or an API key).")],
        )
    }
}

/// The errors of a request with a JSON body.
pub struct Body;

impl IntoResponses for Body {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        error_responses(
            Format::Api,
            &[
                BAD_REQUEST,
                TOO_LARGE,
                (415, "The body is not sent as `application/json`."),
                (422, "A field's value is refused (`invalid`); the message names it."),
            ],
        )
    }
}

/// 400 and 422 for a query string.
pub struct Query;

impl IntoResponses for Query {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        error_responses(Format::Api, &[BAD_REQUEST, (422, "A query value is refused (`invalid`).")])
    }
}

/// 404: missing, or another customer's.
pub struct NotFound;

impl IntoResponses for NotFound {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        error_responses(Format::Api, &[(404, "No such object for this caller (`not_found`).")])
    }
}

/// 409: the object's state forbids it.
pub struct Conflict;

impl IntoResponses for Conflict {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        error_responses(Format::Api, &[(409, "The object's state does not allow it (`conflict`).")])
    }
}

/// What a submitted task may run into: the plan.
pub struct Plan;

impl IntoResponses for Plan {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        error_responses(
            Format::Api,
            &[
                (402, "No active plan, or the plan's monthly task limit is reached (`no_active_plan`, `plan_limit`)."),
                (429, "Too many of the customer's tasks are waiting or running (`too_many_waiting`)."),
            ],
        )
    }
}

/// The webhook's refusals.
pub struct Webhook;

impl IntoResponses for Webhook {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        error_responses(
            Format::Api,
            &[
                (400, "The signature does not match or the event is unreadable (`bad_signature`, `malformed`)."),
                TOO_LARGE,
                (503, "No webhook secret is configured (`billing_not_configured`); Stripe delivers again later."),
            ],
        )
    }
}

const MODEL_ERRORS: &[(u16, &str)] = &[
    (400, "The request is refused; `param` names the field."),
    (401, "No API key, or a wrong or revoked one."),
    (402, "No active plan, or a budget is spent."),
    (403, "The plan does not include the model."),
    (404, "No such model."),
    (413, "The body is larger than the server accepts."),
    (429, "An hourly cap or the upstream's rate limit; `retry-after` says when to try again."),
    (502, "The upstream provider failed."),
    (503, "The gateway or the upstream is unavailable for now."),
    (504, "The upstream provider did not answer in time."),
];

/// The model endpoints' errors, in OpenAI's format.
pub struct OpenAiErrors;

impl IntoResponses for OpenAiErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        error_responses(Format::OpenAi, MODEL_ERRORS)
    }
}

/// The model endpoints' errors, in Anthropic's format.
pub struct AnthropicErrors;

impl IntoResponses for AnthropicErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        error_responses(Format::Anthropic, MODEL_ERRORS)
    }
}
