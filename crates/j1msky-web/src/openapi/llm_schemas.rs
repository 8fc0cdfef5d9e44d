//! The shapes of the model endpoints (`/v1`), in OpenAI's and Anthropic's formats, as
//! far as j1msky reads and writes them: the parsers in `gateway::llm` ignore fields
//! they do not know (the SDKs send many), so request objects allow more properties.

#![allow(dead_code)] // schema-only types: read by utoipa's derive, never built

use utoipa::ToSchema;

/// Who speaks in an OpenAI-format message (`system` and `developer` become the system prompt).
#[derive(ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ChatRole {
    System,
    Developer,
    User,
    Assistant,
}

/// Who speaks in an Anthropic-format message.
#[derive(ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum MessageRole {
    User,
    Assistant,
}

/// The only content part read: text.
#[derive(ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TextType {
    Text,
}

/// A text part of a message's content.
#[derive(ToSchema)]
pub struct TextPart {
    #[schema(inline)]
    pub r#type: TextType,
    pub text: String,
}

/// Message content: a string, or an array of text parts.
#[derive(ToSchema)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<TextPart>),
}

/// One message of a chat completion request.
#[derive(ToSchema)]
pub struct ChatMessage {
    pub role: ChatRole,
    /// Absent or null: an empty message.
    pub content: Option<Content>,
}

/// `messages`: system and developer messages only make the system prompt, so at least
/// one must be a `user` or `assistant` turn (JSON Schema's `contains`, which utoipa's
/// builders lack, is added as a raw keyword).
fn chat_messages() -> utoipa::openapi::schema::Array {
    let mut keywords = utoipa::openapi::extensions::Extensions::default();
    keywords.insert(
        "contains".into(),
        serde_json::json!({"type": "object", "required": ["role"], "properties": {"role": {"enum": ["user", "assistant"]}}}),
    );
    utoipa::openapi::schema::ArrayBuilder::new()
        .items(utoipa::openapi::Ref::from_schema_name("ChatMessage"))
        .min_items(Some(1))
        .extensions(Some(keywords))
        .build()
}

/// One stop sequence, or several.
#[derive(ToSchema)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Several(Vec<String>),
}

/// `stream_options`.
#[derive(ToSchema)]
pub struct StreamOptions {
    /// Send a last chunk with the token usage.
    pub include_usage: Option<bool>,
}

/// `POST /v1/chat/completions`: OpenAI's request, as far as it is read.
#[derive(ToSchema)]
pub struct ChatCompletionRequest {
    /// A catalogue model id, or `auto` (or absent) to let the routing policy choose.
    pub model: Option<String>,
    /// At least one `user` or `assistant` message.
    #[schema(schema_with = chat_messages)]
    pub messages: Vec<ChatMessage>,
    #[schema(minimum = 1, maximum = 200_000)]
    pub max_tokens: Option<u32>,
    /// Preferred over `max_tokens` when both are given.
    #[schema(minimum = 1, maximum = 200_000)]
    pub max_completion_tokens: Option<u32>,
    pub temperature: Option<f64>,
    pub stop: Option<Stop>,
    /// Answer as server-sent events (`text/event-stream`).
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
}

/// An assistant message in a completion.
#[derive(ToSchema)]
pub struct AssistantMessage {
    pub role: String,
    pub content: String,
    #[schema(required)]
    pub refusal: Option<String>,
}

/// One choice of a completion (there is always exactly one).
#[derive(ToSchema)]
pub struct Choice {
    pub index: i64,
    pub message: AssistantMessage,
    #[schema(required)]
    pub logprobs: Option<serde_json::Value>,
    /// `stop` or `length`.
    pub finish_reason: String,
}

/// Token counts of a completion.
#[derive(ToSchema)]
pub struct CompletionUsage {
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub total_tokens: i64,
}

/// `POST /v1/chat/completions` without `stream`. Headers say which model answered
/// (`x-j1msky-model`) and what it cost (`x-j1msky-cost-micros`).
#[derive(ToSchema)]
pub struct ChatCompletion {
    pub id: String,
    pub object: String,
    pub created: i64,
    pub model: String,
    pub choices: Vec<Choice>,
    pub usage: CompletionUsage,
    #[schema(required)]
    pub system_fingerprint: Option<String>,
}

/// A model the caller's plan allows.
#[derive(ToSchema)]
pub struct Model {
    pub id: String,
    pub object: String,
    pub created: i64,
    pub owned_by: String,
}

/// `GET /v1/models`.
#[derive(ToSchema)]
pub struct ModelList {
    pub object: String,
    pub data: Vec<Model>,
}

/// An error in OpenAI's format.
#[derive(ToSchema)]
pub struct OpenAiError {
    pub error: OpenAiErrorDetail,
}

/// `type` is the class (`invalid_request_error`, `authentication_error`…), `code` ours.
#[derive(ToSchema)]
pub struct OpenAiErrorDetail {
    pub message: String,
    pub r#type: String,
    #[schema(required)]
    pub param: Option<String>,
    pub code: String,
}

/// `POST /v1/messages`: Anthropic's request, as far as it is read.
#[derive(ToSchema)]
pub struct MessagesRequest {
    /// A catalogue model id, or `auto` to let the routing policy choose.
    pub model: String,
    #[schema(minimum = 1, maximum = 200_000)]
    pub max_tokens: u32,
    #[schema(min_items = 1)]
    pub messages: Vec<AnthropicMessage>,
    pub system: Option<Content>,
    pub stop_sequences: Option<Vec<String>>,
    pub temperature: Option<f64>,
    /// Answer as server-sent events (`text/event-stream`).
    pub stream: Option<bool>,
}

/// One message of a messages request.
#[derive(ToSchema)]
pub struct AnthropicMessage {
    pub role: MessageRole,
    /// Absent or null: an empty message.
    pub content: Option<Content>,
}

/// Token counts of a message.
#[derive(ToSchema)]
pub struct MessageUsage {
    pub input_tokens: i64,
    pub output_tokens: i64,
}

/// `POST /v1/messages` without `stream`.
#[derive(ToSchema)]
pub struct Message {
    pub id: String,
    pub r#type: String,
    pub role: String,
    pub model: String,
    pub content: Vec<TextPart>,
    /// `end_turn` or `max_tokens`.
    pub stop_reason: String,
    #[schema(required)]
    pub stop_sequence: Option<String>,
    pub usage: MessageUsage,
}

/// An error in Anthropic's format.
#[derive(ToSchema)]
pub struct AnthropicError {
    pub r#type: String,
    pub error: AnthropicErrorDetail,
}

/// `type` is the class (`invalid_request_error`, `authentication_error`…).
#[derive(ToSchema)]
pub struct AnthropicErrorDetail {
    pub r#type: String,
    pub message: String,
}

/// One server-sent event of a streamed answer: `data` is a JSON chunk in the endpoint's
/// format (OpenAI's stream ends with `data: [DONE]`); Anthropic's name the `event`.
#[derive(ToSchema)]
pub struct ServerSentEvent {
    pub event: Option<String>,
    pub data: String,
    pub id: Option<String>,
    pub retry: Option<i64>,
}
