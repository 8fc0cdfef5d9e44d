//! The gateway's own shape of a chat call, between the customer-facing formats and the
//! provider wire formats. Text only: images and tools are refused at the edge.

use serde::Serialize;

/// Who said a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Speaker {
    User,
    Assistant,
}

/// One turn of the conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Turn {
    pub speaker: Speaker,
    pub text: String,
}

/// A request as the gateway routes it.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatRequest {
    /// Instructions (OpenAI `system`/`developer` messages, Anthropic `system`).
    pub system: Option<String>,
    pub turns: Vec<Turn>,
    /// Upper bound on output tokens; what the reservation is priced at.
    pub max_tokens: u32,
    pub temperature: Option<f64>,
    pub stop: Vec<String>,
}

impl ChatRequest {
    /// All the text sent upstream, for the input-token estimate of a reservation.
    pub fn input_chars(&self) -> usize {
        self.system.as_deref().map_or(0, str::len) + self.turns.iter().map(|t| t.text.len()).sum::<usize>()
    }

    /// A typical input-token estimate (one token per 3 bytes, plus framing): what a
    /// stream that ends before the provider counted is settled on, and what the
    /// Anthropic-format stream tells at its start.
    pub fn estimated_input_tokens(&self) -> u64 {
        (self.input_chars() as u64).div_ceil(3) + Self::framing(self.turns.len())
    }

    /// The most input tokens the text can count as, what a call reserves budget for: a
    /// byte-level tokenizer (every provider's) never counts more than a token per byte,
    /// plus framing. The typical estimate would let a prompt dense in tokens (numbers,
    /// rare scripts) cost up to three times what it reserved, past any budget.
    pub fn most_input_tokens(&self) -> u64 {
        self.input_chars() as u64 + Self::framing(self.turns.len())
    }

    /// Tokens a provider adds around the messages (roles, separators).
    fn framing(turns: usize) -> u64 {
        8 * (turns as u64 + 1)
    }
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// Natural end or a stop sequence.
    End,
    /// `max_tokens` reached.
    Length,
}

/// Tokens as counted by the provider.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
}

/// A complete answer.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatResponse {
    pub text: String,
    pub stop: StopReason,
    pub usage: Usage,
    /// The provider's own id for the message.
    pub upstream_id: String,
}

/// A piece of a streamed answer.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    Delta(String),
    /// Reasoning the model did before or between its answer's pieces (Kimi's
    /// `reasoning_content`), as its size in bytes: billed as output, never shown to the
    /// caller. It counts toward the estimate of a stream that ends without usage.
    Reasoning(u64),
    /// The provider's count of the prompt's tokens, told before the answer (Anthropic's
    /// `message_start`): a stream that ends early is settled on it instead of the
    /// request's estimate, which a prompt dense in tokens exceeds. Never shown.
    Prompt(u64),
    /// The end, with the provider's usage (when it sent one).
    Done {
        stop: StopReason,
        usage: Option<Usage>,
    },
}
