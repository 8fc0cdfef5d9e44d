//! A **simulated** model provider. It speaks the OpenAI chat-completions format
//! (`POST /v1/chat/completions`, `GET /v1/models`) and the Anthropic Messages format
//! (`POST /v1/messages`) on the same port, streaming and not, with the providers' own
//! ids, `usage` blocks, SSE framing and error bodies. Answers are deterministic so costs
//! can be asserted exactly:
//!
//! - input tokens = 3 + Σ over messages (system included) of (4 + ⌈bytes / 4⌉);
//! - output tokens = min(`max_tokens`, the configured answer length) (plus any scripted
//!   reasoning); one word per token,
//!   the first word is `[simulated]` (unless scripted through `/_sim/answers`).
//!
//! Faults are injected three ways: the `x-sim-fault` request header, a script
//! (`POST /_sim/faults`, consumed by the next matching requests) or a random rate per
//! fault. Fault names: `429` (or `429:<retry-after secs>`), `529`, `503`, `500`, `400`,
//! `401`, `timeout` (answer only after the configured hang), `drop` (the connection is cut
//! mid-answer) and `garbage` (200 with an unreadable body). `GET /_sim/stats` counts what
//! was served; `POST /_sim/reset` clears the script and the counts. `POST /_sim/answers`
//! scripts how the next answers start (see [`ScriptedAnswer`]).
//!
//! The fake Stripe lives in [`stripe`].

mod answers;
pub mod stripe;

pub use answers::ScriptedAnswer;

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// Words the simulated answers are made of.
const WORDS: [&str; 12] =
    ["lorem", "ipsum", "dolor", "sit", "amet", "consectetur", "adipiscing", "elit", "sed", "do", "eiusmod", "tempor"];

/// A fault the simulator can inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(into = "String")]
pub enum Fault {
    /// 429 with `Retry-After` in seconds.
    RateLimited { retry_after: u64 },
    /// 529 (Anthropic's "overloaded") or 503.
    Overloaded(u16),
    /// 500.
    ServerError,
    /// 400: the request is refused.
    BadRequest,
    /// 401: the key is refused.
    Auth,
    /// No answer until the configured hang has passed.
    Timeout,
    /// The connection is cut part-way through the answer.
    Drop,
    /// 200 with a body that is not the format's JSON.
    Garbage,
}

/// A fault name that is not one of the known ones.
#[derive(Debug, thiserror::Error)]
#[error("unknown fault {0:?}: use 429, 429:<secs>, 529, 503, 500, 400, 401, timeout, drop or garbage")]
pub struct UnknownFault(String);

impl FromStr for Fault {
    type Err = UnknownFault;

    fn from_str(s: &str) -> Result<Fault, UnknownFault> {
        let s = s.trim();
        if let Some(secs) = s.strip_prefix("429:") {
            return secs
                .parse()
                .map(|retry_after| Fault::RateLimited { retry_after })
                .map_err(|_| UnknownFault(s.to_string()));
        }
        Ok(match s {
            "429" => Fault::RateLimited { retry_after: 1 },
            "529" => Fault::Overloaded(529),
            "503" => Fault::Overloaded(503),
            "500" => Fault::ServerError,
            "400" => Fault::BadRequest,
            "401" => Fault::Auth,
            "timeout" => Fault::Timeout,
            "drop" => Fault::Drop,
            "garbage" => Fault::Garbage,
            _ => return Err(UnknownFault(s.to_string())),
        })
    }
}

impl From<Fault> for String {
    fn from(f: Fault) -> String {
        match f {
            Fault::RateLimited { retry_after } => format!("429:{retry_after}"),
            Fault::Overloaded(s) => s.to_string(),
            Fault::ServerError => "500".into(),
            Fault::BadRequest => "400".into(),
            Fault::Auth => "401".into(),
            Fault::Timeout => "timeout".into(),
            Fault::Drop => "drop".into(),
            Fault::Garbage => "garbage".into(),
        }
    }
}

