//! `/v1/chat/completions` and `/v1/models` in OpenAI's format.

use std::convert::Infallible;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::StreamExt;
use j1msky_gateway::chat::{ChatRequest, Speaker, StopReason, StreamEvent, Turn};
use serde_json::{json, Value};

use super::{
    authenticate, check_max_tokens, content_text, context, detached_complete, detached_stream, optional_bool,
    optional_number, stop_sequences, Failure, DEFAULT_MAX_TOKENS,
};
use crate::state::AppState;

fn error(f: Failure) -> Response {
    let kind = match f.status.as_u16() {
        401 => "authentication_error",
        429 => "rate_limit_error",
        400 | 404 => "invalid_request_error",
        402 => "insufficient_quota",
        500..=599 => "server_error",
        _ => "invalid_request_error",
    };
    let body = json!({"error": {"message": f.message, "type": kind, "param": f.param, "code": f.code}});
    let mut resp = (f.status, Json(body)).into_response();
    f.headers(&mut resp);
    resp
}

/// The request in the gateway's terms, plus the model asked for and whether to stream.
fn parse(body: &[u8]) -> Result<(Option<String>, ChatRequest, bool, bool), Failure> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| Failure::invalid("body", format!("the body is not valid JSON: {e}")))?;
    let model = match &v["model"] {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        _ => return Err(Failure::invalid("model", "model must be a string")),
    };
    let Some(messages) = v["messages"].as_array() else {
        return Err(Failure::invalid("messages", "messages is required and must be an array"));
    };
    let mut system: Vec<String> = Vec::new();
    let mut turns = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let text = content_text(&m["content"], "messages")?;
        match m["role"].as_str() {
            Some("system") | Some("developer") => system.push(text),
            Some("user") => turns.push(Turn { speaker: Speaker::User, text }),
            Some("assistant") => turns.push(Turn { speaker: Speaker::Assistant, text }),
            other => {
                return Err(Failure::invalid(
                    "messages",
                    format!(
                        "messages[{i}].role `{}` is not supported (system, developer, user, assistant)",
                        other.unwrap_or("?")
                    ),
                ))
            }
        }
    }
    if turns.is_empty() {
        return Err(Failure::invalid("messages", "messages must contain at least one user message"));
    }
    // Each one given must be a positive integer, even the one not used.
    let read = |field: &'static str| match &v[field] {
        Value::Null => Ok(None),
        n => n.as_u64().map(Some).ok_or_else(|| Failure::invalid(field, format!("{field} must be a positive integer"))),
    };
    let (completion, max_tokens) = (read("max_completion_tokens")?, read("max_tokens")?);
    if let (Some(_), Some(n)) = (completion, max_tokens) {
        check_max_tokens(n)?;
    }
    let max = completion.or(max_tokens);
    let max_tokens = check_max_tokens(max.unwrap_or(u64::from(DEFAULT_MAX_TOKENS)))?;
    let stop = stop_sequences(&v, "stop", true)?;
    let stream = optional_bool(&v, "stream")?.unwrap_or(false);
    let include_usage = match &v["stream_options"] {
        Value::Null => false,
        options @ Value::Object(_) => optional_bool(options, "include_usage")?.unwrap_or(false),
        _ => return Err(Failure::invalid("stream_options", "stream_options must be an object")),
    };
    let temperature = optional_number(&v, "temperature")?;
    let req = ChatRequest {
        system: if system.is_empty() { None } else { Some(system.join("\n\n")) },
        turns,
        max_tokens,
        temperature,
        stop,
    };
    Ok((model, req, stream, include_usage))
}

fn finish_reason(stop: StopReason) -> &'static str {
    match stop {
        StopReason::End => "stop",
        StopReason::Length => "length",
    }
}

/// `POST /v1/chat/completions`.
#[utoipa::path(post, path = "/v1/chat/completions", tag = "models", security(("bearer" = []), ("x_api_key" = [])),
    request_body = crate::openapi::llm_schemas::ChatCompletionRequest,
    responses((status = 200, description = "The completion, or with `stream` its chunks as server-sent events.",
        content((crate::openapi::llm_schemas::ChatCompletion = "application/json"), (crate::openapi::llm_schemas::ServerSentEvent = "text/event-stream"))),
        crate::openapi::responses::OpenAiErrors))]
pub async fn chat_completions(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    match run(state, headers, body).await {
        Ok(r) => r,
        Err(f) => error(f),
    }
}

