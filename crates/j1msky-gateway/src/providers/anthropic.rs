//! Anthropic Messages.

use futures::{Stream, StreamExt};
use serde::Deserialize;
use serde_json::json;

use super::sse::events;
use super::{EventStream, ProviderClient, UpstreamError};
use crate::chat::{ChatRequest, ChatResponse, Speaker, StopReason, StreamEvent, Usage};

fn body(model: &str, req: &ChatRequest, stream: bool) -> serde_json::Value {
    let messages: Vec<serde_json::Value> = req
        .turns
        .iter()
        .map(|t| {
            let role = match t.speaker {
                Speaker::User => "user",
                Speaker::Assistant => "assistant",
            };
            json!({"role": role, "content": t.text})
        })
        .collect();
    let mut b = json!({"model": model, "messages": messages, "max_tokens": req.max_tokens, "stream": stream});
    if let Some(system) = &req.system {
        b["system"] = json!(system);
    }
    if let Some(t) = req.temperature {
        b["temperature"] = json!(t);
    }
    if !req.stop.is_empty() {
        b["stop_sequences"] = json!(req.stop);
    }
    b
}

#[derive(Deserialize, Default)]
struct WireUsage {
    #[serde(default)]
    input_tokens: u64,
    #[serde(default)]
    output_tokens: u64,
}

#[derive(Deserialize)]
struct Message {
    #[serde(default)]
    id: String,
    content: Vec<Block>,
    stop_reason: Option<String>,
    usage: MessageUsage,
}

/// A whole answer's usage: both counts required (an answer that does not say what it
/// used is refused as garbage, as an OpenAI-format answer without `usage` is, rather than
/// recorded as free).
#[derive(Deserialize)]
struct MessageUsage {
    input_tokens: u64,
    output_tokens: u64,
}

#[derive(Deserialize)]
struct Block {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: String,
}

fn stop_reason(reason: Option<&str>) -> StopReason {
    match reason {
        Some("max_tokens") => StopReason::Length,
        _ => StopReason::End,
    }
}

pub(super) async fn complete(
    c: &ProviderClient,
    model: &str,
    req: &ChatRequest,
) -> Result<ChatResponse, UpstreamError> {
    let resp = c.post(format!("{}/v1/messages", c.base_url), &body(model, req, false)).await?;
    let bytes = resp.bytes().await.map_err(|e| UpstreamError::from_reqwest(&e))?;
    let m: Message = serde_json::from_slice(&bytes).map_err(|e| UpstreamError::Garbage(e.to_string()))?;
    let text = m.content.iter().filter(|b| b.kind == "text").map(|b| b.text.as_str()).collect::<String>();
    Ok(ChatResponse {
        text,
        stop: stop_reason(m.stop_reason.as_deref()),
        usage: Usage { input_tokens: m.usage.input_tokens, output_tokens: m.usage.output_tokens },
        upstream_id: m.id,
    })
}

#[derive(Deserialize)]
struct StreamFrame {
    #[serde(rename = "type")]
    kind: String,
    message: Option<StartMessage>,
    delta: Option<Delta>,
    usage: Option<WireUsage>,
    error: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct StartMessage {
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct Delta {
    #[serde(rename = "type")]
    kind: Option<String>,
    text: Option<String>,
    stop_reason: Option<String>,
}

pub(super) async fn stream(c: &ProviderClient, model: &str, req: &ChatRequest) -> Result<EventStream, UpstreamError> {
    let resp = c.post(format!("{}/v1/messages", c.base_url), &body(model, req, true)).await?;
    Ok(parse(super::sse::chunks(resp)))
}

/// The answer pieces of a streamed body.
pub(super) fn parse(chunks: impl Stream<Item = Result<Vec<u8>, UpstreamError>> + Send + 'static) -> EventStream {
    let mut usage = Usage::default();
    // Whether the stream said what it used at all: if not, `Done` carries no usage and the
    // gateway counts its estimate (as for an OpenAI-format stream without a usage chunk),
    // never zero tokens.
    let mut seen = false;
    let mut stop = StopReason::End;
    let out = events(chunks).flat_map(move |frame| {
        let items: Vec<Result<StreamEvent, UpstreamError>> = match frame {
            Err(e) => vec![Err(e)],
            Ok(frame) => match serde_json::from_str::<StreamFrame>(&frame.data) {
                Err(e) => vec![Err(UpstreamError::Garbage(format!("stream event {}: {e}", frame.event)))],
                Ok(f) => match f.kind.as_str() {
                    "message_start" => {
                        match f.message.and_then(|m| m.usage) {
                            Some(u) => {
                                usage.input_tokens = u.input_tokens;
                                usage.output_tokens = u.output_tokens;
                                seen = true;
                                // Known now: an early end is settled on it.
                                vec![Ok(StreamEvent::Prompt(u.input_tokens))]
                            }
                            None => vec![],
                        }
                    }
                    "content_block_delta" => match f.delta {
                        Some(Delta { kind: Some(k), text: Some(t), .. }) if k == "text_delta" => {
                            vec![Ok(StreamEvent::Delta(t))]
                        }
                        _ => vec![],
                    },
                    "message_delta" => {
                        if let Some(d) = f.delta {
                            stop = stop_reason(d.stop_reason.as_deref());
                        }
                        if let Some(u) = f.usage {
                            usage.output_tokens = u.output_tokens;
                            if u.input_tokens > 0 {
                                usage.input_tokens = u.input_tokens;
                            }
                            seen = true;
                        }
                        vec![]
                    }
                    "message_stop" => vec![Ok(StreamEvent::Done { stop, usage: seen.then_some(usage) })],
                    "error" => {
                        let kind = f.error.as_ref().and_then(|e| e["type"].as_str()).unwrap_or("api_error").to_string();
                        let err = match kind.as_str() {
                            "overloaded_error" => UpstreamError::Overloaded { status: 529 },
                            "rate_limit_error" => UpstreamError::RateLimited { retry_after_secs: None },
                            _ => UpstreamError::Server { status: 500, message: kind },
                        };
                        vec![Err(err)]
                    }
                    _ => vec![],
                },
            },
        };
        futures::stream::iter(items)
    });
    Box::pin(super::sse::require_end(out))
}

#[cfg(test)]
mod tests {
    use super::Message;

    #[test]
    fn a_whole_answer_that_does_not_say_what_it_used_is_refused_not_free() {
        let answer = |usage: &str| {
            serde_json::from_str::<Message>(&format!(
                r#"{{"id":"msg_1","content":[{{"type":"text","text":"Hi"}}],"stop_reason":"end_turn","usage":{usage}}}"#
            ))
        };
        for missing in [r#"{}"#, r#"{"input_tokens":5}"#, r#"{"output_tokens":2}"#] {
            assert!(answer(missing).is_err(), "{missing} was read as zero tokens");
        }
        let m = answer(r#"{"input_tokens":5,"output_tokens":2}"#).expect("complete usage");
        assert_eq!((m.usage.input_tokens, m.usage.output_tokens), (5, 2));
    }
}