/// How the simulator behaves.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Wait before answering (before the first byte of a stream).
    pub latency: Duration,
    /// Wait between streamed chunks.
    pub chunk_delay: Duration,
    /// Output tokens of an answer not cut short by `max_tokens`.
    pub answer_tokens: u32,
    /// When set, the only key accepted; otherwise any non-empty key is.
    pub api_key: Option<String>,
    /// Random faults: each request draws each fault with its probability.
    pub rates: Vec<(Fault, f64)>,
    /// How long a `timeout` fault keeps the caller waiting.
    pub hang: Duration,
    /// A provider's rate limit: this many requests per minute, as a token bucket holding
    /// one second's worth (so the limit binds smoothly); beyond it, 429 with `Retry-After`
    /// (whole seconds, at least 1) until a token is back.
    pub rate_limit_per_minute: Option<u32>,
    /// The prompt's token count as a percentage of the usual one token per 4 bytes (about
    /// what real tokenizers count for English): 100 by default; 400 plays a token per
    /// byte, the most a byte-level tokenizer can count (dense numbers, rare scripts);
    /// above 400, a provider billing more than the text it was sent (context the gateway
    /// cannot see, a price it does not know yet).
    pub input_token_percent: u32,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            latency: Duration::ZERO,
            chunk_delay: Duration::ZERO,
            answer_tokens: 32,
            api_key: None,
            rates: Vec::new(),
            hang: Duration::from_secs(300),
            rate_limit_per_minute: None,
            input_token_percent: 100,
        }
    }
}

/// Parses a `--fault-rate` value such as `429=0.05`.
pub fn parse_rate(s: &str) -> Result<(Fault, f64), String> {
    let (fault, p) = s.split_once('=').ok_or_else(|| format!("{s:?}: expected FAULT=PROBABILITY, e.g. 429=0.05"))?;
    let fault: Fault = fault.parse().map_err(|e: UnknownFault| e.to_string())?;
    let p: f64 = p.parse().map_err(|_| format!("{s:?}: the probability is not a number"))?;
    if !(0.0..=1.0).contains(&p) {
        return Err(format!("{s:?}: the probability must be between 0 and 1"));
    }
    Ok((fault, p))
}

/// A scripted fault, consumed by the next `times` matching requests.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Scripted {
    /// A fault name, as for the `x-sim-fault` header.
    pub fault: String,
    /// Only requests for this upstream model name (any model when absent).
    #[serde(default)]
    pub model: Option<String>,
    /// How many requests it applies to.
    #[serde(default = "one")]
    pub times: u32,
}

fn one() -> u32 {
    1
}

/// What the simulator has served.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Stats {
    pub requests: u64,
    pub by_model: BTreeMap<String, u64>,
    pub faults: BTreeMap<String, u64>,
    pub input_tokens: u64,
    pub output_tokens: u64,
}

struct Sim {
    config: SimConfig,
    script: Mutex<VecDeque<(Fault, Option<String>, u32)>>,
    answers: Mutex<VecDeque<ScriptedAnswer>>,
    stats: Mutex<Stats>,
    next_id: AtomicU64,
    /// The rate limit's bucket: tokens left and when it was last filled.
    bucket: Mutex<Option<(f64, std::time::Instant)>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The simulator's routes.
pub fn router(config: SimConfig) -> Router {
    let sim = Arc::new(Sim {
        config,
        script: Mutex::new(VecDeque::new()),
        answers: Mutex::new(VecDeque::new()),
        bucket: Mutex::new(None),
        stats: Mutex::new(Stats::default()),
        next_id: AtomicU64::new(1),
    });
    Router::new()
        .route("/v1/chat/completions", post(openai_chat))
        .route("/v1/models", get(openai_models))
        .route("/v1/messages", post(anthropic_messages))
        .route("/_sim/faults", post(add_faults).delete(clear_faults))
        .route("/_sim/answers", post(answers::add_answers))
        .route("/_sim/stats", get(stats))
        .route("/_sim/reset", post(reset))
        .with_state(sim)
}

/// Serves the simulator on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    config: SimConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(config)).with_graceful_shutdown(shutdown).await
}

