//! Clients for the two provider wire formats, and how their failures are classified.

mod anthropic;
mod openai;
mod set;
mod sse;

use std::pin::Pin;
use std::time::Duration;

use futures::Stream;
use j1msky_core::catalogue::{Provider, ProviderKind};

use crate::chat::{ChatRequest, ChatResponse, StreamEvent};

pub(crate) use set::ProviderSet;

/// A stream of answer pieces from a provider.
pub type EventStream = Pin<Box<dyn Stream<Item = Result<StreamEvent, UpstreamError>> + Send>>;

/// What went wrong upstream, classified for retry and fallback decisions.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamError {
    /// 429: back off for `retry_after_secs`, maybe fall back to a cheaper model.
    #[error("rate limited by the provider (retry after {retry_after_secs:?} s)")]
    RateLimited { retry_after_secs: Option<u64> },
    /// 529 or 503: the provider is overloaded.
    #[error("provider overloaded ({status})")]
    Overloaded { status: u16 },
    /// Other 5xx.
    #[error("provider error {status}: {message}")]
    Server { status: u16, message: String },
    /// No answer in time.
    #[error("provider timed out")]
    Timeout,
    /// Could not connect, or the connection broke.
    #[error("provider connection failed: {0}")]
    Connection(String),
    /// 400-class: the request itself is wrong; retrying will not help.
    #[error("provider refused the request ({status}): {message}")]
    BadRequest { status: u16, message: String },
    /// 401/403: our key is wrong; retrying will not help and the operator must know.
    #[error("provider rejected our credentials ({status})")]
    Auth { status: u16 },
    /// The answer could not be understood.
    #[error("provider answered something unreadable: {0}")]
    Garbage(String),
}

impl UpstreamError {
    /// Worth another attempt (same or fallback model).
    pub fn is_retryable(&self) -> bool {
        !matches!(self, UpstreamError::BadRequest { .. } | UpstreamError::Auth { .. })
    }

    /// The short word stored in the ledger and used as a fallback reason.
    pub fn outcome(&self) -> &'static str {
        match self {
            UpstreamError::RateLimited { .. } => "rate_limited",
            UpstreamError::Overloaded { .. } => "overloaded",
            UpstreamError::Server { .. } => "server_error",
            UpstreamError::Timeout => "timeout",
            UpstreamError::Connection(_) => "connection_error",
            UpstreamError::BadRequest { .. } => "bad_request",
            UpstreamError::Auth { .. } => "auth_error",
            UpstreamError::Garbage(_) => "garbage",
        }
    }

    pub(crate) fn from_status(status: u16, retry_after: Option<u64>, body: &str) -> UpstreamError {
        let message: String = body.chars().take(300).collect();
        match status {
            429 => UpstreamError::RateLimited { retry_after_secs: retry_after },
            503 | 529 => UpstreamError::Overloaded { status },
            401 | 403 => UpstreamError::Auth { status },
            400..=499 => UpstreamError::BadRequest { status, message },
            _ => UpstreamError::Server { status, message },
        }
    }

    pub(crate) fn from_reqwest(e: &reqwest::Error) -> UpstreamError {
        // Bodies are read as bytes and parsed by us, so any transport error (including a
        // body cut short) is a connection problem; unreadable content is `Garbage`.
        if e.is_timeout() {
            UpstreamError::Timeout
        } else {
            UpstreamError::Connection(e.to_string())
        }
    }
}

/// The answer pieces of a streamed body in `kind`'s wire format, read from `chunks` as
/// they arrived: what `ProviderClient::stream` does with a response (the fuzz tests feed
/// it bytes directly).
pub fn parse_stream(
    kind: ProviderKind,
    chunks: impl Stream<Item = Result<Vec<u8>, UpstreamError>> + Send + 'static,
) -> EventStream {
    match kind {
        ProviderKind::Openai => openai::parse(chunks),
        ProviderKind::Anthropic => anthropic::parse(chunks),
    }
}

/// Where and how to reach one provider.
#[derive(Debug, Clone)]
pub struct ProviderClient {
    pub id: String,
    pub kind: ProviderKind,
    pub base_url: String,
    api_key: String,
    http: reqwest::Client,
}

/// Time limits for upstream calls.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub connect: Duration,
    /// Whole non-streaming call, or the wait for each streamed chunk.
    pub request: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts { connect: Duration::from_secs(5), request: Duration::from_secs(120) }
    }
}

impl ProviderClient {
    /// A client for `provider`, with its key (read from the environment by the caller).
    pub fn new(id: &str, provider: &Provider, base_url: Option<&str>, api_key: String, timeouts: Timeouts) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(timeouts.connect)
            .read_timeout(timeouts.request)
            .pool_max_idle_per_host(64)
            .tcp_nodelay(true)
            .build()
            .unwrap_or_default();
        ProviderClient {
            id: id.to_string(),
            kind: provider.kind,
            base_url: base_url.unwrap_or(&provider.base_url).trim_end_matches('/').to_string(),
            api_key,
            http,
        }
    }

    /// One non-streaming call.
    pub async fn complete(&self, upstream_model: &str, req: &ChatRequest) -> Result<ChatResponse, UpstreamError> {
        match self.kind {
            ProviderKind::Openai => openai::complete(self, upstream_model, req).await,
            ProviderKind::Anthropic => anthropic::complete(self, upstream_model, req).await,
        }
    }

    /// One streaming call; errors before the first byte come back as `Err`.
    pub async fn stream(&self, upstream_model: &str, req: &ChatRequest) -> Result<EventStream, UpstreamError> {
        match self.kind {
            ProviderKind::Openai => openai::stream(self, upstream_model, req).await,
            ProviderKind::Anthropic => anthropic::stream(self, upstream_model, req).await,
        }
    }

    async fn post(&self, url: String, body: &serde_json::Value) -> Result<reqwest::Response, UpstreamError> {
        let builder = self.http.post(url).json(body);
        let builder = match self.kind {
            ProviderKind::Openai => builder.bearer_auth(&self.api_key),
            ProviderKind::Anthropic => {
                builder.header("x-api-key", &self.api_key).header("anthropic-version", "2023-06-01")
            }
        };
        let resp = builder.send().await.map_err(|e| UpstreamError::from_reqwest(&e))?;
        let status = resp.status().as_u16();
        if (200..300).contains(&status) {
            return Ok(resp);
        }
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let body = resp.text().await.unwrap_or_default();
        Err(UpstreamError::from_status(status, retry_after, &body))
    }
}
