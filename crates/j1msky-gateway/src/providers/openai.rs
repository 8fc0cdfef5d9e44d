//! OpenAI-compatible chat completions (Moonshot/Kimi, OpenAI, vLLM, Ollama…).

use futures::{Stream, StreamExt};
use serde::Deserialize;
use serde_json::json;

use super::sse::events;
use super::{EventStream, ProviderClient, UpstreamError};
use crate::chat::{ChatRequest, ChatResponse, Speaker, StopReason, StreamEvent, Usage};

fn body(model: &str, req: &ChatRequest, stream: bool) -> serde_json::Value {
    let mut messages = Vec::with_capacity(req.turns.len() + 1);
    if let Some(system) = &req.system {
        messages.push(json!({"role": "system", "content": system}));
    }
    for t in &req.turns {
        let role = match t.speaker {
            Speaker::User => "user",
            Speaker::Assistant => "assistant",
        };
        messages.push(json!({"role": role, "content": t.text}));
    }
    let mut b = json!({"model": model, "messages": messages, "max_tokens": req.max_tokens, "stream": stream});
    if stream {
        b["stream_options"] = json!({"include_usage": true});
    }
    if let Some(t) = req.temperature {
        b["temperature"] = json!(t);
    }
    if !req.stop.is_empty() {
        b["stop"] = json!(req.stop);
    }
    b
}

#[derive(Deserialize)]
struct WireUsage {
    prompt_tokens: u64,
    completion_tokens: u64,
}

impl From<WireUsage> for Usage {
    fn from(u: WireUsage) -> Usage {
        Usage { input_tokens: u.prompt_tokens, output_tokens: u.completion_tokens }
    }
}

#[derive(Deserialize)]
struct Completion {
    #[serde(default)]
    id: String,
    choices: Vec<Choice>,
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct Choice {
    message: Option<Message>,
    delta: Option<Message>,
    finish_reason: Option<String>,
    /// Moonshot (Kimi) streams its usage here, in the last chunk's choice, rather than
    /// in the chunk-level `usage` OpenAI sends.
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct Message {
    content: Option<String>,
    /// Kimi's thinking, streamed before the answer; its tokens are in the usage.
    reasoning_content: Option<String>,
}

fn stop_reason(finish: Option<&str>) -> StopReason {
    match finish {
        Some("length") => StopReason::Length,
        _ => StopReason::End,
    }
}

pub(super) async fn complete(
    c: &ProviderClient,
    model: &str,
    req: &ChatRequest,
) -> Result<ChatResponse, UpstreamError> {
    let resp = c.post(format!("{}/chat/completions", c.base_url), &body(model, req, false)).await?;
    let bytes = resp.bytes().await.map_err(|e| UpstreamError::from_reqwest(&e))?;
    let parsed: Completion = serde_json::from_slice(&bytes).map_err(|e| UpstreamError::Garbage(e.to_string()))?;
    let usage = parsed.usage.ok_or_else(|| UpstreamError::Garbage("no usage block".into()))?;
    let choice = parsed.choices.into_iter().next().ok_or_else(|| UpstreamError::Garbage("no choices".into()))?;
    Ok(ChatResponse {
        text: choice.message.and_then(|m| m.content).unwrap_or_default(),
        stop: stop_reason(choice.finish_reason.as_deref()),
        usage: usage.into(),
        upstream_id: parsed.id,
    })
}

pub(super) async fn stream(c: &ProviderClient, model: &str, req: &ChatRequest) -> Result<EventStream, UpstreamError> {
    let resp = c.post(format!("{}/chat/completions", c.base_url), &body(model, req, true)).await?;
    Ok(parse(super::sse::chunks(resp)))
}

/// The answer pieces of a streamed body.
pub(super) fn parse(chunks: impl Stream<Item = Result<Vec<u8>, UpstreamError>> + Send + 'static) -> EventStream {
    let mut finish: Option<StopReason> = None;
    let mut usage: Option<Usage> = None;
    let mut done = false;
    let out = events(chunks).flat_map(move |frame| {
        let items: Vec<Result<StreamEvent, UpstreamError>> = match frame {
            Err(e) => vec![Err(e)],
            Ok(frame) if done => {
                let _ = frame;
                vec![]
            }
            Ok(frame) if frame.data.trim() == "[DONE]" => {
                done = true;
                vec![Ok(StreamEvent::Done { stop: finish.unwrap_or(StopReason::End), usage: usage.take() })]
            }
            Ok(frame) => match serde_json::from_str::<Completion>(&frame.data) {
                Err(e) => vec![Err(UpstreamError::Garbage(format!("stream chunk: {e}")))],
                Ok(chunk) => {
                    if let Some(u) = chunk.usage {
                        usage = Some(u.into());
                    }
                    let mut items = Vec::new();
                    for choice in chunk.choices {
                        if let Some(f) = choice.finish_reason.as_deref() {
                            finish = Some(stop_reason(Some(f)));
                        }
                        if let Some(u) = choice.usage {
                            usage = Some(u.into());
                        }
                        let Some(delta) = choice.delta else { continue };
                        if let Some(thought) = delta.reasoning_content.filter(|t| !t.is_empty()) {
                            items.push(Ok(StreamEvent::Reasoning(thought.len() as u64)));
                        }
                        if let Some(text) = delta.content.filter(|t| !t.is_empty()) {
                            items.push(Ok(StreamEvent::Delta(text)));
                        }
                    }
                    items
                }
            },
        };
        futures::stream::iter(items)
    });
    Box::pin(super::sse::require_end(out))
}