/// A simulator running in the background of this process (tests, demo, benchmarks).
pub struct Running {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Running {
    /// Base URL for OpenAI-format clients (`…/v1`).
    pub fn openai_base(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Base URL for Anthropic-format clients (they add `/v1/messages`).
    pub fn anthropic_base(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Starts a simulator on a free loopback port.
pub async fn spawn(config: SimConfig) -> std::io::Result<Running> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    // Tracked by the returned `Running`: dropping it stops the server.
    #[allow(clippy::disallowed_methods)]
    tokio::spawn(async move {
        let stopped = async {
            let _ = rx.await;
        };
        if let Err(e) = serve(listener, config, stopped).await {
            tracing::error!(error = %e, "simulated provider stopped");
        }
    });
    Ok(Running { addr, stop: Some(tx) })
}

/// Which wire format a request came in.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    OpenAi,
    Anthropic,
}

/// The parts of a request the simulator looks at.
struct Parsed {
    model: String,
    input_tokens: u64,
    max_tokens: Option<u64>,
    stream: bool,
    include_usage: bool,
}

fn tokens_of(content: &Value, percent: u32) -> u64 {
    let bytes = match content {
        Value::String(s) => s.len(),
        Value::Array(parts) => parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).map(str::len).sum(),
        _ => 0,
    };
    4 + (bytes as u64 * u64::from(percent)).div_ceil(400)
}

fn parse(format: Format, body: &Value, token_percent: u32) -> Result<Parsed, String> {
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty())
        .ok_or("`model` is required and must be a string")?
        .to_string();
    let messages = body
        .get("messages")
        .and_then(Value::as_array)
        .filter(|m| !m.is_empty())
        .ok_or("`messages` is required and must be a non-empty array")?;
    let mut input_tokens = 3;
    for (i, m) in messages.iter().enumerate() {
        let content = m.get("content").ok_or_else(|| format!("messages[{i}].content is required"))?;
        input_tokens += tokens_of(content, token_percent);
    }
    if let Some(system) = body.get("system") {
        input_tokens += tokens_of(system, token_percent);
    }
    let max_tokens = match format {
        Format::OpenAi => body.get("max_completion_tokens").or_else(|| body.get("max_tokens")).and_then(Value::as_u64),
        Format::Anthropic => Some(
            body.get("max_tokens").and_then(Value::as_u64).ok_or("`max_tokens` is required and must be an integer")?,
        ),
    };
    Ok(Parsed {
        model,
        input_tokens,
        max_tokens,
        stream: body.get("stream").and_then(Value::as_bool).unwrap_or(false),
        include_usage: body.pointer("/stream_options/include_usage").and_then(Value::as_bool).unwrap_or(false),
    })
}

fn words(n: u64, first: &str) -> Vec<String> {
    (0..n)
        .map(|i| {
            let w = if i == 0 { first } else { WORDS[(i as usize - 1) % WORDS.len()] };
            if i == 0 {
                w.to_string()
            } else {
                format!(" {w}")
            }
        })
        .collect()
}

// The simulated provider stands for a third party, whose clock is the real one.
#[allow(clippy::disallowed_methods)]
fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Sim {
    fn pick_fault(&self, headers: &HeaderMap, model: &str) -> Result<Option<Fault>, UnknownFault> {
        if let Some(v) = headers.get("x-sim-fault").and_then(|v| v.to_str().ok()) {
            return v.parse().map(Some);
        }
        {
            let mut script = lock(&self.script);
            if let Some(pos) = script.iter().position(|(_, m, _)| m.as_deref().is_none_or(|m| m == model)) {
                let fault = script[pos].0;
                script[pos].2 -= 1;
                if script[pos].2 == 0 {
                    script.remove(pos);
                }
                return Ok(Some(fault));
            }
        }
        if let Some(limit) = self.config.rate_limit_per_minute {
            let per_sec = f64::from(limit.max(1)) / 60.0;
            let capacity = per_sec.max(1.0);
            let now = std::time::Instant::now();
            let mut b = lock(&self.bucket);
            let (tokens, last) = b.get_or_insert((capacity, now));
            *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * per_sec).min(capacity);
            *last = now;
            if *tokens < 1.0 {
                let wait = ((1.0 - *tokens) / per_sec).ceil().max(1.0) as u64;
                return Ok(Some(Fault::RateLimited { retry_after: wait }));
            }
            *tokens -= 1.0;
        }
        if !self.config.rates.is_empty() {
            let mut rng = rand::thread_rng();
            for (fault, p) in &self.config.rates {
                if rng.gen_bool(*p) {
                    return Ok(Some(*fault));
                }
            }
        }
        Ok(None)
    }

    fn key_ok(&self, format: Format, headers: &HeaderMap) -> bool {
        let given = match format {
            Format::OpenAi => headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::trim),
            Format::Anthropic => headers.get("x-api-key").and_then(|v| v.to_str().ok()).map(str::trim),
        };
        match (given, &self.config.api_key) {
            (Some(g), Some(k)) => g == k,
            (Some(g), None) => !g.is_empty(),
            (None, _) => false,
        }
    }
}