async fn run(state: AppState, headers: HeaderMap, body: Bytes) -> Result<Response, Failure> {
    let customer = authenticate(&state, &headers).await?;
    let (model, req, stream, include_usage) = parse(&body)?;
    let gateway = super::gateway_of(&state)?;
    let ctx = context(customer, &headers);
    let id = format!("chatcmpl-{}", ctx.request_id);
    let created = state.now() / 1_000_000;
    if !stream {
        let done = detached_complete(gateway, &ctx, model.as_deref(), &req)
            .await
            .map_err(|f| f.for_request(&ctx.request_id))?;
        let u = done.response.usage;
        let body = json!({
            "id": id, "object": "chat.completion", "created": created, "model": done.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": done.response.text, "refusal": null},
                         "logprobs": null, "finish_reason": finish_reason(done.response.stop)}],
            "usage": {"prompt_tokens": u.input_tokens, "completion_tokens": u.output_tokens,
                      "total_tokens": u.input_tokens + u.output_tokens},
            "system_fingerprint": null,
        });
        let mut resp = Json(body).into_response();
        annotate(&mut resp, &ctx.request_id, &done.model, &done.requested, Some(done.cost.micros()));
        return Ok(resp);
    }
    let upstream =
        detached_stream(gateway, &ctx, model.as_deref(), &req).await.map_err(|f| f.for_request(&ctx.request_id))?;
    let model_used = upstream.model.clone();
    let chunk = move |delta: Value, finish: Option<&str>| {
        json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": model_used,
               "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]})
    };
    let first = chunk(json!({"role": "assistant", "content": ""}), None);
    let used = upstream.model.clone();
    let requested = upstream.requested.clone();
    let events = upstream.flat_map(move |item| {
        let frames: Vec<Value> = match item {
            Ok(StreamEvent::Delta(text)) => vec![chunk(json!({"content": text}), None)],
            Ok(StreamEvent::Reasoning(_) | StreamEvent::Prompt(_)) => vec![],
            Ok(StreamEvent::Done { stop, usage }) => {
                let mut v = vec![chunk(json!({}), Some(finish_reason(stop)))];
                if include_usage {
                    let u = usage.unwrap_or_default();
                    let mut last = chunk(json!({}), None);
                    last["choices"] = json!([]);
                    last["usage"] = json!({"prompt_tokens": u.input_tokens, "completion_tokens": u.output_tokens,
                                           "total_tokens": u.input_tokens + u.output_tokens});
                    v.push(last);
                }
                v
            }
            Err(e) => vec![json!({"error": {"message": e.to_string(), "type": "server_error", "param": null, "code": e.outcome()}})],
        };
        futures::stream::iter(frames.into_iter().map(|f| Ok::<_, Infallible>(Event::default().data(f.to_string()))))
    });
    let all = futures::stream::once(async move { Ok::<_, Infallible>(Event::default().data(first.to_string())) })
        .chain(events)
        .chain(futures::stream::once(async { Ok(Event::default().data("[DONE]")) }));
    let mut resp = Sse::new(all).into_response();
    annotate(&mut resp, &ctx.request_id, &used, &requested, None);
    Ok(resp)
}

/// Tells the caller which request, which model and what it cost; and, when another
/// model answered than the one asked for (plan reroute, cost mode, fallback), which
/// one was asked for.
pub fn annotate(resp: &mut Response, request_id: &str, model: &str, requested: &str, cost_micros: Option<i64>) {
    let h = resp.headers_mut();
    if model != requested {
        if let Ok(v) = HeaderValue::from_str(requested) {
            h.insert("x-j1msky-rerouted-from", v);
        }
    }
    if let Ok(v) = HeaderValue::from_str(request_id) {
        h.insert("x-request-id", v);
    }
    if let Ok(v) = HeaderValue::from_str(model) {
        h.insert("x-j1msky-model", v);
    }
    if let Some(c) = cost_micros.and_then(|c| HeaderValue::from_str(&c.to_string()).ok()) {
        h.insert("x-j1msky-cost-micros", c);
    }
}

/// `GET /v1/models`: the catalogue's models, for an API key.
#[utoipa::path(get, path = "/v1/models", tag = "models", security(("bearer" = []), ("x_api_key" = [])),
    responses((status = 200, description = "The models the caller's plan allows, and `auto`.", body = crate::openapi::llm_schemas::ModelList),
        crate::openapi::responses::OpenAiErrors))]
pub async fn models(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let customer_id = match authenticate(&state, &headers).await {
        Ok(id) => id,
        Err(f) => return error(f),
    };
    // Only the models the customer's plan allows (every model when the plan sets no list).
    let plan = match j1msky_accounts::customers::get(&state.db, &customer_id).await {
        Ok(c) => c.plan,
        Err(e) => return error(crate::error::ApiError::from(e).into()),
    };
    let allowed = plan.as_deref().and_then(|p| state.catalogue.plans.get(p)).and_then(|p| p.models.as_ref());
    let created = state.now() / 1_000_000;
    let data: Vec<Value> = state
        .catalogue
        .models
        .iter()
        .filter(|(id, _)| allowed.is_none_or(|list| list.contains(id)))
        .map(|(id, m)| json!({"id": id, "object": "model", "created": created, "owned_by": m.provider}))
        .chain(std::iter::once(json!({"id": "auto", "object": "model", "created": created, "owned_by": "j1msky"})))
        .collect();
    Json(json!({"object": "list", "data": data})).into_response()
}
