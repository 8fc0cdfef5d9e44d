//! `/v1/messages` in Anthropic's format.

use std::convert::Infallible;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::StreamExt;
use j1msky_gateway::chat::{ChatRequest, Speaker, StopReason, StreamEvent, Turn};
use serde_json::{json, Value};

use super::openai::annotate;
use super::{
    authenticate, check_max_tokens, content_text, context, detached_complete, detached_stream, optional_bool,
    optional_number, stop_sequences, Failure,
};
use crate::state::AppState;

fn error(f: Failure) -> Response {
    let kind = match f.status.as_u16() {
        400 => "invalid_request_error",
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        _ => "api_error",
    };
    let body = json!({"type": "error", "error": {"type": kind, "message": f.message}});
    let mut resp = (f.status, Json(body)).into_response();
    f.headers(&mut resp);
    resp
}

fn parse(body: &[u8]) -> Result<(Option<String>, ChatRequest, bool), Failure> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| Failure::invalid("body", format!("the body is not valid JSON: {e}")))?;
    let model = match &v["model"] {
        Value::String(s) => Some(s.clone()),
        _ => return Err(Failure::invalid("model", "model: field required (a string)")),
    };
    let Some(max) = v["max_tokens"].as_u64() else {
        return Err(Failure::invalid("max_tokens", "max_tokens: field required (a positive integer)"));
    };
    let max_tokens = check_max_tokens(max)?;
    let Some(messages) = v["messages"].as_array() else {
        return Err(Failure::invalid("messages", "messages: field required (an array)"));
    };
    let mut turns = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let text = content_text(&m["content"], "messages")?;
        let speaker = match m["role"].as_str() {
            Some("user") => Speaker::User,
            Some("assistant") => Speaker::Assistant,
            other => {
                return Err(Failure::invalid(
                    "messages",
                    format!("messages.{i}.role: `{}` is not user or assistant", other.unwrap_or("?")),
                ))
            }
        };
        turns.push(Turn { speaker, text });
    }
    if turns.is_empty() {
        return Err(Failure::invalid("messages", "messages: at least one message is required"));
    }
    let system = match &v["system"] {
        Value::Null => None,
        other => Some(content_text(other, "system")?),
    };
    let stop = stop_sequences(&v, "stop_sequences", false)?;
    let temperature = optional_number(&v, "temperature")?;
    let stream = optional_bool(&v, "stream")?.unwrap_or(false);
    let req = ChatRequest { system, turns, max_tokens, temperature, stop };
    Ok((model, req, stream))
}

fn stop_reason(stop: StopReason) -> &'static str {
    match stop {
        StopReason::End => "end_turn",
        StopReason::Length => "max_tokens",
    }
}

/// `POST /v1/messages`.
#[utoipa::path(post, path = "/v1/messages", tag = "models", security(("bearer" = []), ("x_api_key" = [])),
    request_body = crate::openapi::llm_schemas::MessagesRequest,
    responses((status = 200, description = "The message, or with `stream` its events as server-sent events.",
        content((crate::openapi::llm_schemas::Message = "application/json"), (crate::openapi::llm_schemas::ServerSentEvent = "text/event-stream"))),
        crate::openapi::responses::AnthropicErrors))]
pub async fn messages(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    match run(state, headers, body).await {
        Ok(r) => r,
        Err(f) => error(f),
    }
}

fn sse(name: &'static str, data: Value) -> Result<Event, Infallible> {
    Ok(Event::default().event(name).data(data.to_string()))
}

async fn run(state: AppState, headers: HeaderMap, body: Bytes) -> Result<Response, Failure> {
    let customer = authenticate(&state, &headers).await?;
    let (model, req, stream) = parse(&body)?;
    let gateway = super::gateway_of(&state)?;
    let ctx = context(customer, &headers);
    let id = format!("msg_{}", ctx.request_id);
    if !stream {
        let done = detached_complete(gateway, &ctx, model.as_deref(), &req)
            .await
            .map_err(|f| f.for_request(&ctx.request_id))?;
        let body = json!({
            "id": id, "type": "message", "role": "assistant", "model": done.model,
            "content": [{"type": "text", "text": done.response.text}],
            "stop_reason": stop_reason(done.response.stop), "stop_sequence": null,
            "usage": {"input_tokens": done.response.usage.input_tokens, "output_tokens": done.response.usage.output_tokens},
        });
        let mut resp = Json(body).into_response();
        annotate(&mut resp, &ctx.request_id, &done.model, &done.requested, Some(done.cost.micros()));
        return Ok(resp);
    }
    let upstream =
        detached_stream(gateway, &ctx, model.as_deref(), &req).await.map_err(|f| f.for_request(&ctx.request_id))?;
    let used = upstream.model.clone();
    let requested = upstream.requested.clone();
    let estimate = req.estimated_input_tokens();
    let start = [
        sse(
            "message_start",
            json!({"type": "message_start", "message": {"id": id, "type": "message", "role": "assistant", "model": used,
                "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": estimate, "output_tokens": 1}}}),
        ),
        sse(
            "content_block_start",
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ),
        sse("ping", json!({"type": "ping"})),
    ];
    let events = upstream.flat_map(|item| {
        let frames = match item {
            Ok(StreamEvent::Delta(text)) => vec![sse(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}}),
            )],
            Ok(StreamEvent::Reasoning(_) | StreamEvent::Prompt(_)) => vec![],
            Ok(StreamEvent::Done { stop, usage }) => {
                let u = usage.unwrap_or_default();
                vec![
                    sse("content_block_stop", json!({"type": "content_block_stop", "index": 0})),
                    sse(
                        "message_delta",
                        json!({"type": "message_delta", "delta": {"stop_reason": stop_reason(stop), "stop_sequence": null},
                               "usage": {"input_tokens": u.input_tokens, "output_tokens": u.output_tokens}}),
                    ),
                    sse("message_stop", json!({"type": "message_stop"})),
                ]
            }
            Err(e) => vec![sse("error", json!({"type": "error", "error": {"type": "api_error", "message": e.to_string()}}))],
        };
        futures::stream::iter(frames)
    });
    let mut resp = Sse::new(futures::stream::iter(start).chain(events)).into_response();
    annotate(&mut resp, &ctx.request_id, &used, &requested, None);
    Ok(resp)
}