fn error(format: Format, status: u16, message: &str) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = match format {
        Format::OpenAi => {
            let (kind, code_word) = match status {
                400 => ("invalid_request_error", Value::Null),
                401 => ("invalid_request_error", json!("invalid_api_key")),
                429 => ("requests", json!("rate_limit_exceeded")),
                503 | 529 => ("server_error", json!("overloaded")),
                _ => ("server_error", Value::Null),
            };
            json!({"error": {"message": message, "type": kind, "param": null, "code": code_word}})
        }
        Format::Anthropic => {
            let kind = match status {
                400 => "invalid_request_error",
                401 => "authentication_error",
                429 => "rate_limit_error",
                529 | 503 => "overloaded_error",
                _ => "api_error",
            };
            json!({"type": "error", "error": {"type": kind, "message": message}})
        }
    };
    (code, [("x-j1msky-simulated", "true")], Json(body)).into_response()
}

/// A body that sends `head`, lets it reach the client, then breaks the connection.
fn broken_body(head: Vec<Bytes>) -> Body {
    let head = futures::stream::iter(head.into_iter().map(Ok::<Bytes, std::io::Error>));
    let cut = futures::stream::once(async {
        // Without the pause the server would give up before flushing what was sent.
        tokio::time::sleep(Duration::from_millis(50)).await;
        Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "simulated dropped connection"))
    });
    Body::from_stream(futures::StreamExt::chain(head, cut))
}

async fn handle(sim: Arc<Sim>, format: Format, headers: HeaderMap, body: Bytes) -> Response {
    if !sim.key_ok(format, &headers) {
        return error(format, 401, "simulated provider: missing or invalid API key");
    }
    let value: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return error(format, 400, &format!("simulated provider: the body is not JSON: {e}")),
    };
    let req = match parse(format, &value, sim.config.input_token_percent) {
        Ok(r) => r,
        Err(e) => return error(format, 400, &format!("simulated provider: {e}")),
    };
    let fault = match sim.pick_fault(&headers, &req.model) {
        Ok(f) => f,
        Err(e) => return error(format, 400, &format!("simulated provider: {e}")),
    };
    {
        let mut stats = lock(&sim.stats);
        stats.requests += 1;
        *stats.by_model.entry(req.model.clone()).or_default() += 1;
        if let Some(f) = fault {
            *stats.faults.entry(String::from(f)).or_default() += 1;
        }
    }
    if !sim.config.latency.is_zero() {
        tokio::time::sleep(sim.config.latency).await;
    }
    match fault {
        Some(Fault::RateLimited { retry_after }) => {
            let mut r = error(format, 429, "simulated provider: rate limit reached, slow down");
            r.headers_mut().insert("retry-after", HeaderValue::from(retry_after));
            return r;
        }
        Some(Fault::Overloaded(status)) => return error(format, status, "simulated provider: overloaded"),
        Some(Fault::ServerError) => return error(format, 500, "simulated provider: internal error"),
        Some(Fault::BadRequest) => return error(format, 400, "simulated provider: request refused"),
        Some(Fault::Auth) => return error(format, 401, "simulated provider: invalid API key"),
        Some(Fault::Timeout) => tokio::time::sleep(sim.config.hang).await,
        Some(Fault::Garbage) => {
            return (StatusCode::OK, [("content-type", "application/json")], "<html>simulated gateway hiccup</html>")
                .into_response()
        }
        Some(Fault::Drop) | None => {}
    }
    let id = sim.next_id.fetch_add(1, Ordering::Relaxed);
    let max = req.max_tokens.unwrap_or(u64::from(sim.config.answer_tokens));
    let out_tokens = max.min(u64::from(sim.config.answer_tokens));
    let cut = out_tokens < u64::from(sim.config.answer_tokens);
    {
        let mut stats = lock(&sim.stats);
        stats.input_tokens += req.input_tokens;
        stats.output_tokens += out_tokens;
    }
    let (first, reasoning) = sim.take_prefix(&req.model).unwrap_or_else(|| ("[simulated]".into(), 0));
    // Reasoning is OpenAI-format only (Kimi's `reasoning_content`), billed as output and,
    // as with Kimi, inside `max_tokens`.
    let reasoning = if format == Format::OpenAi { reasoning.min(max.saturating_sub(out_tokens)) } else { 0 };
    let thought = words(reasoning, "[thinking]");
    lock(&sim.stats).output_tokens += reasoning;
    let answer = Answer { pieces: words(out_tokens, &first), thought: &thought, cut, out: out_tokens + reasoning };
    let pieces = &answer.pieces;
    let dropped = fault == Some(Fault::Drop);
    let chunks = match (format, req.stream) {
        (_, false) => {
            let body = match format {
                Format::OpenAi => openai_completion(id, &req, &answer),
                Format::Anthropic => anthropic_message(id, &req, &pieces.concat(), cut, out_tokens),
            };
            if dropped {
                let half = body.len() / 2;
                return (StatusCode::OK, [("content-type", "application/json")], broken_body(vec![body.slice(..half)]))
                    .into_response();
            }
            return (StatusCode::OK, [("content-type", "application/json"), ("x-j1msky-simulated", "true")], body)
                .into_response();
        }
        (Format::OpenAi, true) => openai_chunks(id, &req, &answer),
        (Format::Anthropic, true) => anthropic_events(id, &req, pieces, cut, out_tokens),
    };
    let body = if dropped {
        broken_body(chunks.into_iter().take(3).collect())
    } else if sim.config.chunk_delay.is_zero() {
        Body::from(chunks.concat())
    } else {
        let delay = sim.config.chunk_delay;
        let stream = futures::stream::unfold(chunks.into_iter(), move |mut it| async move {
            let next = it.next()?;
            tokio::time::sleep(delay).await;
            Some((Ok::<Bytes, Infallible>(next), it))
        });
        Body::from_stream(stream)
    };
    (
        StatusCode::OK,
        [("content-type", "text/event-stream"), ("cache-control", "no-cache"), ("x-j1msky-simulated", "true")],
        body,
    )
        .into_response()
}

/// An OpenAI-format answer: its words, the reasoning before them (Kimi's), whether
/// `max_tokens` cut it, and the output tokens billed (reasoning included).
struct Answer<'a> {
    pieces: Vec<String>,
    thought: &'a [String],
    cut: bool,
    out: u64,
}

/// Moonshot (Kimi) streams its usage inside the last chunk's choice (`choices[0].usage`),
/// not in a chunk of its own as OpenAI does, and sends it whether asked or not.
fn usage_in_choice(model: &str) -> bool {
    model.starts_with("kimi") || model.starts_with("moonshot")
}

fn openai_completion(id: u64, req: &Parsed, a: &Answer<'_>) -> Bytes {
    let (text, cut, out) = (a.pieces.concat(), a.cut, a.out);
    let mut v = json!({
        "id": format!("chatcmpl-sim{id:012}"),
        "object": "chat.completion",
        "created": now_secs(),
        "model": req.model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": text, "refusal": null},
            "logprobs": null,
            "finish_reason": if cut { "length" } else { "stop" },
        }],
        "usage": {"prompt_tokens": req.input_tokens, "completion_tokens": out, "total_tokens": req.input_tokens + out},
        "system_fingerprint": "fp_j1msky_sim",
    });
    if !a.thought.is_empty() {
        v["choices"][0]["message"]["reasoning_content"] = json!(a.thought.concat());
    }
    Bytes::from(v.to_string())
}

fn sse_data(v: &Value) -> Bytes {
    Bytes::from(format!("data: {v}\n\n"))
}

fn openai_chunks(id: u64, req: &Parsed, a: &Answer<'_>) -> Vec<Bytes> {
    let (pieces, cut, out) = (&a.pieces, a.cut, a.out);
    let created = now_secs();
    let in_choice = usage_in_choice(&req.model);
    let usage =
        json!({"prompt_tokens": req.input_tokens, "completion_tokens": out, "total_tokens": req.input_tokens + out});
    let usage_null = if req.include_usage && !in_choice { Some(Value::Null) } else { None };
    let chunk = |delta: Value, finish: Value| {
        let mut v = json!({
            "id": format!("chatcmpl-sim{id:012}"),
            "object": "chat.completion.chunk",
            "created": created,
            "model": req.model,
            "system_fingerprint": "fp_j1msky_sim",
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
        });
        if let Some(u) = &usage_null {
            v["usage"] = u.clone();
        }
        if in_choice && !finish.is_null() {
            v["choices"][0]["usage"] = usage.clone();
        }
        sse_data(&v)
    };
    let mut chunks = Vec::with_capacity(a.thought.len() + pieces.len() + 4);
    chunks.push(chunk(json!({"role": "assistant", "content": "", "refusal": null}), Value::Null));
    for t in a.thought {
        chunks.push(chunk(json!({"reasoning_content": t}), Value::Null));
    }
    for p in pieces {
        chunks.push(chunk(json!({"content": p}), Value::Null));
    }
    chunks.push(chunk(json!({}), json!(if cut { "length" } else { "stop" })));
    if req.include_usage && !in_choice {
        chunks.push(sse_data(&json!({
            "id": format!("chatcmpl-sim{id:012}"),
            "object": "chat.completion.chunk",
            "created": created,
            "model": req.model,
            "system_fingerprint": "fp_j1msky_sim",
            "choices": [],
            "usage": usage.clone(),
        })));
    }
    chunks.push(Bytes::from_static(b"data: [DONE]\n\n"));
    chunks
}

fn anthropic_message(id: u64, req: &Parsed, text: &str, cut: bool, out: u64) -> Bytes {
    let v = json!({
        "id": format!("msg_sim{id:018}"),
        "type": "message",
        "role": "assistant",
        "model": req.model,
        "content": [{"type": "text", "text": text}],
        "stop_reason": if cut { "max_tokens" } else { "end_turn" },
        "stop_sequence": null,
        "usage": {"input_tokens": req.input_tokens, "output_tokens": out},
    });
    Bytes::from(v.to_string())
}

fn sse_event(name: &str, v: &Value) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {v}\n\n"))
}

fn anthropic_events(id: u64, req: &Parsed, pieces: &[String], cut: bool, out: u64) -> Vec<Bytes> {
    let mut ev = Vec::with_capacity(pieces.len() + 6);
    ev.push(sse_event(
        "message_start",
        &json!({"type": "message_start", "message": {
            "id": format!("msg_sim{id:018}"), "type": "message", "role": "assistant", "model": req.model,
            "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": req.input_tokens, "output_tokens": 1},
        }}),
    ));
    ev.push(sse_event(
        "content_block_start",
        &json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
    ));
    ev.push(sse_event("ping", &json!({"type": "ping"})));
    for p in pieces {
        ev.push(sse_event(
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": p}}),
        ));
    }
    ev.push(sse_event("content_block_stop", &json!({"type": "content_block_stop", "index": 0})));
    ev.push(sse_event(
        "message_delta",
        &json!({"type": "message_delta",
            "delta": {"stop_reason": if cut { "max_tokens" } else { "end_turn" }, "stop_sequence": null},
            "usage": {"output_tokens": out}}),
    ));
    ev.push(sse_event("message_stop", &json!({"type": "message_stop"})));
    ev
}

async fn openai_chat(State(sim): State<Arc<Sim>>, headers: HeaderMap, body: Bytes) -> Response {
    handle(sim, Format::OpenAi, headers, body).await
}

async fn anthropic_messages(State(sim): State<Arc<Sim>>, headers: HeaderMap, body: Bytes) -> Response {
    handle(sim, Format::Anthropic, headers, body).await
}

async fn openai_models(State(sim): State<Arc<Sim>>, headers: HeaderMap) -> Response {
    if !sim.key_ok(Format::OpenAi, &headers) {
        return error(Format::OpenAi, 401, "simulated provider: missing or invalid API key");
    }
    let by_model: Vec<String> = lock(&sim.stats).by_model.keys().cloned().collect();
    let data: Vec<Value> =
        by_model.iter().map(|m| json!({"id": m, "object": "model", "created": 0, "owned_by": "j1msky-sim"})).collect();
    Json(json!({"object": "list", "data": data})).into_response()
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(Scripted),
    Many(Vec<Scripted>),
}

async fn add_faults(State(sim): State<Arc<Sim>>, body: Bytes) -> Response {
    let parsed: OneOrMany =
        match serde_json::from_slice(&body) {
            Ok(p) => p,
            Err(e) => return (
                StatusCode::BAD_REQUEST,
                Json(
                    json!({"error": format!("expected {{\"fault\", \"model\"?, \"times\"?}} or a list of them: {e}")}),
                ),
            )
                .into_response(),
        };
    let list = match parsed {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    };
    let mut parsed_list = Vec::with_capacity(list.len());
    for s in list {
        match s.fault.parse::<Fault>() {
            Ok(f) if s.times > 0 => parsed_list.push((f, s.model, s.times)),
            Ok(_) => {
                return (StatusCode::BAD_REQUEST, Json(json!({"error": "`times` must be at least 1"}))).into_response()
            }
            Err(e) => return (StatusCode::BAD_REQUEST, Json(json!({"error": e.to_string()}))).into_response(),
        }
    }
    let mut script = lock(&sim.script);
    script.extend(parsed_list);
    Json(json!({"queued": script.len()})).into_response()
}

async fn clear_faults(State(sim): State<Arc<Sim>>) -> Response {
    lock(&sim.script).clear();
    StatusCode::NO_CONTENT.into_response()
}

async fn stats(State(sim): State<Arc<Sim>>) -> Json<Stats> {
    Json(lock(&sim.stats).clone())
}

async fn reset(State(sim): State<Arc<Sim>>) -> StatusCode {
    lock(&sim.script).clear();
    lock(&sim.answers).clear();
    *lock(&sim.stats) = Stats::default();
    StatusCode::NO_CONTENT
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_names_round_trip_and_unknown_ones_are_refused() {
        for name in ["429:7", "529", "503", "500", "400", "401", "timeout", "drop", "garbage"] {
            let f: Fault = name.parse().expect(name);
            assert_eq!(String::from(f), name);
        }
        assert_eq!("429".parse::<Fault>().ok(), Some(Fault::RateLimited { retry_after: 1 }));
        assert!("418".parse::<Fault>().is_err());
        assert!("429:soon".parse::<Fault>().is_err());
        assert!(parse_rate("500=1.5").is_err());
        assert!(parse_rate("500").is_err());
        assert_eq!(parse_rate("500=0.25").ok(), Some((Fault::ServerError, 0.25)));
    }

    #[test]
    fn token_counts_follow_the_documented_rule() {
        let body = json!({"model": "m", "system": "abcdefgh", "messages": [{"role": "user", "content": "abcde"}], "max_tokens": 5});
        let p = parse(Format::Anthropic, &body, 100).expect("parse");
        // 3 + (4 + 2) for the system + (4 + 2) for the message.
        assert_eq!(p.input_tokens, 15);
        assert_eq!(p.max_tokens, Some(5));
        let missing = json!({"model": "m", "messages": [{"role": "user", "content": "x"}]});
        assert!(parse(Format::Anthropic, &missing, 100).is_err(), "Anthropic requires max_tokens");
        assert!(parse(Format::OpenAi, &missing, 100).is_ok());
        assert_eq!(words(3, "[simulated]").concat(), "[simulated] lorem ipsum");
    }
}
